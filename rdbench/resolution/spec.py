"""Resolution: a component spec becomes an explicit class with checked arguments, unbuilt.

This is step 2 of the data path. A spec (key, ``{name, **args}`` or ``{class_path, init_args}``)
is looked up in the registry, presets are unfolded into their base with their arguments under
the user's, and every argument is checked against the target's ``__init__`` signature:
unknown names, missing required arguments and wrong types (checked by jsonargparse, the same
machinery Lightning's CLI uses) are one-line errors. Arguments annotated with a kind's contract
class (``Attention``, ``dict[str, LossTerm]``, ``Builder[Attention]``) are themselves specs and
are resolved recursively. Nothing is instantiated until :meth:`Resolved.build`.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from rdbench.errors import ConfigError, RdbenchError
from rdbench.registry import REGISTRY, class_path_of, import_class_path
from rdbench.suite import merge

T = TypeVar("T")


class Builder(Generic[T]):
    """Annotation for an argument that is a component spec built on demand, once per call.

    An adapter that needs one attention mixer per block declares ``mixer: Builder[Attention]``
    and receives a callable; calling it with the arguments only the host knows (width, depth)
    builds a fresh mixer with the user's arguments.
    """


@dataclass
class Resolved:
    """A resolved component: its class and checked arguments, ready to build."""

    kind: str
    key: str | None
    cls: type
    args: dict[str, Any]
    source: str
    defaults: dict[str, Any] = field(default_factory=dict)
    builders: frozenset[str] = frozenset()

    def build(self, **extra: Any) -> Any:
        """Instantiate, building nested components first (builder arguments become callables)."""
        kwargs = {name: self._build_arg(name, value) for name, value in self.args.items()}
        return self.cls(**kwargs, **extra)

    def _build_arg(self, name: str, value: Any) -> Any:
        if name in self.builders and isinstance(value, Resolved):
            return functools.partial(value.build)
        return _build_value(value)

    def record(self) -> dict[str, Any]:
        """The JSON form stored in configs and records: key, class path, all arguments, source."""
        init_args = {**self.defaults, **{k: _record_value(v) for k, v in self.args.items()}}
        return {"key": self.key, "class_path": class_path_of(self.cls), "init_args": init_args, "source": self.source}


@dataclass
class Prebuilt:
    """A component already built in Python, standing in a resolved run's slot (the conformance
    helpers and the benchmarks assemble runs around objects they made themselves)."""

    obj: Any

    @property
    def key(self) -> str | None:
        return getattr(type(self.obj), "registry_key", None)

    def build(self) -> Any:
        return self.obj

    def record(self) -> dict[str, Any]:
        return {"key": self.key, "class_path": class_path_of(type(self.obj)), "init_args": {}, "source": "python"}


def _build_value(value: Any) -> Any:
    if isinstance(value, Resolved):
        return value.build()
    if isinstance(value, dict):
        return {k: _build_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_build_value(v) for v in value]
    return value


def _record_value(value: Any) -> Any:
    if isinstance(value, Resolved):
        return value.record()
    if isinstance(value, dict):
        return {k: _record_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_record_value(v) for v in value]
    return value


def resolve(spec: Any, kind: str, *, partial: bool = False) -> Resolved:
    """Resolve a spec of ``kind``. ``partial`` allows required arguments the host will supply.

    A spec is a key, ``{name: key, **args}``, ``{class_path, init_args}``, or a component's
    recorded form (``{key, class_path, init_args, source}`` as ``config.yaml`` holds it), so a
    written config resolves to the same components.
    """
    if isinstance(spec, dict) and "class_path" in spec and ({"key", "source"} & set(spec)):
        # the recorded form: build what the class path says, keep the key and source it had
        # (a preset's key names more than its base class does)
        extra = set(spec) - {"class_path", "init_args", "key", "source"}
        if extra:
            raise ConfigError(f"a recorded {kind} component has unexpected field(s) {', '.join(sorted(extra))}")
        resolved = resolve({"class_path": spec["class_path"], "init_args": spec.get("init_args")}, kind, partial=partial)
        if spec.get("key"):
            resolved.key = str(spec["key"])
        resolved.source = str(spec.get("source") or resolved.source)
        return resolved
    name, class_path, args = _normalise(spec, kind)
    source = "class_path"
    key = None
    if name is not None:
        entry = REGISTRY.get(name, kind)
        if entry.kind != kind:
            raise ConfigError(f"{entry.key} is a {entry.kind} component; this slot takes a {kind}")
        key, source = entry.key, entry.source
        seen = {entry.key}
        while entry.is_preset:  # presets of presets: each level's arguments sit under the next
            args = _merge_args(entry.args, args)
            entry = REGISTRY.get(entry.base, kind)
            if entry.key in seen:
                raise ConfigError(f"{key}: preset chain loops back to {entry.key}")
            seen.add(entry.key)
        args = _merge_args(entry.args, args)  # a built-in's registered spec defaults
        cls = entry.load()
    else:
        cls = _contract_class(class_path, kind)
        key = getattr(cls, "registry_key", None)
        if key is not None:
            entry = REGISTRY.get(key)
            source = entry.source
            args = _merge_args(entry.args, args)
    return _check(cls, kind, key, source, args, partial)


def _contract_class(class_path: str, kind: str) -> type:
    """The class a ``class_path`` names, if it implements ``kind``'s contract.

    A suite is code its user chooses to run, but a slot runs only components: ``os.system`` or
    ``subprocess.run`` in an adapter slot is refused before anything is imported (a component
    never lives in Python's standard library, whose modules may act on import), and whatever
    else is imported must be a subclass of the kind's contract class before it is called
    (docs/reliability.md, "Trust model")."""
    slot = f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"
    top = class_path.split(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        raise ConfigError(f"class_path {class_path!r} names Python's standard library; {slot} slot takes "
                          f"a subclass of rdbench's {kind} contract")
    REGISTRY.entries(kind)  # the component packages define the kinds' contracts on import
    contract = REGISTRY.contract(kind)
    cls = import_class_path(class_path)
    if contract is not None and not (isinstance(cls, type) and issubclass(cls, contract)):
        what = f"class {cls.__name__}" if isinstance(cls, type) else f"a {type(cls).__name__}, not a class"
        named = getattr(contract, "contract_name", f"{contract.__module__}.{contract.__qualname__}")
        raise ConfigError(f"class_path {class_path!r} is {what}; {slot} slot takes a subclass of {named}")
    return cls


def _normalise(spec: Any, kind: str) -> tuple[str | None, str | None, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, None, {}
    if isinstance(spec, dict):
        if "class_path" in spec:
            extra = set(spec) - {"class_path", "init_args"}
            if extra:
                raise ConfigError(f"a {{class_path, init_args}} spec has unexpected field(s) {', '.join(sorted(extra))}")
            init_args = spec.get("init_args") or {}
            if not isinstance(init_args, dict):
                raise ConfigError(f"init_args of {spec['class_path']} must be a mapping")
            return None, str(spec["class_path"]), dict(init_args)
        if "name" in spec:
            if not isinstance(spec["name"], str):
                raise ConfigError(f"a {kind} spec's `name` must be a key string, got {spec['name']!r}")
            return spec["name"], None, {k: v for k, v in spec.items() if k != "name"}
        raise ConfigError(f"a {kind} spec needs `name: <key>` (or `class_path`), got {json.dumps(spec, default=str)}")
    raise ConfigError(f"a {kind} spec is a key, {{name: key, ...}} or {{class_path, init_args}}; got {spec!r}")


def _merge_args(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    return merge(base, patch) if base else patch


# -- signature checks ------------------------------------------------------------------------
def _component_params(cls: type) -> dict[str, tuple[str, str]]:
    """Parameters whose annotation is a kind's contract: name -> (shape, kind)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: treat every argument as plain
        return {}
    out = {}
    for pname, hint in hints.items():
        found = _contract_shape(hint)
        if found is not None:
            out[pname] = found
    return out


def _contract_shape(hint: Any) -> tuple[str, str] | None:
    kind = REGISTRY.kind_of_contract(hint)
    if kind:
        return "one", kind
    origin, targs = typing.get_origin(hint), typing.get_args(hint)
    if origin is Builder and targs:
        inner = REGISTRY.kind_of_contract(targs[0])
        return ("builder", inner) if inner else None
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        non_none = [a for a in targs if a is not type(None)]
        if len(non_none) == 1:
            return _contract_shape(non_none[0])
    if origin is dict and len(targs) == 2:
        inner = REGISTRY.kind_of_contract(targs[1])
        return ("dict", inner) if inner else None
    if origin is list and targs:
        inner = REGISTRY.kind_of_contract(targs[0])
        return ("list", inner) if inner else None
    return None


def _check(cls: type, kind: str, key: str | None, source: str, args: dict[str, Any], partial: bool) -> Resolved:
    label = key or class_path_of(cls)
    sig = inspect.signature(cls.__init__)
    params = {n: p for n, p in list(sig.parameters.items())[1:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    for name in args:
        if name not in params and not takes_kwargs:
            close = difflib.get_close_matches(name, list(params), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; arguments are {', '.join(params) or 'none'}"
            raise ConfigError(f"{label}: unknown argument {name!r}{hint}")
    nested = _component_params(cls)
    resolved_args: dict[str, Any] = {}
    builders = set()
    for name, (shape, inner_kind) in nested.items():
        if name not in args and (name not in params or params[name].default is inspect.Parameter.empty):
            continue
        value = args[name] if name in args else params[name].default
        if isinstance(value, type) and getattr(value, "registry_key", None):
            value = value.registry_key  # a class default (a builder): recorded by its key
        if value is None:
            if name in args:
                resolved_args[name] = None
            continue
        try:
            resolved_args[name] = _resolve_nested(value, shape, inner_kind)
        except RdbenchError as exc:
            raise ConfigError(f"{label}: argument {name!r}: {exc}") from None
        if shape == "builder":
            builders.add(name)
    plain = {k: v for k, v in args.items() if k not in nested}
    resolved_args.update(check_plain(cls, label, plain, set(nested), params, partial))
    missing = [
        n for n, p in params.items()
        if p.default is inspect.Parameter.empty and n not in resolved_args and not partial
    ]
    if missing:
        raise ConfigError(f"{label}: missing required argument(s) {', '.join(missing)}")
    defaults = {
        n: p.default for n, p in params.items()
        if n not in resolved_args and p.default is not inspect.Parameter.empty and _jsonable(p.default)
    }
    return Resolved(kind, key, cls, resolved_args, source, defaults, frozenset(builders))


def _resolve_nested(value: Any, shape: str, kind: str) -> Any:
    if shape == "dict":
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping of names to {kind} specs, got {value!r}")
        return {k: resolve(v, kind) for k, v in value.items()}
    if shape == "list":
        if not isinstance(value, list):
            raise ConfigError(f"expected a list of {kind} specs, got {value!r}")
        return [resolve(v, kind) for v in value]
    return resolve(value, kind, partial=shape == "builder")


@functools.lru_cache(maxsize=None)
def _parser(cls: type, skip: frozenset[str]):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, skip=set(skip), fail_untyped=False)
    return parser


def check_plain(cls, label, plain, nested_names, params, partial) -> dict[str, Any]:
    """Type-check plain arguments with jsonargparse; returns the (coerced) given values."""
    checkable = {k: v for k, v in plain.items() if k in params}
    skip = set(nested_names) | {n for n in params if n not in checkable}
    if not checkable:
        return dict(plain)
    try:
        parser = _parser(cls, frozenset(skip))
        namespace = parser.parse_object(checkable)
    except RdbenchError:
        raise
    except Exception as exc:  # jsonargparse's ArgumentError and type-introspection failures
        raise ConfigError(f"{label}: {_one_line(str(exc))}") from None
    out = dict(plain)
    for name in checkable:
        value = namespace.get(name)
        out[name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    from jsonargparse import Namespace

    if isinstance(value, Namespace):
        return {k: _plain(v) for k, v in vars(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    # jsonargparse's restricted types (PositiveInt, ...) are int/float subclasses: store plain
    # numbers so configs and records stay safe-dumpable YAML and JSON.
    if type(value) in (bool, int, float, str):
        return value
    for plain in (bool, int, float, str):
        if isinstance(value, plain):
            return plain(value)
    return value


def _one_line(message: str) -> str:
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    text = " ".join(lines[:2]) if lines else message
    text = text.replace('Parser key "', "argument ").replace('":', ":")
    return text.replace("Option '", "unknown argument '").replace("' is not accepted", "'")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False
