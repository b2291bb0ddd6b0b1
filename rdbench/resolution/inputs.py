"""Inputs a resolved run needs from this machine, and which of them are missing.

A suite names its data and checkpoint indirectly so that one file serves every machine
(docs/datasets.md, "Environment variables"): ``pretrained: env:RDBENCH_CHECKPOINT``, a dataset
``root: null`` that reads ``$RDBENCH_RSITMD_ROOT``, or plain paths. :func:`missing_inputs` looks
at a resolved run's arguments, builds nothing and imports nothing heavy, and returns one line
per input it can see is missing, so that ``rdbench validate`` can warn and ``rdbench run`` can
stop before hours of work fail on the first run:

- an ``env:VAR`` string argument whose variable is unset or empty;
- a dataset whose ``root`` is null and whose class reads an environment variable
  (``env_var``, e.g. ``RDBENCH_RSITMD_ROOT``) that is unset or empty;
- a hub checkpoint (``hub_repo`` / ``hub_file``, the ``backbone/georsclip-*`` and
  ``backbone/remoteclip-*`` presets) that is not in the Hugging Face cache while
  ``HF_HUB_OFFLINE`` is set (online, the run fetches it);
- a path argument that does not exist: ``root``, ``image_dir`` and ``exclude`` (or the names a
  component lists in ``input_paths``; the synthetic dataset lists none, it writes its root),
  and ``pretrained`` when it looks like a path (a ``/`` or a ``.pt``, ``.pth``, ``.bin`` or
  ``.safetensors`` suffix; anything else is an open_clip tag), also after ``env:VAR`` gave it.

Each line names the run, the argument (``slot.argument``, nested components as
``dataset.train.root``) and the problem::

    paper-rsitmd/zero-shot: backbone.pretrained is env:RDBENCH_CHECKPOINT but $RDBENCH_CHECKPOINT is not set

Relative paths are taken from the current folder, as the run takes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - types only
    from rdbench.resolution.run import ResolvedRun

#: Arguments that name an input path (when the component does not list its own ``input_paths``).
PATH_ARGUMENTS = ("root", "image_dir", "exclude", "pretrained")
#: Suffixes of checkpoint files: a ``pretrained`` value with one is a path, not a tag.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
#: Arguments that must name a folder (the others must name a file).
FOLDER_ARGUMENTS = ("root", "image_dir")


def missing_inputs(run: ResolvedRun, environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per input of ``run`` that is missing on this machine (see the module docstring);
    an empty list when everything it can check is there. ``environ`` defaults to ``os.environ``."""
    env = os.environ if environ is None else environ
    name = f"{run.plan.suite}/{run.plan.run}"
    lines: list[str] = []
    for slot, component in run.components.items():
        for where, problem in _component(component, slot, env):
            line = f"{name}: {where} {problem}"
            if line not in lines:
                lines.append(line)
    return lines


def _is_component(value: Any) -> bool:
    # A Resolved (or a stand-in with a class and arguments); Prebuilt objects have no arguments.
    return hasattr(value, "args") and hasattr(value, "cls")


def _component(component: Any, where: str, env: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    if not _is_component(component):
        return
    cls = component.cls
    values = {**(getattr(component, "defaults", None) or {}), **component.args}
    declared = getattr(cls, "input_paths", None)
    paths = tuple(declared) if declared is not None else PATH_ARGUMENTS
    for arg, value in values.items():
        yield from _value(value, f"{where}.{arg}", arg, paths, env)
    yield from _root_variable(cls, values, where, env)
    yield from _hub_file(values, where, env)


def _hub_file(values: Mapping[str, Any], where: str, env: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    repo, filename = values.get("hub_repo"), values.get("hub_file")
    if not (isinstance(repo, str) and isinstance(filename, str)) or values.get("pretrained"):
        return  # no hub file, or a pretrained path given instead of it
    if env.get("HF_HUB_OFFLINE", "").strip().lower() not in ("1", "true", "yes", "on"):
        return  # online: the run fetches what the cache lacks
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, filename, cache_dir=env.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)
    if not isinstance(cached, str):
        yield (f"{where}.hub_file", f"is {repo}/{filename} but it is not in the Hugging Face cache and HF_HUB_OFFLINE "
               f"is set (fetch it with `hf download {repo} {filename}`, or pass --set {where}.pretrained=PATH)")


def _value(value: Any, where: str, arg: str, paths: tuple[str, ...],
           env: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    if _is_component(value):
        yield from _component(value, where, env)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _value(item, f"{where}.{key}", "", paths, env)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _value(item, f"{where}[{index}]", "", paths, env)
    elif isinstance(value, str):
        yield from _string(value, where, arg, paths, env)


def _string(value: str, where: str, arg: str, paths: tuple[str, ...],
            env: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    shown = value
    if value.startswith("env:"):
        var = value[len("env:"):].strip()
        got = env.get(var)
        if got is None:
            yield where, f"is {value} but ${var} is not set"
            return
        if not got.strip():
            yield where, f"is {value} but ${var} is empty"
            return
        value, shown = got.strip(), f"{value} (${var} = {got.strip()})"
    if arg not in paths or not value:
        return
    if arg == "pretrained" and not _looks_like_path(value):
        return  # an open_clip tag (openai, laion2b_s34b_b79k)
    problem = _path_problem(Path(value).expanduser(), arg in FOLDER_ARGUMENTS)
    if problem:
        yield where, f"is {shown} but {problem}"


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.lower().endswith(CHECKPOINT_SUFFIXES)


def _path_problem(path: Path, folder: bool) -> str | None:
    if not path.exists():
        return f"{path} does not exist"
    if folder and not path.is_dir():
        return f"{path} is a file, not a folder"
    if not folder and path.is_dir():
        return f"{path} is a folder, not a file"
    return None


def _root_variable(cls: type, values: Mapping[str, Any], where: str,
                   env: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """A null ``root`` read from the class's ``env_var``: unset, empty, or not a folder."""
    var = getattr(cls, "env_var", None)
    if not isinstance(var, str) or not var or "root" not in values or values["root"]:
        return
    key = getattr(cls, "registry_key", cls.__name__)
    got = (env.get(var) or "").strip()
    if not got:
        state = "is not set" if env.get(var) is None else "is empty"
        yield f"{where}.root", f"is null but ${var} {state} ({key} reads its root from it; or set root)"
        return
    problem = _path_problem(Path(got).expanduser(), folder=True)
    if problem:
        yield f"{where}.root", f"is null, so ${var} = {got} is read, but {problem}"
