"""Published reference rows: exact numbers, shown only for rsicd/rsitmd suites, never ranked or tested."""

from __future__ import annotations

import io
import re
from pathlib import Path

import polars as pl
import pytest
import yaml
from compare_records import make_record, write

from rdbench.errors import RdbenchError
from rdbench.results.compare import compare
from rdbench.results.references import (LINEAGES, dataset_name, load_references, reference_dir,
                                        reference_rows)

#: The published tables the reference YAML files are copied from; they ship with the project.
REFERENCES_DOC = Path(__file__).resolve().parents[2] / "docs" / "references.md"


def parse_reference_tables(text: str) -> dict[str, list[tuple[str, list[str]]]]:
    """{dataset: [(method cell, seven numbers as printed)]} from docs/references.md's two tables."""
    out: dict[str, list] = {"rsicd": [], "rsitmd": []}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) != 3 or not re.match(r"^\d", cells[1]):
            continue
        for dataset, cell in zip(("rsicd", "rsitmd"), cells[1:]):
            i2t, t2i, mr = (part.strip() for part in cell.split("\\|"))
            out[dataset].append((cells[0], i2t.split("/") + t2i.split("/") + [mr]))
    return out


def printed(ref) -> list[str]:
    keys = [f"test/{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)] + ["test/mR"]
    return [f"{ref.values[k]:.2f}" for k in keys]


def test_yaml_copies_references_md_exactly():
    assert REFERENCES_DOC.is_file(), REFERENCES_DOC
    published = parse_reference_tables(REFERENCES_DOC.read_text(encoding="utf-8"))
    for dataset, rows in published.items():
        assert len(rows) == 19, dataset  # 13 PEFT rows + 6 remote-sensing CLIP rows
        refs = reference_rows(dataset)
        assert sorted(printed(r) for r in refs) == sorted(numbers for _, numbers in rows)
        pe = {r.method: r.trainable for r in refs if r.name == "pe-rsitr"}
        for cell, _ in rows[:13]:
            method, trainable = re.match(r"^(.*) \((.*)\)$", cell).groups()
            assert pe[method] == trainable


def test_reference_files_are_well_formed():
    refs = load_references()
    assert {r.name for r in refs} == {"pe-rsitr", "georsclip", "remoteclip"}
    for ref in refs:
        assert ref.citation and ref.dataset in ("rsicd", "rsitmd")
        mean = sum(v for k, v in ref.values.items() if k != "test/mR") / 6
        # Published mR is the mean of the six recalls up to rounding, except one printed value
        # (AdaptFormer on RSITMD: the six recalls average 34.51, the table says 34.81).
        if (ref.method, ref.dataset) != ("AdaptFormer", "rsitmd"):
            assert abs(mean - ref.values["test/mR"]) <= 0.01, (ref.method, ref.dataset)
    rl14 = next(r for r in refs if r.method == "RemoteCLIP ViT-L/14" and r.dataset == "rsicd")
    assert rl14.backbone == "CLIP ViT-L/14" and rl14.trainable is None


def test_dataset_name_mapping():
    assert dataset_name("dataset/rsicd") == "rsicd" and dataset_name("dataset/rsitmd") == "rsitmd"
    assert dataset_name("dataset/synthetic-rs") is None and dataset_name(None) is None


def test_bad_reference_file_named(tmp_path):
    (tmp_path / "x.yaml").write_text("source: s\nlineage: vsepp\ndatasets:\n  rsicd:\n    - {method: m, i2t: [1, 2], t2i: [1, 2, 3], mR: 1}\n")
    with pytest.raises(RdbenchError, match=r"x.yaml: datasets.rsicd\[0\] field 'i2t' must be a list of 3"):
        load_references(tmp_path)


#: The evaluation code of each published file, as docs/references.md establishes it.
EXPECTED_LINEAGE = {"pe-rsitr": "vsepp", "georsclip": "clip_benchmark", "remoteclip": "clip_benchmark"}


def test_every_published_file_names_a_valid_lineage():
    files = sorted(reference_dir().glob("*.yaml"))
    assert {f.stem for f in files} == set(EXPECTED_LINEAGE)
    sources = {}
    for path in files:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert data["lineage"] in LINEAGES, path.name
        assert data["lineage"] == EXPECTED_LINEAGE[path.stem], path.name
        repo_path, _, function = data["lineage_source"].partition(": ")
        assert repo_path.count("/") >= 2 and function, data["lineage_source"]  # owner/repo/path: fn
        sources[path.stem] = data["lineage_source"]
    for ref in load_references():
        assert ref.lineage == EXPECTED_LINEAGE[ref.name], (ref.name, ref.method)
        assert ref.lineage_source == sources[ref.name]


def test_references_md_lists_each_file_lineage():
    text = REFERENCES_DOC.read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\| `([\w-]+)\.yaml` \| `(\w+)` \|", text, re.MULTILINE))
    assert listed == EXPECTED_LINEAGE


def test_lineages_are_recorded_rules():
    evaluation = pytest.importorskip("rdbench.evaluation")
    rules = getattr(evaluation, "TIE_RULES", None)
    if rules is None:
        pytest.skip("rdbench.evaluation.TIE_RULES not defined yet")
    assert set(LINEAGES) <= set(rules)


ROW = "    - {method: m, i2t: [1, 2, 3], t2i: [1, 2, 3], mR: 2}\n"


@pytest.mark.parametrize("line, message", [
    ("lineage: albef\n", r"x\.yaml: unknown lineage 'albef' \(known: vsepp, pir, clip_benchmark\)"),
    ("lineage: [vsepp]\n", r"x\.yaml: unknown lineage"),
    ("", r"x\.yaml: needs 'lineage'.*vsepp, pir, clip_benchmark"),
])
def test_unknown_or_missing_lineage_rejected_naming_the_file(tmp_path, line, message):
    (tmp_path / "x.yaml").write_text(f"source: s\n{line}datasets:\n  rsicd:\n{ROW}")
    with pytest.raises(RdbenchError, match=message) as info:
        load_references(tmp_path)
    assert len(str(info.value).splitlines()) == 1 and str(tmp_path / "x.yaml") in str(info.value)


def test_row_lineage_overrides_the_file(tmp_path):
    (tmp_path / "x.yaml").write_text(
        "source: s\nlineage: vsepp\nlineage_source: 'o/r/f.py: g'\ndatasets:\n  rsicd:\n" + ROW
        + "    - {method: n, lineage: pir, i2t: [1, 2, 3], t2i: [1, 2, 3], mR: 2}\n")
    refs = {r.method: r for r in load_references(tmp_path)}
    assert (refs["m"].lineage, refs["n"].lineage) == ("vsepp", "pir")
    assert refs["n"].lineage_source == "o/r/f.py: g"
    bad = tmp_path / "bad"  # another folder: loaded folders are cached
    bad.mkdir()
    (bad / "x.yaml").write_text("source: s\nlineage: pir\ndatasets:\n  rsicd:\n"
                                "    - {method: n, lineage: x, i2t: [1, 2, 3], t2i: [1, 2, 3], mR: 2}\n")
    with pytest.raises(RdbenchError, match=r"x\.yaml: datasets\.rsicd\[0\] unknown lineage 'x'"):
        load_references(bad)


def suite_on(root, dataset, suite="s"):
    for seed in (0, 1):
        write(root, make_record(suite, "ours", 1, seed, base=50.0 + seed, dataset=dataset,
                                trainable=160_000))
    return root


def test_synthetic_suite_gets_a_note_and_no_rows(tmp_path):
    result = compare(suite_on(tmp_path, "dataset/synthetic-rs"), references=True)
    assert result.notes == ["note: suite 's' uses dataset/synthetic-rs; published rows exist only "
                            "for dataset/rsicd, dataset/rsitmd"]
    assert "†" not in result.text and "Published" not in result.text
    assert len([ln for ln in result.text.splitlines() if ln.startswith("ours ")]) == 1


def test_rsicd_suite_gets_exact_rsicd_rows(tmp_path):
    result = compare(suite_on(tmp_path, "dataset/rsicd"), references=True, baseline="ours")
    assert result.notes == []
    lines = result.text.splitlines()
    hmmc = next(ln for ln in lines if ln.startswith("MRS-Adapter + HMMC‡"))
    assert hmmc.split()[-8:] == ["0.16M", "14.13", "31.51", "44.78", "11.63", "33.92", "50.73", "31.12"]
    zero = next(ln for ln in lines if ln.startswith("Zero-shot CLIP‡"))
    assert zero.split()[-7:] == ["6.77", "15.37", "23.15", "5.01", "15.75", "24.21", "15.04"]
    geo = next(ln for ln in lines if ln.startswith("GeoRSCLIP-FT, tuned on RSICD+RSITMD (RET-2)†"))
    assert geo.split()[-7:] == ["21.13", "41.72", "55.63", "15.59", "41.19", "57.99", "38.87"]
    assert "23.67" not in result.text  # an RSITMD number
    assert sum("†" in ln or "‡" in ln or "§" in ln for ln in lines) == 19 + 3  # rows + footnotes
    assert "‡ Published, not rerun: Yuan, Zhan and Xiong" in result.text
    assert "§ Published, not rerun: Liu et al., RemoteCLIP" in result.text
    # The published rows are not part of the statistics: no seeds, no deltas, no tests.
    assert "Test for" not in result.text and "±" not in hmmc
    df = pl.read_csv(io.StringIO(compare(tmp_path, fmt="csv", references=True, baseline="ours").text))
    published = df.filter(pl.col("published"))
    assert published.height == 19 and published["seeds"].null_count() == 19
    assert published["test/mR_delta"].null_count() == 19
    hm = published.filter(pl.col("run") == "MRS-Adapter + HMMC‡").row(0, named=True)
    assert (hm["test/mR_mean"], hm["source"], hm["trainable"]) == (31.12, "pe-rsitr", "0.16M")


def test_selected_sources_and_rsitmd(tmp_path):
    result = compare(suite_on(tmp_path, "dataset/rsitmd"), references=["remoteclip"])
    marked = [ln for ln in result.text.splitlines() if "†" in ln]
    assert [ln.split("†")[0] for ln in marked[:2]] == ["RemoteCLIP ViT-B/32", "RemoteCLIP ViT-L/14"]
    assert marked[0].split()[-7:] == ["27.88", "50.66", "65.71", "22.17", "56.46", "73.41", "49.38"]
    with pytest.raises(RdbenchError, match="--references: unknown source 'nope'.*pe-rsitr"):
        compare(tmp_path, references=["nope"])


def test_mixed_dataset_suite_labels_each_dataset(tmp_path):
    suite_on(tmp_path, "dataset/rsicd")
    write(tmp_path, make_record("s", "ours", 1, 5, base=40.0, dataset="dataset/rsitmd"), name="ours-b")
    result = compare(tmp_path, references=["pe-rsitr"])
    assert "Adapter [rsicd]†" in result.text and "Adapter [rsitmd]†" in result.text
    assert any("2 separate rows" in w for w in result.warnings)
