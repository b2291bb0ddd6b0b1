"""User-facing errors: each carries one line that names the file or key and the problem.

The command line prints ``str(error)`` and exits non-zero without a traceback (``--debug`` shows
it). Anything that is not an ``RdbenchError`` is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal


class RdbenchError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class ConfigError(RdbenchError):
    """A suite, preset or override that cannot be read or resolved."""


class RegistryError(RdbenchError):
    """An unknown, duplicated or unloadable component key."""


class PluginImportError(RegistryError):
    """A plugin component whose module failed to import: fails the runs that use it only."""


class DataError(RdbenchError):
    """A dataset root, annotation file or image that cannot be used."""


class RunFailed(RdbenchError):
    """At least one run of a suite failed; its record says why."""

    exit_code = 1


class Interrupted(BaseException):
    """A stop signal (SIGTERM, SIGINT) ended the suite (:mod:`rdbench.training.interrupt`). A
    BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way records it
    as a failed run; the command line prints it in one line and exits 128 + the signal."""

    def __init__(self, signum: int, where: str = ""):
        self.signum, self.where = int(signum), where
        super().__init__(f"interrupted by {signal.Signals(self.signum).name}" + (f" {where}" if where else ""))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
