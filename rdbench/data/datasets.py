"""Datasets (kind ``dataset``): where a caption table comes from.

Contract of a ``dataset/*`` component: ``load_table()`` returns the caption table of
:mod:`rdbench.data.table` (one row per caption: image id, path, caption, split, label, source);
``describe()`` returns what a record needs to identify it beyond the table's fingerprint.

The components: ``dataset/synthetic-rs`` (the embedded dataset, generated on any machine), and
the datasets read from a folder the user points to: ``dataset/rsicd``, ``dataset/rsitmd``,
``dataset/captions``, and ``dataset/transfer`` (train on one, test on another).

Neither RSICD nor RSITMD can be downloaded by a program (docs/datasets.md, "The two datasets"), so the folder
components only read: the annotations in any of the five formats
(:mod:`rdbench.data.formats.layout`), the split scheme (:mod:`rdbench.data.formats.splits`) and,
optionally, an overlap list of images to keep out of train and val. ``root: null`` (the
default) reads ``$RDBENCH_RSICD_ROOT`` or ``$RDBENCH_RSITMD_ROOT``, so one suite file serves
every machine. Nothing is checked when the component is built: ``rdbench validate`` must pass
on a machine without the data, and :meth:`FolderDataset.load_table` says exactly which folder or
file is missing and what layout it expects.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import polars as pl
from jsonargparse.typing import PositiveInt

from rdbench.data.formats.csvfiles import CsvOptions
from rdbench.data.formats.layout import Annotations, expected_layout, find_annotations, format_summary, read_annotations
from rdbench.data.formats.splits import DEFAULT_VAL_FRACTION, apply_splits, carve_validation, exclude_images, has_split
from rdbench.data.synthetic.scenes import check_detail
from rdbench.data.table import make_table
from rdbench.errors import DataError
from rdbench.registry import REGISTRY, register

class Dataset(abc.ABC):
    """Base class of datasets; see the module docstring for the contract."""

    #: Path arguments that must exist before a run (``rdbench.resolution.inputs`` checks them
    #: without building anything); a folder the dataset writes itself is not one of them.
    #: None: the usual names (root, image_dir, exclude) are checked.
    input_paths: tuple[str, ...] | None = None

    @abc.abstractmethod
    def load_table(self) -> pl.DataFrame:  # pragma: no cover - contract
        """Contract method: every registered component overrides it."""

    def describe(self) -> dict[str, Any]:
        return {}


REGISTRY.define_kind("dataset", Dataset)


@register("dataset/synthetic-rs", example={"train": 8, "val": 4, "test": 4, "image_size": 32})
class SyntheticRSDataset(Dataset):
    """The embedded dataset (docs/datasets.md, "The embedded synthetic dataset"): synthetic aerial scenes with RSICD-style captions.

    Generated deterministically from ``seed`` (the data's own seed, not the run's: every seed of
    a suite is evaluated on the same test split), written to disk in format A (Karpathy-style
    JSON with PNG images whose names carry the scene class) and read back by the real format-A
    reader, so that the embedded default exercises the same path as RSICD. The files are cached
    under ``$RDBENCH_CACHE/data`` unless ``root`` is given.

    Args:
        root: Folder the generated images and format-A annotation file are written to and read
            back from. Null (the default) caches them under ``$RDBENCH_CACHE/data``, in a folder
            named from a hash of the other arguments.
        train: Number of images in the train split (five captions each).
        val: Number of images in the val split (five captions each). 452 by default, as
            RSITMD's test split: model selection on 100 images moved by whole points per image.
        test: Number of images in the test split (five captions each). 452 by default (2,260
            captions), the size of RSITMD's test split, so that one image moves I2T R@1 by 0.22
            points, not 1 (docs/protocol.md, "Geometry").
        image_size: Side of the square generated images, in pixels (at least 16).
        seed: Seed of the generator: the data's own seed, not the run's, so every seed of a
            suite sees the same images and captions. The same arguments give the same files.
        detail: The premise dial (docs/premise.md), from 0 to 1: the probability that a caption
            after an image's first (and not a repeat) names fine-grained attributes only the
            image resolves (count, colour, size, position, orientation) rather than the scene
            alone. Null (the default) is the embedded mix, 0.80 of fresh captions fine-grained;
            only the captions depend on it, the images stay the same.
    """

    input_paths = ()  # root is where it writes the generated files

    def __init__(self, root: str | None = None, train: PositiveInt = 400, val: PositiveInt = 452, test: PositiveInt = 452, image_size: PositiveInt = 64, seed: int = 0,
                 detail: float | None = None):
        for name, n in (("train", train), ("val", val), ("test", test)):
            if n < 1:
                raise ValueError(f"{name} must be at least 1 image")
        self.splits = {"train": train, "val": val, "test": test}
        check_detail(detail)
        self.image_size, self.seed, self.detail = image_size, seed, detail
        self.root = Path(root) if root else None

    def _root(self) -> Path:
        if self.root is not None:
            return self.root
        from rdbench.backbones.tiny_rs import cache_dir
        from rdbench.data.synthetic import generator as synthetic

        key = json.dumps({"splits": self.splits, "size": self.image_size, "seed": self.seed,
                          "generator": getattr(synthetic, "GENERATOR_VERSION", 1),
                          # the embedded mix keeps the folder it always had
                          **({} if self.detail is None else {"detail": float(self.detail)})}, sort_keys=True)
        return cache_dir() / "data" / f"synthetic-rs-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def load_table(self) -> pl.DataFrame:
        from rdbench.data.formats.karpathy import read_karpathy_json
        from rdbench.data.synthetic.generator import write_synthetic_dataset

        json_path = write_synthetic_dataset(self._root(), splits=self.splits, image_size=self.image_size, seed=self.seed,
                                            detail=self.detail)
        return read_karpathy_json(json_path)

    def describe(self) -> dict[str, Any]:
        return {"root": str(self._root()), "format": "A"}


# -- datasets read from a folder ---------------------------------------------------------------
Format = Literal["auto", "A", "B", "C", "D", "E"]
Scheme = Literal["auto", "native", "pir", "carve"]


class FolderDataset(Dataset):
    """A caption dataset in a folder, in any of the five formats; see the module docstring.

    ``format`` "auto" recognises the layout (A, C, B, then CSV). ``split_scheme``: "native"
    keeps the files' splits, "pir" takes the PIR/HarMA splits from format-C files in the same
    folder, "carve" moves ``val_fraction`` of train to val (class-stratified, seeded by
    ``seed``), "auto" is native when the files have a val split and carve otherwise.
    ``exclude`` is an overlap list (``rdbench data overlap``): those images leave train and val.
    ``encoding`` applies to text annotations (B, D, E), e.g. gb18030.

    Args:
        root: Folder holding the annotation files (and, by default, the images). Null reads the
            dataset's environment variable (``$RDBENCH_RSICD_ROOT``, ``$RDBENCH_RSITMD_ROOT``);
            without one, loading fails with a one-line error.
        format: Annotation format: "A" (Karpathy-style JSON), "B" (precomp text files), "C" (PIR
            JSON record lists), "D" (``filename,title`` CSV) or "E" (open_clip CSV). "auto"
            recognises the layout from the files in the root, trying A, C, B, then the CSV
            formats (D when every CSV has the ``filename,title`` header, else E).
        split_scheme: Which images are train, val and test; the test split is never changed.
            "native" keeps the files' own splits; "pir" takes the PIR/HarMA splits from format-C
            files ``<name>_{train,val,test}.json`` in the same root; "carve" moves
            ``val_fraction`` of the train images to val; "auto" is native when the files have a
            val split and carve otherwise.
        image_dir: Folder the images are looked up in. Null uses ``ROOT/images`` when it exists,
            else the root.
        val_fraction: Share of the train images moved to val when the split scheme carves
            (between 0 and 1 exclusive; 0.2 is the PIR/HarMA share), stratified by scene class.
        seed: Seed of the carved validation split: the data's seed, not the run's, so every seed
            of a suite selects on the same val split.
        exclude: Path to an overlap list written by ``rdbench data overlap``: the images it lists
            for this dataset leave train and val (test is never changed), and the record notes
            the list's hash and how many images went. A list naming only other datasets, or
            images this dataset does not have, is an error. Null excludes nothing.
        encoding: Text encoding of the text annotations (formats B, D and E), e.g. "gb18030" for
            RSICD's GeoRSCLIP CSV. Null reads UTF-8 (a byte-order mark is dropped).
    """

    name = "captions"
    env_var: str | None = None  # read when ``root`` is null
    input_paths = ("root", "image_dir", "exclude")
    canonical_test: tuple[int, int] | None = None  # (images, captions) of the published test split

    def __init__(
        self,
        root: str | None = None,
        format: Format = "auto",
        split_scheme: Scheme = "auto",
        image_dir: str | None = None,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        seed: int = 0,
        exclude: str | None = None,
        encoding: str | None = None,
    ):
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        self.root, self.format, self.split_scheme = root, format, split_scheme
        self.image_dir, self.val_fraction, self.seed = image_dir, val_fraction, seed
        self.exclude, self.encoding = exclude, encoding
        self._described: dict[str, Any] = {}
        self.found: Annotations | None = None  # the files the last load_table read

    def csv_options(self) -> CsvOptions:
        return CsvOptions(encoding=self.encoding)

    def resolve_root(self) -> Path:
        """The root folder: ``root``, else the environment variable, else a DataError."""
        if self.root:
            return Path(self.root).expanduser()
        value = os.environ.get(self.env_var or "", "") if self.env_var else ""
        if value:
            return Path(value).expanduser()
        key = getattr(self, "registry_key", f"dataset/{self.name}")
        where = f"pass root: DIR or set ${self.env_var}" if self.env_var else "pass root: DIR"
        raise DataError(f"{key}: no dataset root ({where}; the folder holds annotations in one of the "
                        f"formats {expected_layout(self.name)})")

    def find(self) -> Annotations:
        return find_annotations(self.resolve_root(), self.format, self.name)

    def read_native(self) -> tuple[pl.DataFrame, Annotations]:
        """The table with the files' own splits, and which files it came from."""
        found = self.find()
        return read_annotations(found, self.image_dir, self.csv_options()), found

    def load_table(self) -> pl.DataFrame:
        """The table a run uses: the files' table with the split scheme and the exclusion
        applied. Its fingerprint is the one records carry and ``rdbench data verify`` prints."""
        table, found = self.read_native()
        self.found = found
        scheme = self.split_scheme
        if scheme == "auto":
            scheme = "native" if has_split(table, "val") else "carve"
        info: dict[str, Any] = {"name": self.name, "root": str(found.root), "format": found.format,
                                "annotations": found.names(), "split_scheme": scheme}
        if scheme == "pir" and found.format != "C":
            try:
                pir = find_annotations(found.root, "C", self.name)
            except DataError:
                raise DataError(f"{found.root}: split_scheme 'pir' needs the PIR/HarMA files "
                                f"({self.name}_train.json, {self.name}_val.json, {self.name}_test.json) "
                                "beside the annotations") from None
            table = apply_splits(table, read_annotations(pir, self.image_dir), ", ".join(pir.names()))
            info["splits_from"] = pir.names()
        elif scheme == "carve":
            table = carve_validation(table, self.val_fraction, self.seed)
            info.update(val_fraction=self.val_fraction, seed=self.seed)
        if self.exclude:
            from rdbench.data.loading.overlap import excluded_ids, file_sha256

            table, removed = exclude_images(table, excluded_ids(self.exclude, self.name), Path(self.exclude))
            info["exclude"] = {"file": str(self.exclude), "sha256": file_sha256(self.exclude), "removed": len(removed)}
        self._described = info
        return table

    def describe(self) -> dict[str, Any]:
        return dict(self._described) or {"name": self.name, "root": self.root, "format": self.format}

    def summary(self, found: Annotations) -> str:
        return f"{self.name}: {found.root}, {format_summary(found)}"


@register("dataset/rsicd", example={"root": "{example_root}"})
class RSICDDataset(FolderDataset):
    """RSICD (Lu et al., 2018): 10,921 images, 5 captions each, 30 scene classes, from a folder.

    ``root`` null reads ``$RDBENCH_RSICD_ROOT``. Any of the five formats; the test split
    (1,093 images, 5,465 captions) is the same in all, and ``rdbench data verify rsicd`` checks it.

    Args:
        root: Folder holding RSICD's annotation files (and, by default, its images). Null reads
            ``$RDBENCH_RSICD_ROOT``; without it, loading fails with a one-line error.
    """

    name = "rsicd"
    env_var = "RDBENCH_RSICD_ROOT"
    canonical_test = (1093, 5465)


@register("dataset/rsitmd", example={"root": "{example_root}"})
class RSITMDDataset(FolderDataset):
    """RSITMD (Yuan et al., 2022): 4,743 images, 5 captions each, 32 scene classes, from a folder.

    ``root`` null reads ``$RDBENCH_RSITMD_ROOT``. The original release has no val split, so the
    default scheme carves one (20 % of train, stratified), or "pir" takes PIR's (856 images).

    Args:
        root: Folder holding RSITMD's annotation files (and, by default, its images). Null reads
            ``$RDBENCH_RSITMD_ROOT``; without it, loading fails with a one-line error.
    """

    name = "rsitmd"
    env_var = "RDBENCH_RSITMD_ROOT"
    canonical_test = (452, 2260)


@register("dataset/captions", example={"root": "{example_root}"})
class CaptionsDataset(FolderDataset):
    """Any other image-caption set in one of the five formats, such as an open_clip CSV.

    ``name`` identifies it in overlap lists and picks its files in a shared folder; the CSV
    options (``image_column``, ``caption_column``, ``separator``) default to what the header
    says (open_clip's ``filepath``/``title``, tab or comma).

    ``format``, ``split_scheme``, ``image_dir``, ``val_fraction``, ``seed`` and ``exclude`` are
    the shared folder-dataset arguments, described on :class:`FolderDataset`.

    Args:
        root: Folder holding the annotation files (and, by default, the images). Required: there
            is no environment variable for this component.
        name: The dataset's name: it must equal the name given to ``rdbench data overlap`` for
            its ``exclude`` list to apply, and where a folder holds several sets it picks the
            files named after it (``dataset_<name>.json``, ``<name>_<split>.json``, CSV files
            whose names start with it). Records carry it.
        encoding: Text encoding of the text annotations (formats B, D and E). Null reads UTF-8
            (a byte-order mark is dropped).
        image_column: CSV column holding the image paths (formats D and E). Null: "filename" for
            format D; for E the first of filename, filepath, image, image_path, path, file, img
            that the header has.
        caption_column: CSV column holding the captions (formats D and E). Null: "title" for
            format D; for E the first of title, caption, text, sentence, raw that the header has.
        separator: CSV field separator (formats D and E). Null: a comma for format D; for E a tab
            when the header line has one, else a comma.
    """

    def __init__(
        self,
        root: str,
        name: str = "captions",
        format: Format = "auto",
        split_scheme: Scheme = "auto",
        image_dir: str | None = None,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        seed: int = 0,
        exclude: str | None = None,
        encoding: str | None = None,
        image_column: str | None = None,
        caption_column: str | None = None,
        separator: str | None = None,
    ):
        super().__init__(root, format, split_scheme, image_dir, val_fraction, seed, exclude, encoding)
        self.name = name
        self.image_column, self.caption_column, self.separator = image_column, caption_column, separator

    def csv_options(self) -> CsvOptions:
        return CsvOptions(self.image_column, self.caption_column, self.separator, self.encoding)


@register("dataset/transfer", example={"train": {"name": "dataset/rsicd", "root": "{example_root}"},
                                        "test": {"name": "dataset/rsitmd", "root": "{example_root_b}"}})
class TransferDataset(Dataset):
    """Train and validate on one dataset, test on another (RSICD -> RSITMD and back).

    Train and val rows come from ``train``, test rows from ``test``. Shared images are not
    removed here: give ``train`` an ``exclude`` list written by ``rdbench data overlap`` (the
    record then names the list and how many images it removed), so the exclusion is visible in
    the config rather than implied.

    Args:
        train: The dataset whose train and val rows are used (its test rows are dropped); give
            it an ``exclude`` list to keep images shared with ``test`` out of training.
        test: The dataset whose test rows are used (its train and val rows are dropped). An
            image id present in both datasets' remaining rows is an error.
    """

    input_paths = ()  # its two datasets have their own

    def __init__(self, train: Dataset, test: Dataset):
        self.train, self.test = train, test

    def load_table(self) -> pl.DataFrame:
        train = self.train.load_table().filter(pl.col("split") != "test")
        test = self.test.load_table().filter(pl.col("split") == "test")
        clash = set(train["image_id"].to_list()) & set(test["image_id"].to_list())
        if clash:
            raise DataError(f"dataset/transfer: image id '{sorted(clash)[0]}' is in both datasets "
                            f"({len(clash)} shared ids); exclude them from train with an overlap list")
        return make_table(pl.concat([train, test]).to_dicts())

    def describe(self) -> dict[str, Any]:
        return {"train": self.train.describe(), "test": self.test.describe()}
