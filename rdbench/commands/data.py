"""``rdbench data verify`` and ``rdbench data overlap``: the command logic.

``verify`` reads a dataset folder with its native splits and checks it
(:mod:`rdbench.commands.verify`); it exits 1 when an image is missing or unreadable, 0 when
there are warnings only.
``overlap`` hashes the images of two datasets and writes the list that a dataset's ``exclude``
argument reads (:mod:`rdbench.data.loading.overlap`).

``DATASET`` is a dataset name (``rsicd``, ``rsitmd``, ``captions``) or key (``dataset/rsicd``);
the folder arguments override its ``root`` (so the environment variables are not needed here).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

from rdbench.errors import DataError

FORMAT_CHOICES = ("auto", "A", "B", "C", "D", "E")


def add_data_commands(sub: Any) -> None:
    """Add ``data verify`` and ``data overlap`` to the ``rdbench`` sub-parsers."""
    data = sub.add_parser("data", help="check dataset folders: verify, overlap")
    data_sub = data.add_subparsers(dest="data_command", required=True)

    p = data_sub.add_parser("verify", help="split sizes, unreadable images, shared captions, canonical test split, fingerprint")
    p.add_argument("dataset", help="rsicd, rsitmd, captions (or a dataset/... key)")
    p.add_argument("--root", help="dataset folder (default: $RDBENCH_<NAME>_ROOT)")
    _reader_args(p, "")

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
    p.add_argument(f"--format{suffix}", dest=f"format{suffix.replace('-', '_')}", choices=FORMAT_CHOICES, default="auto",
                   help="annotation format (default: detected from the folder)")
    p.add_argument(f"--image-dir{suffix}", dest=f"image_dir{suffix.replace('-', '_')}", help="image folder (default: ROOT/images)")
    p.add_argument(f"--encoding{suffix}", dest=f"encoding{suffix.replace('-', '_')}", help="text encoding of B/D/E files, e.g. gb18030")


def build_dataset(name: str, root: str | None, fmt: str, image_dir: str | None, encoding: str | None) -> Any:
    """A dataset component with its native splits, built from command-line values (only those
    its signature takes: the synthetic dataset has no ``format``)."""
    from rdbench.resolution.spec import resolve

    key = name if "/" in name else f"dataset/{name}"
    params = inspect.signature(resolve(key, "dataset", partial=True).cls.__init__).parameters
    values = {"root": root, "format": fmt, "image_dir": image_dir, "encoding": encoding, "split_scheme": "native"}
    args = {k: v for k, v in values.items() if v is not None and k in params}
    if "name" in params and "/" not in name:
        args["name"] = name
    if "root" in params and root is None and params["root"].default is inspect.Parameter.empty:
        raise DataError(f"{key}: --root is required (this dataset reads no environment variable)")
    return resolve({"name": key, **args}, "dataset").build()


def _read(dataset: Any) -> tuple[Any, str]:
    """The native table and a title line; a plain dataset (synthetic) has no folder summary."""
    if hasattr(dataset, "read_native"):
        table, found = dataset.read_native()
        return table, dataset.summary(found)
    table = dataset.load_table()
    details = ", ".join(f"{k} {v}" for k, v in dataset.describe().items())
    return table, f"{getattr(dataset, 'registry_key', type(dataset).__name__)}: {details}"


def cmd_verify(args: argparse.Namespace) -> int:
    from rdbench.commands.verify import verify_table

    dataset = build_dataset(args.dataset, args.root, args.format, args.image_dir, args.encoding)
    table, title = _read(dataset)
    name = getattr(dataset, "name", args.dataset.rsplit("/", 1)[-1])
    report = verify_table(table, title, getattr(dataset, "canonical_test", None), name)
    print(report.text())
    return 1 if report.errors else 0


def cmd_overlap(args: argparse.Namespace) -> int:
    from rdbench.data.loading.overlap import find_overlap, fingerprint_images, image_keys, write_overlap_list

    sides = []
    for side in ("a", "b"):
        given = getattr(args, side)
        dataset = build_dataset(given, getattr(args, f"root_{side}"), getattr(args, f"format_{side}"),
                                getattr(args, f"image_dir_{side}"), getattr(args, f"encoding_{side}"))
        name = getattr(args, f"name_{side}") or getattr(dataset, "name", given.rsplit("/", 1)[-1])
        table, title = _read(dataset)
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
