"""``rdbench data verify`` and ``rdbench data overlap``: the command logic.

``verify`` reads a dataset exactly as a run does (its ``load_table()``: the files, then the
split scheme and the exclusion) and checks it (:mod:`rdbench.commands.verify`); the
fingerprint it prints is the one every record of a run on the same dataset spec carries. It
exits 1 when an image is missing or unreadable, 0 when there are warnings only.
``overlap`` hashes the images of two datasets and writes the list that a dataset's ``exclude``
argument reads (:mod:`rdbench.data.loading.overlap`).

``DATASET`` is a dataset name (``rsicd``, ``rsitmd``, ``captions``) or key (``dataset/rsicd``)
with the component's defaults, or, for ``verify``, a suite file whose runs' dataset is checked
(``--run`` picks one when runs differ). The options are the dataset's arguments and override
the suite's; the folder options override its ``root`` (so the environment variables are not
needed here).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

from rdbench.errors import DataError

FORMAT_CHOICES = ("auto", "A", "B", "C", "D", "E")
SCHEME_CHOICES = ("auto", "native", "pir", "carve")
SUITE_SUFFIXES = (".yaml", ".yml")


def add_data_commands(sub: Any) -> None:
    """Add ``data verify`` and ``data overlap`` to the ``rdbench`` sub-parsers."""
    data = sub.add_parser("data", help="check dataset folders: verify, overlap")
    data_sub = data.add_subparsers(dest="data_command", required=True)

    p = data_sub.add_parser("verify", help="split sizes, unreadable images, shared captions, canonical test split, "
                            "and the fingerprint records will carry")
    p.add_argument("dataset", help="rsicd, rsitmd, captions, a dataset/... key, or a suite YAML file (its dataset)")
    p.add_argument("--root", help="dataset folder (default: $RDBENCH_<NAME>_ROOT, or the suite's)")
    _reader_args(p, "")
    p.add_argument("--split-scheme", dest="split_scheme", choices=SCHEME_CHOICES,
                   help="the dataset's split_scheme (default: the dataset's, auto: native with a val split, else carve)")
    p.add_argument("--val-fraction", dest="val_fraction", type=float, help="the dataset's val_fraction (default 0.2)")
    p.add_argument("--seed", type=int, help="the dataset's seed for a carved val split (default 0)")
    p.add_argument("--exclude", help="the dataset's exclude: an overlap list (rdbench data overlap)")
    p.add_argument("--set", dest="dataset_args", action="append", default=[], metavar="ARG=VALUE",
                   help="any other argument of the dataset, e.g. name=my-set or image_column=path (YAML values)")
    p.add_argument("--run", help="with a suite file: the run whose dataset is checked (needed when runs use different ones)")

    p = data_sub.add_parser("overlap", help="images shared by two datasets (identical or near-duplicate); writes an exclude list")
    p.add_argument("a", help="first dataset (rsicd, rsitmd, captions or a dataset/... key)")
    p.add_argument("b", help="second dataset")
    for side in ("a", "b"):
        p.add_argument(f"--root-{side}", help=f"folder of dataset {side.upper()}")
        p.add_argument(f"--name-{side}", help=f"name of {side.upper()} in the list (default: the dataset name)")
        _reader_args(p, f"-{side}")
    p.add_argument("--output", "-o", help="write the overlap list here (for a dataset's `exclude`)")
    p.add_argument("--hash", dest="method", choices=("dhash", "phash"), default="dhash", help="perceptual hash (default dhash)")
    p.add_argument("--threshold", type=int, default=4, help="largest Hamming distance (of 64 bits) of a near-duplicate; -1: identical only")
    p.add_argument("--max-difference", type=float, default=0.04,
                   help="largest mean grey difference (0-1) of 16x16 thumbnails to confirm a near-duplicate")


def _reader_args(p: argparse.ArgumentParser, suffix: str) -> None:
    p.add_argument(f"--format{suffix}", dest=f"format{suffix.replace('-', '_')}", choices=FORMAT_CHOICES,
                   help="annotation format (default: detected from the folder)")
    p.add_argument(f"--image-dir{suffix}", dest=f"image_dir{suffix.replace('-', '_')}", help="image folder (default: ROOT/images)")
    p.add_argument(f"--encoding{suffix}", dest=f"encoding{suffix.replace('-', '_')}", help="text encoding of B/D/E files, e.g. gb18030")


def is_suite_file(name: str) -> bool:
    return name.lower().endswith(SUITE_SUFFIXES)


def _suite_dataset(path: str, run: str | None) -> dict[str, Any]:
    """The recorded form of the dataset a suite's runs use (the same spec their records name)."""
    from rdbench.resolution.run import plan_suite

    specs: dict[str, tuple[dict[str, Any], set[str]]] = {}
    for resolved in plan_suite(path, only=[run] if run else None):
        recorded = resolved.components["dataset"].record()
        specs.setdefault(json.dumps(recorded, sort_keys=True, default=str), (recorded, set()))[1].add(resolved.plan.run)
    if not specs:
        raise DataError(f"{path}: no run to take the dataset from")
    if len(specs) > 1:
        groups = "; ".join(sorted(", ".join(sorted(runs)) for _, runs in specs.values()))
        raise DataError(f"{path}: its runs use {len(specs)} different datasets ({groups}); choose a run with --run")
    return next(iter(specs.values()))[0]


def dataset_spec(name: str, values: dict[str, Any], run: str | None = None) -> dict[str, Any]:
    """The spec of the dataset ``name`` (a name, key or suite file) with ``values`` (its
    arguments) over the component's defaults or the suite's arguments."""
    given = dict(values)
    if is_suite_file(name):
        recorded = _suite_dataset(name, run)
        return {**recorded, "init_args": {**(recorded.get("init_args") or {}), **given}}
    if run is not None:
        raise DataError("--run needs a suite file as DATASET")
    from rdbench.resolution.spec import resolve

    key = name if "/" in name else f"dataset/{name}"
    params = inspect.signature(resolve(key, "dataset", partial=True).cls.__init__).parameters
    if "name" in params and "/" not in name and "name" not in given:
        given["name"] = name
    if "root" in params and given.get("root") is None and params["root"].default is inspect.Parameter.empty:
        raise DataError(f"{key}: --root is required (this dataset reads no environment variable)")
    return {"name": key, **given}


def build_dataset(name: str, values: dict[str, Any], run: str | None = None) -> Any:
    """The dataset component, built exactly as a run builds its ``dataset`` slot."""
    from rdbench.resolution.spec import resolve

    return resolve(dataset_spec(name, values, run), "dataset").build()


def _given(values: dict[str, Any]) -> dict[str, Any]:
    """The options given on the command line (an option left out is None)."""
    return {k: v for k, v in values.items() if v is not None}


def _reader_values(args: argparse.Namespace, suffix: str = "") -> dict[str, Any]:
    return _given({"root": getattr(args, f"root{suffix}"), "format": getattr(args, f"format{suffix}"),
                   "image_dir": getattr(args, f"image_dir{suffix}"), "encoding": getattr(args, f"encoding{suffix}")})


def _read_native(dataset: Any) -> tuple[Any, str]:
    """The files' table (their own splits) and a title line, for ``overlap``."""
    if hasattr(dataset, "read_native"):
        table, found = dataset.read_native()
        return table, dataset.summary(found)
    return dataset.load_table(), _plain_title(dataset)


def _plain_title(dataset: Any) -> str:
    details = ", ".join(f"{k} {v}" for k, v in dataset.describe().items())
    return f"{getattr(dataset, 'registry_key', type(dataset).__name__)}: {details}"


def split_notes(dataset: Any) -> list[str]:
    """Lines saying how the run's splits came about: the scheme (as asked and as applied) and
    the exclusion, from what ``load_table`` recorded in ``describe()``."""
    info = dataset.describe()
    if "split_scheme" not in info:
        return []
    asked, used = getattr(dataset, "split_scheme", info["split_scheme"]), info["split_scheme"]
    scheme = used if asked == used else f"{asked} -> {used}"
    detail = {
        "native": "the files' own splits",
        "carve": f"val carved from train (val_fraction {info.get('val_fraction')}, seed {info.get('seed')})",
        "pir": f"the PIR/HarMA splits of {', '.join(info.get('splits_from', [])) or 'the format-C files'}",
    }.get(used, "")
    lines = [f"split scheme: {scheme}" + (f", {detail}" if detail else "")]
    if "exclude" in info:
        excluded = info["exclude"]
        lines.append(f"exclude: {excluded['file']}: {excluded['removed']:,} image(s) left out of train and val")
    return lines


def cmd_verify(args: argparse.Namespace) -> int:
    from rdbench.commands.verify import verify_table
    from rdbench.suite import parse_set

    values = {**_reader_values(args), **_given({"split_scheme": args.split_scheme, "val_fraction": args.val_fraction,
                                                "seed": args.seed, "exclude": args.exclude})}
    for path, value in parse_set(args.dataset_args):  # here null is a value: --set exclude=null
        values[".".join(path)] = value
    dataset = build_dataset(args.dataset, values, args.run)
    table = dataset.load_table()  # the very table a run fingerprints (rdbench.training.execute)
    found = getattr(dataset, "found", None)
    title = dataset.summary(found) if found is not None else _plain_title(dataset)
    name = getattr(dataset, "name", args.dataset.rsplit("/", 1)[-1])
    report = verify_table(table, title, getattr(dataset, "canonical_test", None), name, notes=split_notes(dataset))
    print(report.text())
    return 1 if report.errors else 0


def cmd_overlap(args: argparse.Namespace) -> int:
    from rdbench.data.loading.overlap import find_overlap, fingerprint_images, image_keys, write_overlap_list

    sides = []
    for side in ("a", "b"):
        given = getattr(args, side)
        dataset = build_dataset(given, _reader_values(args, f"_{side}"))
        name = getattr(args, f"name_{side}") or getattr(dataset, "name", given.rsplit("/", 1)[-1])
        table, title = _read_native(dataset)
        sides.append((name, table, title))
    if sides[0][0] == sides[1][0]:
        raise DataError(f"both datasets are named {sides[0][0]!r}; give them different names with --name-a/--name-b")
    prints = []
    for name, table, title in sides:
        print(f"{title}: hashing {table['image_id'].n_unique():,} images", file=sys.stderr, flush=True)
        prints.append(fingerprint_images(image_keys(table, name), args.method))
    matches = find_overlap(prints[0], prints[1], args.threshold, args.max_difference, args.method)
    for fp in prints:
        for problem in fp.unreadable:
            print(f"warning: {problem} (skipped)")
    identical = sum(m.reason.startswith("identical") for m in matches)
    for m in matches[:20]:
        print(f"{m.a.label()}  {m.b.label()}  {m.reason}")
    if len(matches) > 20:
        print(f"... {len(matches) - 20} more")
    a_ids = {m.a.image_id for m in matches}
    b_ids = {m.b.image_id for m in matches}
    print(f"{len(matches):,} pair(s): {identical:,} identical, {len(matches) - identical:,} near-duplicate; "
          f"{len(a_ids):,} image(s) of {sides[0][0]}, {len(b_ids):,} of {sides[1][0]}")
    if args.output:
        header = [f"rdbench overlap list: images shared by {sides[0][0]} and {sides[1][0]}",
                  f"{sides[0][2]}", f"{sides[1][2]}",
                  f"identical: sha256 of decoded RGB pixels; near-duplicate: {args.method} distance <= {args.threshold}, "
                  f"thumbnail difference <= {args.max_difference}",
                  "use it as `exclude: <this file>` on either dataset (its train and val lose these images)"]
        path = write_overlap_list(Path(args.output), matches, header=header)
        print(f"overlap list: {path}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    return {"verify": cmd_verify, "overlap": cmd_overlap}[args.data_command](args)
