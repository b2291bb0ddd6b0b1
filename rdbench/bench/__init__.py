"""``rdbench bench``: the fast paths of rdbench, measured as ratios anyone can rerun.

Modules, one per question:

* :mod:`rdbench.bench.peft` - CMAA against full fine-tuning: step time, peak memory (child
  processes), and the frozen backbone's gradients and optimiser membership;
* :mod:`rdbench.bench.overhead` - an rdbench step in a real Lightning Trainer against a plain loop;
* :mod:`rdbench.bench.diagnostics` - that step with the per-tower gradient diagnostics against without;
* :mod:`rdbench.bench.retrieval` - the vectorised metric against the classic argsort loop;
* :mod:`rdbench.bench.pipeline` - the frozen-feature cache per epoch, and the data loader's
  throughput against the training step's;
* :mod:`rdbench.bench.report` - running them in order and writing ``docs/performance.md``;
* :mod:`rdbench.bench.common` - the shared geometry and the timing rule (interleave, median).

The GPU counterpart is :mod:`rdbench.bench.gpu` (``python -m rdbench.bench.gpu``; it needs CUDA), and
:mod:`rdbench.bench.data_cache` (``python -m rdbench.bench.data_cache``) measures the decoded-image
cache against decoding every epoch.
"""

from rdbench.bench.common import Figure, Settings

__all__ = ["Figure", "Settings"]
