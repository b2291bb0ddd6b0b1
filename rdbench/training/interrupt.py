"""Stopping ``rdbench run`` on SIGTERM or SIGINT: a checkpoint at the next step boundary, a record
that says ``interrupted``, one line, and the exit code of the signal (143, 130).

Schedulers (SLURM, Kubernetes, CI) stop a job with SIGTERM, and Ctrl-C sends SIGINT to the
process group. Left to itself, Lightning stops on SIGTERM after the current training batch by
raising ``SIGTERMException``, a ``SystemExit`` whose code is 0, so a stopped suite would look like
a finished one; and it turns Ctrl-C into ``sys.exit(1)``, which reads like a failed run. Here both
signals take the same path:

* while a run trains (between ``on_fit_start`` and the end of ``fit``), the handler only asks
  Lightning to stop, as its own SIGTERM handler does; Lightning finishes the current batch,
  :class:`~rdbench.training.callbacks.ResumableCheckpoint` writes ``last.ckpt`` at that step
  boundary, and the loop raises ``SIGTERMException``;
* anywhere else (evaluating, between runs, resolving the suite) the handler raises
  :class:`Interrupted` at once: there is no training state to lose.

:func:`rdbench.training.execute.execute` turns either into a record with status
``interrupted`` and re-raises :class:`Interrupted`; the CLI prints one line and exits with
128 + the signal number. A rerun of the same command resumes the run from ``last.ckpt``.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any, Iterator

import lightning as L

from rdbench.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state: dict[str, Any] = {"signum": None, "trainer": None}


def received() -> int | None:
    """The signal that asked the suite to stop, if one did."""
    return _state["signum"]


def _handler(signum: int, frame: Any) -> None:
    if _state["signum"] is not None:  # already stopping: a second signal must not cut the record short
        return
    _state["signum"] = signum
    trainer = _state["trainer"]
    if trainer is not None:
        # Lightning's own flag for "stop after this batch" (what its SIGTERM handler sets); its
        # loops check it after every training batch and raise SIGTERMException.
        trainer._signal_connector.received_sigterm = True
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Handle SIGTERM and SIGINT as above for the duration of the block (the main thread only,
    as Python's signal handlers are)."""
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handler)
    _state.update(signum=None, trainer=None)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _state.update(trainer=None)


class StopAtStep(L.Callback):
    """Tells the handler which trainer is fitting, so that a signal waits for a step boundary."""

    def on_fit_start(self, trainer, pl_module) -> None:
        _state["trainer"] = trainer
        if _state["signum"] is not None:  # a signal that came while the run was being built
            trainer._signal_connector.received_sigterm = True

    def on_fit_end(self, trainer, pl_module) -> None:
        _state["trainer"] = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        _state["trainer"] = None
