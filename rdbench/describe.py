"""Every argument of a component, with its type, default and help: ``rdbench list KEY``.

``rdbench list adapter/cmaa`` prints what jsonargparse's help or Lightning's ``--print_config``
would: each ``__init__`` argument with its type annotation, the default a run gets and the
description from the class docstring. For a preset it names the base and the preset's own
values, which become the defaults; a built-in's registered defaults (``Entry.args``, e.g.
``loss/composite``'s ``weighting: weighting/fixed``) count likewise. Arguments annotated with a
kind's contract (``vision_mixer: Builder[Attention]``) show their kind and their default as a
key (``attention/diff``), as a suite would write it.

Descriptions come from jsonargparse's own docstring support (docstring-parser, a dependency of
``jsonargparse[signatures]``): Google-style ``Args:`` sections, numpy or reST parameter lists,
in the class docstring, its ``__init__`` docstring or a base class's (a base's description is
used where the class has none, as jsonargparse does). An argument without one is shown as
undocumented, never given an invented text.

:func:`markdown_reference` renders the same for many keys as Markdown; ``docs/components.md``
is its output for the built-ins and shipped presets (``rdbench list --markdown``), and a test
checks that the committed file is current.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from rdbench.errors import RegistryError
from rdbench.registry import REGISTRY, Entry, class_path_of

#: Shown where a docstring describes no such argument.
UNDOCUMENTED = "(no description in the docstring)"

#: The command that regenerates docs/components.md.
DOCS_COMMAND = "RDBENCH_DISABLE_PLUGINS=1 rdbench list --markdown > docs/components.md"

_SHAPES = {
    "one": "{a} {kind} component (a key or {{name: KEY, ...}})",
    "builder": "{a} {kind} component (a key or {{name: KEY, ...}}) that this one builds where it needs it{passes}",
    "dict": "a mapping of names to {kind} components (keys or {{name: KEY, ...}})",
    "list": "a list of {kind} components (keys or {{name: KEY, ...}})",
}


@dataclass
class Argument:
    """One ``__init__`` argument as a run sees it."""

    name: str
    type: str
    default: str | None  # rendered; None when required
    origin: str  # "class", "registration", or the preset key that sets it
    class_default: str | None = None  # the signature's own default (None: required)
    help: str | None = None
    component: str | None = None  # "a attention component, ..." for component-typed arguments
    kind: str | None = None  # the component kind, for component-typed arguments
    host: bool = False  # passed by the host that builds the component (the kind's contract)


@dataclass
class Description:
    """What ``rdbench list KEY`` shows for one key."""

    entry: Entry
    chain: list[Entry]  # the key's entry, then each base, ending with the entry that has the class
    cls: type
    arguments: list[Argument] = field(default_factory=list)
    takes_kwargs: bool = False
    note: str | None = None  # why descriptions could not be read, if they could not

    @property
    def presets(self) -> list[Entry]:
        return self.chain[:-1]


# -- building a description --------------------------------------------------------------------
def is_key(pattern: str) -> bool:
    """Whether ``pattern`` has the shape of a key ``kind/name`` (rather than a filter)."""
    kind, _, name = pattern.partition("/")
    return bool(kind and name)


def describe(key: str) -> Description:
    """The description of a registered key (an unknown key is the registry's one-line error)."""
    entry = REGISTRY.get(key)
    chain = [entry]
    while chain[-1].is_preset:
        base = REGISTRY.get(chain[-1].base, entry.kind)
        if base in chain:
            raise RegistryError(f"{key}: preset chain loops back to {base.key}")
        chain.append(base)
    cls = chain[-1].load()
    desc = Description(entry=entry, chain=chain, cls=cls)
    _fill_arguments(desc)
    return desc


def _fill_arguments(desc: Description) -> None:
    from rdbench.resolution.spec import _component_params
    from rdbench.suite import merge

    cls = desc.cls
    sig = inspect.signature(cls.__init__)
    params = [p for p in list(sig.parameters.values())[1:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    desc.takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()) and bool(params)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: the signature's own text
        hints = {}
    nested = _component_params(cls)
    helps, desc.note = argument_help(cls)
    host = _host_arguments(desc.entry.kind)

    # The values a run gets before the user's own: registration defaults, then each preset
    # level from the innermost base outwards (as resolution merges them).
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for level in reversed(desc.chain):
        for name, value in level.args.items():
            values[name] = merge(values[name], value) if name in values else value
            origins[name] = "registration" if not level.is_preset else level.key
    for p in params:
        hint = hints.get(p.name, p.annotation)
        shape, kind = nested.get(p.name, (None, None))
        own = None if p.default is inspect.Parameter.empty else _value(p.default, shape, kind)
        arg = Argument(name=p.name, type=type_text(hint), default=own, origin="class", class_default=own,
                       help=helps.get(p.name), kind=kind, host=p.name in host and p.name not in values)
        if shape is not None:
            passes = _host_arguments(kind)
            arg.component = _SHAPES[shape].format(
                a="an" if kind[0] in "aeiou" else "a", kind=kind,
                passes=f", passing {', '.join(passes)}" if passes else "",
            )
        if p.name in values:
            arg.default = _value(values[p.name], shape, kind)
            arg.origin = origins[p.name]
        desc.arguments.append(arg)


def _host_arguments(kind: str) -> list[str]:
    """Arguments the kind's contract class takes by name: the host passes them (``dim``, ...)."""
    contract = REGISTRY.contract(kind)
    if contract is None or "__init__" not in vars(contract):
        return []
    sig = inspect.signature(contract.__init__)
    return [n for n, p in list(sig.parameters.items())[1:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def argument_help(cls: type) -> tuple[dict[str, str], str | None]:
    """Each argument's description from the docstrings, as jsonargparse's help reads them."""
    try:
        import docstring_parser  # noqa: F401  (what jsonargparse reads docstrings with)
    except ImportError:
        return {}, "argument descriptions need docstring-parser (pip install 'jsonargparse[signatures]')"
    helps = dict(_jsonargparse_help(cls))
    missing = [n for n in inspect.signature(cls.__init__).parameters if n not in helps]
    if missing:  # arguments jsonargparse could not take (an unsupported type): read the docstrings
        helps.update({n: h for n, h in _docstring_help(cls).items() if n in missing})
    return helps, None


@functools.lru_cache(maxsize=None)
def _jsonargparse_help(cls: type) -> tuple[tuple[str, str], ...]:
    from jsonargparse import ArgumentParser

    from rdbench.resolution.spec import _component_params

    names = set(inspect.signature(cls.__init__).parameters)
    for skip in (set(), set(_component_params(cls))):
        try:
            parser = ArgumentParser(exit_on_error=False)
            parser.add_class_arguments(cls, skip=skip, fail_untyped=False)
        except Exception:  # a signature jsonargparse cannot take whole: try without components
            continue
        return tuple(
            (action.dest, _one_paragraph(action.help))
            for action in parser._actions
            if action.dest in names and isinstance(action.help, str) and action.help.strip()
            and action.help != argparse.SUPPRESS
        )
    return ()


def _docstring_help(cls: type) -> dict[str, str]:
    import docstring_parser

    out: dict[str, str] = {}
    # jsonargparse's order: base classes first, then ``__init__``, then the class itself
    for source in [*reversed(inspect.getmro(cls)[1:]), cls.__init__, cls]:
        if source is object:
            continue
        try:
            doc = docstring_parser.parse(getattr(source, "__doc__", None) or "")
        except Exception:
            continue
        out.update({p.arg_name: _one_paragraph(p.description) for p in doc.params if p.description})
    return out


def _one_paragraph(text: str) -> str:
    return " ".join(text.split())


# -- rendering types and values ----------------------------------------------------------------
def type_text(hint: Any) -> str:
    """An annotation as a reader writes it: ``list[int] | None``, ``Builder[Attention]``."""
    if hint is inspect.Parameter.empty:
        return "any"
    if isinstance(hint, str):
        return hint
    if isinstance(hint, typing.ForwardRef):  # an annotation its module only imports for type checkers
        return hint.__forward_arg__
    if hint is type(None):
        return "None"
    origin, targs = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(a) for a in targs) + "]"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in targs)
    if origin is not None:
        name = getattr(origin, "__name__", None) or str(origin).replace("typing.", "")
        return f"{name}[{', '.join(type_text(a) for a in targs)}]" if targs else name
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _value(value: Any, shape: str | None, kind: str | None) -> str:
    if shape is not None:
        value = _as_spec(value, shape, kind)
    return value_text(value)


def _as_spec(value: Any, shape: str, kind: str) -> Any:
    """A component-typed value as a suite writes it: classes and bare names become keys."""
    if shape in ("dict", "list"):
        if isinstance(value, dict):
            return {k: _as_spec(v, "one", kind) for k, v in value.items()}
        if isinstance(value, list):
            return [_as_spec(v, "one", kind) for v in value]
        return value
    if isinstance(value, type):
        return getattr(value, "registry_key", None) or class_path_of(value)
    if isinstance(value, str) and "/" not in value:
        return f"{kind}/{value}"
    if isinstance(value, dict) and isinstance(value.get("name"), str) and "/" not in value["name"]:
        return {**value, "name": f"{kind}/{value['name']}"}
    return value


def value_text(value: Any) -> str:
    """A value as YAML flow text, the way a suite line writes it (``null``, ``[0.9, 0.98]``)."""
    import yaml

    if isinstance(value, type):
        return getattr(value, "registry_key", None) or class_path_of(value)
    try:
        text = yaml.safe_dump(_plain(value), default_flow_style=True, width=10**9, sort_keys=False).strip()
    except yaml.YAMLError:
        return repr(value)
    return text[: -len("...")].strip() if text.endswith("\n...") else text


def _plain(value: Any) -> Any:
    if type(value) in (bool, int, float, str) or value is None:
        return value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    for plain in (bool, int, float, str):  # jsonargparse's PositiveInt and friends
        if isinstance(value, plain) and type(value) is not plain:
            return plain(value)
    return value


def _default_text(arg: Argument) -> str:
    notes = []
    if arg.origin == "registration":
        notes.append("registered default")
    elif arg.origin != "class":
        notes.append(f"set by {arg.origin}")
    if arg.origin != "class" and arg.class_default != arg.default:
        notes.append(f"class default {arg.class_default}" if arg.class_default is not None else "class: required")
    if arg.host:
        notes.append("passed by the host")
    text = "required" if arg.default is None else arg.default
    return text + (f"  ({'; '.join(notes)})" if notes else "")


# -- text: ``rdbench list KEY`` ----------------------------------------------------------------
def render_text(desc: Description, width: int = 100) -> str:
    entry = desc.entry
    lines = []
    tags = f"  [{', '.join(entry.tags)}]" if entry.tags else ""
    lines.append(f"{entry.key}  ({entry.source}){tags}")
    lines += _wrap(entry.description, width, "  ")
    lines.append("")
    if desc.presets:
        for level, base in zip(desc.chain, desc.chain[1:]):
            lines.append(f"{level.key} is a preset of {base.key} ({base.source})")
        lines.append(f"class: {class_path_of(desc.cls)}")
        for level in desc.presets:
            lines.append(f"values of {level.key} (the defaults below; a suite's own values go on top):")
            lines += [f"  {name}: {value_text(value)}" for name, value in level.args.items()] or ["  (none)"]
    else:
        lines.append(f"class: {class_path_of(desc.cls)}")
    lines.append("")
    if not desc.arguments:
        lines.append("arguments: none")
    else:
        lines.append(f"arguments (a suite sets them as {{name: {entry.key}, ARGUMENT: VALUE}}):")
        for arg in desc.arguments:
            lines.append(f"  {arg.name}: {arg.type} = {_default_text(arg)}")
            if arg.component:
                lines += _wrap(f"{arg.component}; `rdbench list {arg.kind}/` lists them", width, "      ")
            lines += _wrap(arg.help or UNDOCUMENTED, width, "      ")
        if desc.takes_kwargs:
            lines.append("  **kwargs: further arguments are passed on unchecked")
    if desc.note:
        lines += ["", f"note: {desc.note}"]
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int, indent: str) -> list[str]:
    if not text:
        return []
    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)


def describe_key(pattern: str) -> str | None:
    """``rdbench list PATTERN``: the text of one key, or None where the table applies.

    An exact key is described. A pattern that names no key but filters some keys keeps the
    table; one of a key's shape that matches nothing is the registry's error with the nearest
    names.
    """
    if not is_key(pattern):
        return None
    keys = [e.key for e in REGISTRY.entries()]
    if pattern in keys:
        return render_text(describe(pattern))
    if any(pattern in key for key in keys):
        return None
    REGISTRY.get(pattern)  # raises: unknown key, did you mean ...
    return None  # pragma: no cover - get raised
