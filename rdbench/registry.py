"""The component registry: every interchangeable part of an experiment has a key ``kind/name``.

Three sources feed one table, in the manner of timm's ``register_model`` and PEFT's
``register_peft_method``:

* **built-ins**, registered by the :func:`register` decorator where the class is defined;
* **presets**, YAML files ``registry/<kind>/<name>.yaml`` that name a base component, its
  arguments, a one-line description and tags (data, never Python);
* **plugins**, Python entry points in the group ``rdbench.<kind>`` whose name is the component
  name and whose value is ``module:Class``. Listing them reads package metadata only; the class
  is imported on first use, so a broken plugin breaks only the runs that use it.
  ``RDBENCH_DISABLE_PLUGINS=1`` switches discovery off (as pytest's plugin autoload switch).

Two registrations of one key are an error naming both sources ("first one wins" hides bugs).
An unknown key is an error listing the nearest names of that kind.
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from rdbench.errors import PluginImportError, RegistryError

#: The kinds of component, in the order a suite names them. Each has a contract class
#: (see :func:`define_kind`) that a component of that kind subclasses or satisfies.
KINDS = (
    "backbone",
    "dataset",
    "transform",
    "adapter",
    "attention",
    "interaction",
    "loss",
    "weighting",
    "optimizer",
    "logger",
)

#: Where the project's own presets live (``registry/`` beside the package in a checkout).
PACKAGE_REGISTRY_DIR = Path(__file__).resolve().parent.parent / "registry"


@dataclass
class Entry:
    """One registered key: where it came from and how to get its class."""

    key: str
    source: str  # "builtin", "preset:<path>" or "plugin:<dist>==<version>"
    description: str = ""
    tags: tuple[str, ...] = ()
    target: type | None = None  # the class, once known
    loader: Callable[[], Any] | None = None  # a plugin's deferred import
    base: str | None = None  # a preset's base key
    args: dict[str, Any] = field(default_factory=dict)  # a preset's arguments, or a built-in's spec defaults
    #: Arguments that make a small working instance (for the registry-driven tests and for
    #: parameter accounting): declared where the component is registered.
    example: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split("/", 1)[1]

    @property
    def is_preset(self) -> bool:
        return self.base is not None

    def load(self) -> type:
        """The component class (imports a plugin on first use)."""
        if self.target is None and self.loader is not None:
            try:
                self.target = self.loader()
            except Exception as exc:  # any import-time failure of third-party code
                raise PluginImportError(
                    f"plugin {self.key} from {self.source.removeprefix('plugin:')} failed to import: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            # a plugin declares its example on its class (it has no @register call)
            self.example = self.example or dict(getattr(self.target, "example", None) or {})
        if self.target is None:
            raise RegistryError(f"{self.key} ({self.source}) has no class; it is a preset of {self.base}")
        return self.target


class Registry:
    """A table of :class:`Entry` keyed ``kind/name``, filled lazily from all three sources."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._contracts: dict[str, type] = {}
        self._loaded_external = False
        self._sources: list[Callable[[], None]] = []
        self.preset_dirs: list[Path] = []

    # -- registration -----------------------------------------------------------------------
    def add(self, entry: Entry) -> Entry:
        kind = entry.kind
        if kind not in KINDS:
            raise RegistryError(f"{entry.key} ({entry.source}): unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
        if entry.name != entry.name.lower():
            raise RegistryError(f"{entry.key} ({entry.source}): component names are lower-case")
        old = self._entries.get(entry.key)
        if old is not None and not _same_definition(old, entry):
            raise RegistryError(f"{entry.key} is registered twice: by {old.source} and by {entry.source}")
        self._entries[entry.key] = entry
        return entry

    def add_source(self, load: Callable[[], None]) -> None:
        """A callable that registers components when first needed (the package hands in the one
        that imports its built-ins, so this module imports none of them)."""
        self._sources.append(load)

    def define_kind(self, kind: str, contract: type) -> None:
        """Record the contract class of a kind (used to find component-typed arguments)."""
        self._contracts[kind] = contract

    def contract(self, kind: str) -> type | None:
        return self._contracts.get(kind)

    def kind_of_contract(self, cls: Any) -> str | None:
        for kind, contract in self._contracts.items():
            if cls is contract:
                return kind
        return None

    # -- lookup -----------------------------------------------------------------------------
    def entries(self, kind: str | None = None) -> list[Entry]:
        self._ensure_loaded()
        out = [e for e in self._entries.values() if kind is None or e.kind == kind]
        return sorted(out, key=lambda e: (KINDS.index(e.kind), e.name))

    def get(self, key: str, kind: str | None = None) -> Entry:
        """The entry for ``key``; ``kind`` lets a slot accept a bare name (``bottleneck``)."""
        self._ensure_loaded()
        full = _qualify(key, kind)
        entry = self._entries.get(full)
        if entry is None:
            raise RegistryError(self._unknown_message(full, kind))
        return entry

    def _unknown_message(self, key: str, kind: str | None) -> str:
        kind = kind or key.split("/", 1)[0]
        if kind not in KINDS:
            return f"unknown component key {key!r}: the kind must be one of {', '.join(KINDS)}"
        names = [e.key for e in self._entries.values() if e.kind == kind]
        close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(names)) or 'none'}"
        return f"unknown component key {key!r}; {hint} (see `rdbench list {kind}/`)"

    # -- external sources -------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded_external:
            return
        self._loaded_external = True
        for load in self._sources:
            load()

        for folder in self._preset_folders():
            self.load_presets(folder)
        if os.environ.get("RDBENCH_DISABLE_PLUGINS", "") not in ("1", "true", "yes"):
            self.load_plugins()

    def _preset_folders(self) -> list[Path]:
        folders = [PACKAGE_REGISTRY_DIR, *self.preset_dirs]
        extra = os.environ.get("RDBENCH_REGISTRY_PATH", "")
        folders += [Path(p) for p in extra.split(os.pathsep) if p]
        seen, out = set(), []
        for folder in folders:
            real = folder.resolve()
            if real not in seen and real.is_dir():
                seen.add(real)
                out.append(real)
        return out

    def load_presets(self, folder: Path) -> None:
        """Register every ``<kind>/<name>.yaml`` below ``folder`` as a preset."""
        for path in sorted(Path(folder).glob("*/*.yaml")):
            kind, name = path.parent.name, path.stem
            if kind not in KINDS:
                continue  # other data lives beside presets (e.g. published reference rows)
            data = _read_preset(path)
            self.add(
                Entry(
                    key=f"{kind}/{name}",
                    source=f"preset:{_display_path(path)}",
                    description=str(data.get("description", "")).strip(),
                    tags=tuple(data.get("tags") or ()),
                    base=_qualify(str(data["base"]), kind),
                    args=dict(data.get("args") or {}),
                    example=dict(data.get("example") or {}),
                )
            )

    def load_plugins(self) -> None:
        """Register entry points of the ``rdbench.<kind>`` groups without importing them."""
        from importlib.metadata import entry_points

        for kind in KINDS:
            for ep in entry_points(group=f"rdbench.{kind}"):
                dist = getattr(ep, "dist", None)
                origin = f"{dist.name}=={dist.version}" if dist is not None else ep.value
                self.add(
                    Entry(
                        key=f"{kind}/{ep.name}",
                        source=f"plugin:{origin}",
                        description=f"plugin {ep.value}",
                        tags=("plugin",),
                        loader=ep.load,
                    )
                )


def _same_definition(a: Entry, b: Entry) -> bool:
    # Re-importing a module (e.g. under pytest's rewriting) re-runs its decorators: same class
    # path is the same registration, not a collision.
    if a.source == b.source == "builtin" and a.target is not None and b.target is not None:
        return _class_path(a.target) == _class_path(b.target)
    return a.source == b.source and a.source.startswith("preset:")


def _qualify(key: str, kind: str | None) -> str:
    if "/" in key or kind is None:
        return key
    return f"{kind}/{key}"


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(PACKAGE_REGISTRY_DIR.parent))
    except ValueError:
        return str(path)


def _read_preset(path: Path) -> dict[str, Any]:
    from rdbench.suite import read_yaml  # one YAML reader, one error format

    data = read_yaml(path)
    if not isinstance(data, dict) or "base" not in data:
        raise RegistryError(f"{path}: a preset is a mapping with at least `base`, `description` and `args`")
    unknown = set(data) - {"base", "description", "tags", "args", "example"}
    if unknown:
        raise RegistryError(f"{path}: unknown preset field(s) {', '.join(sorted(unknown))}")
    for name in ("args", "example"):
        if data.get(name) is not None and not isinstance(data[name], dict):
            raise RegistryError(f"{path}: `{name}` must be a mapping of argument names to values")
    return data


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


REGISTRY = Registry()


def register(
    key: str,
    *,
    tags: Iterable[str] = (),
    description: str | None = None,
    defaults: dict[str, Any] | None = None,
    example: dict[str, Any] | None = None,
    search_space: dict[str, Any] | None = None,
) -> Callable[[type], type]:
    """Class decorator: register a built-in component under ``kind/name``.

    ``defaults`` are the component-typed arguments a run gets unless it says otherwise, as specs
    (``{"weighting": "weighting/fixed"}``): resolution builds them, so the class itself receives
    built objects and its signature carries no key strings. The description defaults to the
    first line of the docstring.

    ``example`` holds the arguments of a small working instance, as a spec would give them
    (nested components as keys or ``{name: ...}`` specs). ``tests/test_every_component.py``
    builds every registered key from its example (a preset's is ``example:`` in its YAML, a
    plugin's its class attribute ``example``) and exercises it by its kind's contract on the
    tiny ``rdbench-test`` model of :mod:`rdbench.testing` (2 blocks per tower, width 32, 32 px,
    16-token context; the test makes that architecture known to open_clip), so an example
    sizes what the defaults would make too large for it (``{"n_ctx": 4}``). A component that
    builds and runs from its defaults declares none. Parameter accounting
    (:mod:`rdbench.accounting`) takes from it only required arguments that have no default.
    Placeholders stand for what only the test can provide: the string ``"{example_root}"``
    (``"{example_root_b}"``, ``"{example_root_c}"``, ... for further folders) becomes the path
    of a small caption dataset the test writes in one of the five annotation formats (format A,
    ``dataset_<name>.json`` and ``images/``, unless the test names another for the key), so a
    dataset that reads a folder declares ``example={"root": "{example_root}"}``.

    ``search_space`` is the method family's default hyper-parameter space for a suite's
    ``select`` slot (dotted run paths to ranges, :mod:`rdbench.resolution.select`); it is set
    as the class attribute ``search_space``, which subclasses inherit and plugins set directly.
    """

    def wrap(cls: type) -> type:
        REGISTRY.add(
            Entry(
                key=key,
                source="builtin",
                description=description or summary_of(cls.__doc__),
                tags=tuple(tags),
                target=cls,
                args=dict(defaults or {}),
                example=dict(example or {}),
            )
        )
        cls.registry_key = key
        if search_space is not None:
            cls.search_space = dict(search_space)
        return cls

    return wrap


def summary_of(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line."""
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph[: end + 1] if end >= 0 else paragraph


def import_class_path(path: str) -> type:
    """Import ``package.module.Class`` (the jsonargparse ``class_path`` form)."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RegistryError(f"class_path {path!r} cannot be imported: {exc}") from exc


def class_path_of(cls: type) -> str:
    return _class_path(cls)
