"""Optional dependencies: one line naming the extra to install, at the moment one is needed.

rdbench's core (training, evaluation, tables) needs only its default dependencies. A part that
needs more calls :func:`require` before it starts; a missing module is then one line, ``rdbench:
<purpose> needs <module>, which is not installed here: pip install 'rdbench[<extra>]'``, exit
code 2 (an :class:`~rdbench.errors.RdbenchError`), and nothing half-done. Plotting is a default
dependency (matplotlib, for ``compare --plot``, ``report --figures`` and the diagnostics' curves:
figures are what a benchmark's reader looks at first); the check still guards installs made
with ``--no-deps``.
"""

from __future__ import annotations

import importlib.util

from rdbench.errors import RdbenchError

#: module -> the extra of pyproject.toml that installs it
EXTRAS = {"matplotlib": "plot", "tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb",
          "submitit": "slurm", "psycopg": "postgres"}


class MissingDependency(RdbenchError):
    """An optional module a requested feature needs is not installed."""


def require(module: str, purpose: str, extra: str | None = None) -> None:
    """Raise :class:`MissingDependency` unless ``module`` can be imported; the message names
    ``extra`` (by default the one :data:`EXTRAS` lists for the module)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module without a spec
        found = False
    if not found:
        extra = extra or EXTRAS.get(module.split(".")[0])
        how = f"pip install 'rdbench[{extra}]'" if extra else f"pip install {module.split('.')[0]}"
        raise MissingDependency(f"{purpose} needs {module}, which is not installed here: {how}")
