"""Published reference rows: ``rdbench/results/published/<name>.yaml``, one file per source table.

Readers judge a new method against what is already published, so ``rdbench compare
--references`` can print published numbers beside measured ones. They are kept as data (YAML,
copied exactly from the papers and READMEs listed in docs/references.md)
rather than code, so that a correction is a one-line diff next to its citation. Published rows
are never ranked, tested or averaged with rdbench's own: they come from other code, other seeds
and sometimes other evaluation rules.

File layout::

    source: "<citation>"
    url: <where the numbers are>          # optional
    backbone: CLIP ViT-B/32               # the default for its rows
    lineage: vsepp                        # the evaluation code its numbers came from (LINEAGES)
    lineage_source: "<repo>/<path>: <function>"   # optional: where that code is
    datasets:
      rsicd:                              # one of DATASETS
        - {method: Adapter, trainable: 0.17M, i2t: [R@1, R@5, R@10], t2i: [...], mR: 24.84}

A row may carry its own ``lineage`` where the source's table mixes numbers from other code.
Published numbers are measured on each dataset's published test split (its ``canonical_test``
in :mod:`rdbench.data.datasets`, the one place those sizes are written); a run whose recorded
test split (``eval.test.n_images``, ``n_captions``) differs is not comparable with them
(:func:`geometry_note`, :func:`other_split`).
Recall depends on how the evaluation code orders tied scores, so ``rdbench compare
--references`` shows each published row beside rdbench's recalls computed under the same
lineage (the ``test@<lineage>/...`` metrics of each run; docs/references.md, docs/metric.md).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

from rdbench.errors import RdbenchError

#: Datasets with published rows; a suite's dataset key ``dataset/<name>`` selects them.
DATASETS = ("rsicd", "rsitmd")
KS = (1, 5, 10)
#: The public evaluation codes a published table can come from; each run records its test recalls
#: under every one of them as ``test@<lineage>/...`` (docs/metric.md):
#: ``vsepp`` (VSE++ evaluation.py i2t/t2i: AMFMN, GaLR, PE-RSITR), ``pir`` (ALBEF's itm_eval: PIR,
#: HarMA), ``clip_benchmark`` (LAION CLIP_benchmark's recall_at_k: RemoteCLIP, GeoRSCLIP).
LINEAGES = ("vsepp", "pir", "clip_benchmark")


#: The published rows shipped with the package (package data, beside this module).
PUBLISHED_DIR = Path(__file__).resolve().parent / "published"


def reference_dir() -> Path:
    return PUBLISHED_DIR


def dataset_name(key: str | None) -> str | None:
    """``dataset/rsicd`` -> ``rsicd``; None for datasets without published rows."""
    if not key:
        return None
    name = key.removeprefix("dataset/")
    return name if name in DATASETS else None


def canonical_test(dataset: str | None) -> tuple[int, int] | None:
    """(images, captions) of the published test split of ``dataset`` (``rsicd`` or
    ``dataset/rsicd``), as the dataset class declares it; None for datasets without published rows."""
    name = dataset_name(f"dataset/{dataset.removeprefix('dataset/')}" if dataset else None)
    if name is None:
        return None
    from rdbench.data.datasets import RSICDDataset, RSITMDDataset  # the one source of the sizes

    return {cls.name: cls.canonical_test for cls in (RSICDDataset, RSITMDDataset)}.get(name)


def split_geometry(record) -> tuple[int | None, int | None] | None:
    """(n_images, n_captions) of a record's test split (``record.eval["test"]``); None when the
    record states neither (a run that failed before testing, records written before counts)."""
    test = record.eval.get("test") if isinstance(record.eval, dict) else None
    if not isinstance(test, dict):
        return None
    counts = tuple(v if isinstance(v, int) and not isinstance(v, bool) else None
                   for v in (test.get("n_images"), test.get("n_captions")))
    return None if counts == (None, None) else counts


def other_split(dataset: str | None, n_images: int | None, n_captions: int | None) -> tuple[int, int] | None:
    """The published test split of ``dataset`` when a known test split size differs from it
    (the rows are then not comparable with published numbers); None when comparable or unknown."""
    canonical = canonical_test(dataset)
    if canonical is None:
        return None
    differs = any(v is not None and v != c for v, c in zip((n_images, n_captions), canonical))
    return canonical if differs else None


def split_text(n_images: int | None, n_captions: int | None) -> str:
    """``8 images and 40 captions`` (``?`` for an unknown count)."""
    return " and ".join(f"{'?' if n is None else f'{n:,}'} {what}"
                        for n, what in ((n_images, "images"), (n_captions, "captions")))


def geometry_note(record) -> str | None:
    """One line saying that ``record``'s test split is not the published one, e.g. "test split of
    dataset/rsitmd has 8 images and 40 captions; the published RSITMD test split has 452 and
    2,260: rows of this run are not comparable with published numbers"; None when the split is
    the published one, its size is not recorded, or the dataset has no published rows."""
    def key(section: str) -> str | None:
        sub = getattr(record, section, {}).get("dataset")
        value = sub.get("key") if isinstance(sub, dict) else None
        return value if isinstance(value, str) else None

    dataset = key("provenance") or key("components")
    geometry = split_geometry(record)
    canonical = other_split(dataset, *geometry) if geometry else None
    if canonical is None:
        return None
    return (f"test split of {dataset} has {split_text(*geometry)}; the published "
            f"{dataset_name(dataset).upper()} test split has {canonical[0]:,} and {canonical[1]:,}: "
            "rows of this run are not comparable with published numbers")


@dataclass(frozen=True)
class Reference:
    """One published row: its method, source table and the seven test numbers (in %)."""

    name: str  # the file's stem, e.g. "pe-rsitr"
    citation: str
    method: str
    backbone: str
    dataset: str
    trainable: str | None  # as published ("0.16M"), None where the source gives none
    values: dict[str, float]  # "test/i2t_R@1" ... "test/mR"
    lineage: str  # the evaluation code of the numbers, one of LINEAGES
    lineage_source: str | None = None  # "<repo>/<path>: <function>" of that code, as the file says


def _numbers(path: Path, where: str, row: dict, field: str, count: int) -> list[float]:
    value = row.get(field)
    value = [value] if count == 1 and not isinstance(value, list) else value
    if (not isinstance(value, list) or len(value) != count
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise RdbenchError(f"{path}: {where} field '{field}' must be "
                           + ("a number" if count == 1 else f"a list of {count} numbers"))
    return [float(v) for v in value]


def _lineage(path: Path, where: str, value) -> str:
    """``value`` checked against LINEAGES; ``where`` is "" for the file's field, else the row."""
    prefix = f"{path}: " + (f"{where} " if where else "")
    known = ", ".join(LINEAGES)
    if value is None:
        raise RdbenchError(f"{prefix}needs 'lineage', the evaluation code its numbers came from "
                           f"(one of: {known}; docs/references.md)")
    if not isinstance(value, str) or value not in LINEAGES:
        raise RdbenchError(f"{prefix}unknown lineage '{value}' (known: {known})")
    return value


def _parse(path: Path) -> list[Reference]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RdbenchError(f"{path}: not readable as YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("source"), str):
        raise RdbenchError(f"{path}: needs a 'source' citation string")
    datasets = data.get("datasets")
    if not isinstance(datasets, dict) or not datasets:
        raise RdbenchError(f"{path}: needs 'datasets' mapping {', '.join(DATASETS)} to rows")
    lineage = _lineage(path, "", data.get("lineage"))
    lineage_source = data.get("lineage_source")
    if lineage_source is not None and not isinstance(lineage_source, str):
        raise RdbenchError(f"{path}: 'lineage_source' must be a string (\"<repo>/<path>: <function>\")")
    citation = data["source"] + (f" <{data['url']}>" if data.get("url") else "")
    out = []
    for dataset, rows in datasets.items():
        if dataset not in DATASETS:
            raise RdbenchError(f"{path}: unknown dataset '{dataset}' (known: {', '.join(DATASETS)})")
        if not isinstance(rows, list):
            raise RdbenchError(f"{path}: datasets.{dataset} must be a list of rows")
        for i, row in enumerate(rows):
            where = f"datasets.{dataset}[{i}]"
            if not isinstance(row, dict) or not isinstance(row.get("method"), str):
                raise RdbenchError(f"{path}: {where} needs a 'method' name")
            i2t, t2i = (_numbers(path, where, row, d, 3) for d in ("i2t", "t2i"))
            values = {f"test/i2t_R@{k}": v for k, v in zip(KS, i2t)}
            values |= {f"test/t2i_R@{k}": v for k, v in zip(KS, t2i)}
            values["test/mR"] = _numbers(path, where, row, "mR", 1)[0]
            trainable = row.get("trainable")
            row_lineage = (_lineage(path, where, row["lineage"]) if "lineage" in row else lineage)
            out.append(Reference(path.stem, citation, row["method"],
                                 str(row.get("backbone", data.get("backbone", "?"))), dataset,
                                 None if trainable is None else str(trainable), values,
                                 row_lineage, lineage_source))
    return out


@functools.lru_cache(maxsize=8)
def _load(folder: str) -> tuple[Reference, ...]:
    files = sorted(Path(folder).glob("*.yaml"))
    return tuple(ref for path in files for ref in _parse(path))


def load_references(folder=None) -> list[Reference]:
    """Every published row below ``folder`` (default: the package's ``results/published``)."""
    folder = Path(folder) if folder is not None else reference_dir()
    if not folder.is_dir():
        raise RdbenchError(f"{folder}: reference folder does not exist")
    return list(_load(str(folder.resolve())))


def reference_rows(dataset: str, names: list[str] | None = None, folder=None) -> list[Reference]:
    """Published rows for ``dataset`` (``rsicd``/``rsitmd``), from the files ``names`` or all."""
    refs = load_references(folder)
    if names:
        known = sorted({r.name for r in refs})
        unknown = [n for n in names if n not in known]
        if unknown:
            raise RdbenchError(f"--references: unknown source '{unknown[0]}' "
                               f"(known: {', '.join(known)})")
        refs = [r for r in refs if r.name in names]
    return [r for r in refs if r.dataset == dataset]
