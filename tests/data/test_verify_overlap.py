"""`rdbench data verify` and `rdbench data overlap` through the real command line."""

from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest
from datatrees import content, image_bytes, write_a, write_b
from PIL import Image

from rdbench.cli import main
from rdbench.data.datasets import RSICDDataset
from rdbench.data.loading.images import dhash, hamming, open_rgb, phash, pixel_sha256
from rdbench.data.table import table_fingerprint
from rdbench.errors import DataError


def test_verify_names_every_broken_file_and_fails(tmp_path, capsys):
    write_b(tmp_path, content(broken=True))
    assert main(["data", "verify", "rsicd", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    missing = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(missing) == 2
    assert any("forest_92.jpg: image file not found (train image 'forest_92.jpg')" in line for line in missing)
    assert any("airport_93.jpg: image cannot be decoded" in line for line in missing)
    assert "2 error(s)" in out


def test_verify_clean_tree_reports_counts_quirks_and_fingerprint(tmp_path, capsys):
    write_a(tmp_path, content())
    assert main(["data", "verify", "rsicd", "--root", str(tmp_path), "--format", "A", "--split-scheme", "native"]) == 0
    out = capsys.readouterr().out
    assert "format A (Karpathy-style JSON: dataset_rsicd.json)" in out
    assert "split scheme: native, the files' own splits" in out
    assert "no val split (a run selects its checkpoint on val" in out
    train = next(line.split() for line in out.splitlines() if line.startswith("train "))
    assert train[1:6] == ["22", "110", "5", "59", "5"]  # images, captions, per image, distinct, classes
    assert 'captions shared across images (all): ' in out and '"This is a forest." x' in out
    assert "warning: test split has 11 images / 55 captions; the canonical RSICD test split has 1,093 / 5,465" in out
    fingerprint = table_fingerprint(RSICDDataset(root=str(tmp_path), split_scheme="native").load_table())["sha256"]
    assert f"fingerprint: {fingerprint}" in out
    assert "0 error(s), 1 warning(s); the data is usable" in out


def printed_fingerprint(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith("fingerprint: ")]
    assert len(lines) == 1, out
    return lines[0].split()[1]


class _Backbone:
    def provenance(self):
        return {}


def recorded_fingerprint(run) -> str:
    """The fingerprint a record of ``run`` carries: its dataset slot built and read as
    ``assemble`` does, and the provenance written by ``execute``'s own function."""
    from types import SimpleNamespace

    from rdbench.results.record import Record
    from rdbench.training.execute import _provenance

    dataset = run.components["dataset"].build()
    record = Record(suite=run.plan.suite, run=run.plan.run, run_index=0, seed=run.seed, status="running",
                    started_at="", provenance={})
    _provenance(record, run, SimpleNamespace(backbone=_Backbone(), dataset=dataset, table=dataset.load_table()))
    return record.provenance["dataset"]["fingerprint"]


SUITE = """\
suite: verify-fp
defaults:
  backbone: {{name: backbone/tiny-rs}}
  dataset: {dataset}
runs:
  zero-shot: {{}}
{more}"""


def write_suite(path, dataset: str, more: str = ""):
    path.write_text(SUITE.format(dataset=dataset, more=more))
    return path


def test_verify_prints_the_fingerprint_records_carry(tmp_path, capsys, monkeypatch):
    # The user's case: RSITMD in a layout without a val split (format B here). A run's dataset
    # (split_scheme auto, the paper suites' setting) carves val from train; verify used to read
    # the files' native splits, so its fingerprint was not the one the records carried.
    from rdbench.resolution.run import plan_suite

    root = write_b(tmp_path / "rsitmd", content())
    monkeypatch.setenv("RDBENCH_RSITMD_ROOT", str(root))
    suite = write_suite(tmp_path / "suite.yaml", "{name: dataset/rsitmd, root: null, split_scheme: auto}")
    run = plan_suite(suite)[0]
    recorded = recorded_fingerprint(run)

    assert main(["data", "verify", "rsitmd"]) == 0  # root from $RDBENCH_RSITMD_ROOT, as the run
    out = capsys.readouterr().out
    assert printed_fingerprint(out) == recorded
    assert "split scheme: auto -> carve, val carved from train (val_fraction 0.2, seed 0)" in out
    assert next(line.split() for line in out.splitlines() if line.startswith("val "))[1] == "4"
    assert main(["data", "verify", "rsitmd", "--root", str(root)]) == 0
    assert printed_fingerprint(capsys.readouterr().out) == recorded
    assert main(["data", "verify", str(suite)]) == 0  # the suite's own dataset spec
    assert printed_fingerprint(capsys.readouterr().out) == recorded
    # What verify printed before: the table with the files' own splits, another fingerprint.
    native = table_fingerprint(RSICDDataset(root=str(root), split_scheme="native").load_table())["sha256"]
    assert native != recorded
    assert main(["data", "verify", "rsitmd", "--split-scheme", "native"]) == 0
    assert printed_fingerprint(capsys.readouterr().out) == native


def test_verify_takes_every_argument_that_changes_the_table(tmp_path, capsys):
    from rdbench.resolution.run import plan_suite

    root = write_a(tmp_path / "rsicd", content())
    listing = tmp_path / "overlap.tsv"
    listing.write_text("# dataset\timage_id\tsplit\treason\tother\n"
                       "rsicd\tbeach_5.png\ttrain\tidentical pixels\trsitmd:test:x_1.tif\n")
    spec = f"{{name: dataset/rsicd, root: {root}, split_scheme: carve, val_fraction: 0.3, seed: 7, exclude: {listing}}}"
    suite = write_suite(tmp_path / "suite.yaml", spec)
    recorded = recorded_fingerprint(plan_suite(suite)[0])
    assert main(["data", "verify", "rsicd", "--root", str(root), "--split-scheme", "carve", "--val-fraction", "0.3",
                 "--seed", "7", "--exclude", str(listing)]) == 0
    out = capsys.readouterr().out
    assert printed_fingerprint(out) == recorded
    assert f"exclude: {listing}: 1 image(s) left out of train and val" in out
    assert main(["data", "verify", str(suite)]) == 0
    assert printed_fingerprint(capsys.readouterr().out) == recorded
    # Options override the suite's arguments; each changes the table, hence the fingerprint.
    others = set()
    for extra in (["--seed", "8"], ["--val-fraction", "0.2"], ["--set", "exclude=null"], ["--split-scheme", "native"]):
        assert main(["data", "verify", str(suite), *extra]) == 0
        others.add(printed_fingerprint(capsys.readouterr().out))
    assert recorded not in others and len(others) == 4


def test_verify_of_a_suite_whose_runs_differ_needs_a_run(tmp_path, capsys):
    from rdbench.resolution.run import plan_suite

    root = write_b(tmp_path / "rsicd", content(train_per_class=2))
    more = "  other-seed:\n    dataset: {name: dataset/rsicd, root: " + str(root) + ", seed: 3}\n"
    suite = write_suite(tmp_path / "suite.yaml", f"{{name: dataset/rsicd, root: {root}}}", more)
    assert main(["data", "verify", str(suite)]) == 2
    assert "runs use 2 different datasets (other-seed; zero-shot); choose a run with --run" in capsys.readouterr().err
    runs = {run.plan.run: run for run in plan_suite(suite)}
    for name in ("zero-shot", "other-seed"):
        assert main(["data", "verify", str(suite), "--run", name]) == 0
        assert printed_fingerprint(capsys.readouterr().out) == recorded_fingerprint(runs[name])


def test_verify_missing_root_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RDBENCH_RSITMD_ROOT", raising=False)
    assert main(["data", "verify", "rsitmd"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rdbench: dataset/rsitmd: no dataset root") and "\n" not in err


def test_images_of_any_mode_decode_to_rgb(tmp_path):
    items = [i for i in content() if i.filename in ("beach_90.png", "port_91.png", "airport_1.tif")]
    for item in items:
        (tmp_path / item.filename).write_bytes(image_bytes(item))
        assert open_rgb(tmp_path / item.filename).mode == "RGB"
    (tmp_path / "cut.png").write_bytes(image_bytes(next(i for i in items if i.mode == "P"))[:40])
    with pytest.raises(DataError, match=r"cut.png: image cannot be decoded"):
        open_rgb(tmp_path / "cut.png")


def reencode(src: bytes, fmt: str, size: int | None = None, quality: int = 95) -> bytes:
    img = Image.open(io.BytesIO(src)).convert("RGB")
    if size:
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    img.save(out, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return out.getvalue()


def test_hashes_match_reencodings_not_other_images():
    items = content(size=64)[:8]
    first = next(i for i in items if i.filename.endswith(".png"))
    png = image_bytes(first)
    a, tif = open_rgb(io.BytesIO(png)), open_rgb(io.BytesIO(reencode(png, "TIFF")))
    small = open_rgb(io.BytesIO(reencode(png, "JPEG", size=48, quality=85)))
    assert pixel_sha256(a) == pixel_sha256(tif) != pixel_sha256(small)
    others = [open_rgb(io.BytesIO(image_bytes(i))) for i in items if i is not first]
    for fn in (dhash, phash):
        near = hamming(np.array([fn(a)], np.uint64), np.array([fn(small)] + [fn(o) for o in others], np.uint64))[0]
        assert near[0] <= 4 and near[1:].min() > 8, (fn.__name__, near)


def test_overlap_finds_shared_images_and_its_list_excludes_them(tmp_path, capsys):
    items = content(train_per_class=2, size=64)
    rsicd = write_a(tmp_path / "rsicd", items)
    # RSITMD-like: two RSICD train images again, one as a lossless TIFF, one resized to a JPEG,
    # among images of its own.
    own = content(train_per_class=1, size=64)
    for item in own:
        item.seed += 1000
        item.filename = "t" + item.filename
    rsitmd = write_a(tmp_path / "rsitmd", own, name="rsitmd")
    src = {i.filename: image_bytes(i) for i in items}
    (rsitmd / "images" / "tbeach_3.png").write_bytes(reencode(src["beach_3.png"], "PNG"))
    (rsitmd / "images" / "tport_7.jpg").write_bytes(reencode(src["port_7.png"], "JPEG", size=48, quality=85))
    # ... listed in its annotations as test images:
    from rdbench.data.formats.karpathy import write_karpathy_json

    extra = [{"filename": n, "split": "test", "captions": ["A copy."]} for n in ("tbeach_3.png", "tport_7.jpg")]
    write_karpathy_json(rsitmd / "dataset_rsitmd.json",
                        [{"filename": i.filename, "split": i.split, "captions": i.captions} for i in own] + extra)

    listing = tmp_path / "overlap.tsv"
    assert main(["data", "overlap", "rsicd", "rsitmd", "--root-a", str(rsicd), "--root-b", str(rsitmd),
                 "--output", str(listing)]) == 0
    out = capsys.readouterr().out
    assert "rsicd:train:beach_3.png  rsitmd:test:tbeach_3.png  identical pixels" in out
    assert "rsicd:train:port_7.png  rsitmd:test:tport_7.jpg  near-duplicate (dhash distance" in out
    assert "2 pair(s): 1 identical, 1 near-duplicate" in out
    lines = [line.split("\t") for line in listing.read_text().splitlines() if not line.startswith("#")]
    assert sorted((d, i) for d, i, *_ in lines) == [("rsicd", "beach_3.png"), ("rsicd", "port_7.png"),
                                                    ("rsitmd", "tbeach_3.png"), ("rsitmd", "tport_7.jpg")]

    table = RSICDDataset(root=str(rsicd), exclude=str(listing)).load_table()
    kept = set(table.filter(pl.col("split") != "test")["image_id"].to_list())
    assert not kept & {"beach_3.png", "port_7.png"} and len(kept) == 12 - 2  # 10 train, 00017, beach_90, less 2


@pytest.mark.parametrize("fmt", ["A", "D"])
def test_an_image_reference_leaving_the_image_folder_is_one_error_line(tmp_path, capsys, fmt):
    """The attack: an annotation naming ``../../../../etc/passwd`` made `data verify` and the
    loaders read outside the dataset root. Relative references must stay in the image folder
    (Karpathy filenames, absolute ones included); the file that names it is in the line."""
    import json

    from datatrees import write_d

    if fmt == "A":
        write_a(tmp_path, content())
        path = tmp_path / "dataset_rsicd.json"
        data = json.loads(path.read_text())
        data["images"][0]["filename"] = "../../../../etc/passwd"
        path.write_text(json.dumps(data))
    else:
        write_d(tmp_path, content(), encoding="utf-8")
        path = tmp_path / "rsicd_train.csv"
        lines = path.read_text(encoding="utf-8").splitlines()
        lines[1] = "../../../../etc/passwd," + lines[1].split(",", 1)[1]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["data", "verify", "rsicd", "--root", str(tmp_path), "--format", fmt]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "'../../../../etc/passwd' leads outside the image folder" in err[0]
