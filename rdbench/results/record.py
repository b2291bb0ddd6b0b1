"""The run record: ``record.json``, one per run and seed, as the :class:`Record` type.

A record is written once per run and seed, always atomically (:mod:`rdbench.atomic`: a
temporary file in the same folder, fsynced, renamed over the target, then the folder fsynced),
so that a reader never sees half a record and a crash never leaves a corrupt one.

Schema versions. New records are version 2 (:data:`SCHEMA_VERSION`); version-1 records, written
before ``cost.backbone_params`` existed, are still read:

* both versions need ``suite`` and ``run`` (non-empty strings), ``run_index`` and ``seed``
  (integers), ``status`` (a non-empty string: ``running``, ``success``, ``failed``, ``pruned``
  or any other), ``metrics`` values that are numbers or null, and, where present, ``error``,
  ``started_at`` and ``finished_at`` strings or null, the sections ``components``,
  ``metrics``, ``eval``, ``train``, ``cost``, ``provenance`` objects, ``selection`` an object
  or null and ``resumed_from_step`` / ``failed_at_step`` integers or null;
* version 2 additionally requires, on a ``success`` record, ``cost.backbone_params`` (an
  integer: the backbone's own parameter count, before an adapter attaches) and ``selection``
  (an object: the monitor, best score and checkpoint). A run that failed, was pruned or is
  still running may lack both, since it can stop before the model is built;
* a version-1 record loads with ``cost["backbone_params"] = None`` and ``selection = None``
  where it lacks them, and keeps ``schema_version == 1`` so readers can tell (``rdbench
  compare`` then falls back to the smallest ``total_params`` of the backbone).

``selection`` may also say how the run's hyper-parameters were chosen, when a search ran (a
suite's ``select:`` slot). These keys are optional, so no version bump: a record without them is
as valid as before, but they come all together or not at all (a partial summary would be a
writer's bug, and ``rdbench compare`` could not say what was chosen on what). ``metric`` (a
validation metric name), ``method`` (``grid`` or ``trials``), ``seeds`` (the seeds the
candidates were trained at), ``candidates`` (``{values: {dotted.path: value}, score: number or
null, status: str}`` each), ``chosen`` (``{dotted.path: value}``) and ``cost_s`` (wall seconds
of the whole search). Other keys (``space_from``, say) are kept as written.

Other sections are kept as written (``rdbench compare`` skips a cost or training value that is
not a number rather than rejecting the record).
"""

from __future__ import annotations

import copy
import json
import subprocess
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from rdbench.atomic import write_json

SCHEMA_VERSION = 2
#: Versions :meth:`Record.from_json` reads.
SUPPORTED_VERSIONS = (1, 2)
RECORD_FILE = "record.json"
CONFIG_FILE = "config.yaml"
#: Per-query ranks on the test split: {"split": "test", "i2t": [rank per image], "t2i": [rank per caption]}.
RANKS_FILE = "test_ranks.json"
PACKAGES = ("rdbench", "torch", "torchvision", "open_clip_torch", "lightning", "polars", "numpy")

_SECTIONS = ("components", "metrics", "eval", "train", "cost", "provenance", "diagnostics")
_STEPS = ("resumed_from_step", "failed_at_step")
PURPOSES = ("run", "trial")
#: Keys of ``selection`` that describe a hyper-parameter search; all or none of them.
SEARCH_KEYS = ("metric", "method", "seeds", "candidates", "chosen", "cost_s")
SEARCH_METHODS = ("grid", "trials")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_name(value) -> bool:
    return isinstance(value, str) and bool(value)


def _is_num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_text(value) -> bool:
    return value is None or isinstance(value, str)


def _is_values(value) -> bool:
    """``{dotted.path: value}``: an object with non-empty string keys (values any JSON)."""
    return isinstance(value, dict) and all(_is_name(k) for k in value)


def _check_search(selection: dict) -> dict:
    """Check the search keys of ``selection`` (when any is there); returns a normalised copy
    (scores and cost as floats). Raises ValueError naming the first bad key."""
    present = [k for k in SEARCH_KEYS if k in selection]
    if not present:
        return copy.deepcopy(selection)
    missing = [k for k in SEARCH_KEYS if k not in selection]
    if missing:
        raise ValueError(f"'selection' has search key(s) {', '.join(present)} but lacks "
                         f"{', '.join(missing)} (a search is recorded with all of {', '.join(SEARCH_KEYS)})")
    out = copy.deepcopy(selection)

    def bad(key: str, what: str):
        return ValueError(f"field 'selection.{key}' has an invalid value {selection[key]!r} ({what})")

    if not _is_name(out["metric"]):
        raise bad("metric", "a metric name")
    if out["method"] not in SEARCH_METHODS:
        raise bad("method", f"one of {', '.join(SEARCH_METHODS)}")
    if not isinstance(out["seeds"], list) or not all(_is_int(s) for s in out["seeds"]):
        raise bad("seeds", "a list of integers")
    if not _is_values(out["chosen"]):
        raise bad("chosen", "an object of dotted paths")
    if not _is_num(out["cost_s"]) or out["cost_s"] < 0:
        raise bad("cost_s", "seconds, a number >= 0")
    out["cost_s"] = float(out["cost_s"])
    if not isinstance(out["candidates"], list):
        raise bad("candidates", "a list")
    for i, c in enumerate(out["candidates"]):
        ok = (isinstance(c, dict) and _is_values(c.get("values")) and _is_name(c.get("status"))
              and (c.get("score") is None or _is_num(c.get("score"))))
        if not ok:
            raise ValueError(f"field 'selection.candidates[{i}]' has an invalid value {c!r} "
                             "(an object: values, score (a number or null), status)")
        c["score"] = None if c.get("score") is None else float(c["score"])
    return out


@dataclass(kw_only=True)
class Record:
    """One run at one seed: what ran, what it measured, what it cost and where it came from.

    ``components``: slot -> ``{key, class_path, init_args, source}``. ``metrics``: ``val/...``
    and ``test/...`` (``i2t_R@1`` ... ``mR``, in percent) -> number or None. ``eval``: per split
    ``{n_images, n_captions, ties_i2t, ties_t2i}``. ``train``: final training summaries
    (``train/loss``, ``epochs``, ``steps``). ``cost``: ``trainable_params``, ``adapter_params``,
    ``total_params``, ``backbone_params``, ``train_time_s``, ``peak_mem_bytes``,
    ``peak_mem_kind`` and optionally ``feature_cache``. ``diagnostics`` (docs/diagnostics.md):
    ``train`` (per-tower gradient norms, ``grad_ratio_text_image``, relative update sizes),
    ``val`` and ``test`` (``modality_gap``, ``alignment``, ``uniformity``...; ``test`` also
    ``per_class`` recall); absent from records written before it existed. ``provenance``: ``packages``,
    ``code_version``, ``backbone`` (``key``, checksum, ...) and ``dataset`` (``key``,
    ``fingerprint``, ...). ``selection``: ``{monitor, best_score, checkpoint}``, and when a
    hyper-parameter search ran, :data:`SEARCH_KEYS` too (``chosen``: ``{dotted.path: value}``).
    """

    schema_version: int = SCHEMA_VERSION
    suite: str
    run: str
    run_index: int
    seed: int
    status: str
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] | None = None
    resumed_from_step: int | None = None
    failed_at_step: int | None = None
    #: ``"run"`` (a suite's run) or ``"trial"`` (a tuning trial: selected on validation, never
    #: evaluated on test, left out of comparison tables unless asked for).
    purpose: str = "run"

    def to_json(self) -> dict[str, Any]:
        """The record as ``record.json`` holds it (a fresh dict); unset step fields are left out."""
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}
        for name in _STEPS:
            if out[name] is None:
                del out[name]
        return out

    @classmethod
    def from_json(cls, data: Any) -> Record:
        """Check and load a parsed ``record.json`` (schema version 1 or 2).

        Raises ValueError naming the first bad field, e.g. ``lacks required field 'seed'`` or
        ``metric 'test/mR' is not a number``; an unknown version raises ``schema_version 3 is
        not supported (supported: 1, 2)``. ``data`` is not modified.
        """
        if not isinstance(data, dict):
            raise ValueError("is not a JSON object")
        version = data.get("schema_version")
        if not _is_int(version) or version not in SUPPORTED_VERSIONS:
            raise ValueError(f"schema_version {version!r} is not supported "
                             f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})")
        # Any status string is accepted: besides success/failed, a record left behind by a
        # crashed or still running process ("running") must be counted, not rejected.
        checks = {"suite": _is_name, "run": _is_name, "run_index": _is_int, "seed": _is_int,
                  "status": _is_name}
        for name, ok in checks.items():
            if name not in data:
                raise ValueError(f"lacks required field '{name}'")
            if not ok(data[name]):
                raise ValueError(f"field '{name}' has an invalid value {data[name]!r}")
        for name in ("error", "started_at", "finished_at"):
            if not _is_text(data.get(name)):
                raise ValueError(f"field '{name}' has an invalid value {data[name]!r}")
        sections = {}
        for name in _SECTIONS:
            value = data.get(name)
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"'{name}' is not an object")
            sections[name] = copy.deepcopy(value) if value is not None else {}
        bad = [k for k, v in sections["metrics"].items() if v is not None and not _is_num(v)]
        if bad:
            raise ValueError(f"metric '{bad[0]}' is not a number")
        sections["metrics"] = {k: None if v is None else float(v) for k, v in sections["metrics"].items()}
        selection = data.get("selection")
        if selection is not None and not isinstance(selection, dict):
            raise ValueError("'selection' is not an object")
        if selection is not None:
            selection = _check_search(selection)
        for name in _STEPS:
            value = data.get(name)
            if value is not None and not _is_int(value):
                raise ValueError(f"field '{name}' has an invalid value {value!r}")
        purpose = data.get("purpose", "run")
        if purpose not in PURPOSES:
            raise ValueError(f"field 'purpose' has an invalid value {purpose!r} (one of {', '.join(PURPOSES)})")
        if version == 1:
            sections["cost"].setdefault("backbone_params", None)  # did not exist in version 1
        elif data["status"] == "success":
            if not _is_int(sections["cost"].get("backbone_params")):
                raise ValueError("lacks required field 'cost.backbone_params' (an integer, "
                                 "required on a successful version-2 record)")
            if selection is None:
                raise ValueError("lacks required field 'selection' (required on a successful "
                                 "version-2 record)")
        return cls(
            schema_version=version,
            **{name: data[name] for name in checks},
            **{name: data.get(name) for name in ("error", "started_at", "finished_at")},
            **sections,
            selection=selection,
            **{name: data.get(name) for name in _STEPS},
            purpose=purpose,
        )

    def write(self, folder: str | Path) -> Path:
        """Write ``folder/record.json`` atomically; returns its path."""
        path = Path(folder) / RECORD_FILE
        write_json(path, self.to_json())
        return path

    @classmethod
    def read(cls, path: str | Path) -> Record | None:
        """The record at ``path`` (a ``record.json`` or the folder holding one), or None if it
        is absent, unreadable or not a valid record."""
        path = Path(path)
        if path.is_dir():
            path = path / RECORD_FILE
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def code_version() -> str:
    """The git commit of the rdbench checkout (with ``+dirty``), else the package version."""
    from rdbench import __version__

    root = Path(__file__).resolve().parent.parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return __version__
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return __version__
