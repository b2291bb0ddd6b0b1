"""The order of training samples and their augmentation draws: a function of (seed, epoch),
resumable at any batch.

A run killed mid-epoch and resumed must see the rest of that epoch exactly as an uninterrupted
run would (docs/reliability.md, "Resume is exact"). Two things decide what a training batch
holds, and both are made functions of the run seed and the epoch alone:

* **the order.** :class:`EpochOrder` replays, for epoch ``e``, the draws that a ``DataLoader``
  with ``shuffle=True`` and a generator seeded with the run seed makes over its first ``e + 1``
  epochs under Lightning (one 64-bit worker seed as each epoch's iterator starts, then the
  permutation; Lightning stops at the epoch's length, before the sampler would draw its empty
  remainder), so the batches are those of the shuffled loader rdbench trained with before, and
  the results recorded with it stay reproducible.
  Under DDP each process takes its shard as ``DistributedSampler`` does (seed + epoch).
* **the augmentation.** Each sample carries its epoch; :func:`augmentation_seed` mixes (run seed,
  epoch, caption index) into the seed of the torch generator its transform draws from, so the
  crop or flip of a sample does not depend on the worker count, on prefetching, or on where a
  previous attempt stopped.

Resuming: the state is the epoch and the number of batches the training loop completed in it
(set by :class:`~rdbench.training.callbacks.ResumableCheckpoint` before it saves); the next
iteration skips those batches without loading them. The data module saves it with its own
state (``LightningDataModule.state_dict``, part of every full checkpoint) and hands it to the
loader it builds next, because Lightning builds the training loader, and starts its iterator,
while the optimiser's schedule is configured (``estimated_stepping_batches``), before it
restores the loops, whose ``combined_loader`` state would come too late.
:class:`ResumableLoader` also offers ``state_dict`` / ``load_state_dict`` itself, which tells
Lightning the loader is resumable and serves the case where it builds the loader afterwards.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

_MASK = (1 << 64) - 1


def _splitmix(x: int) -> int:
    """One step of SplitMix64 (Steele et al., 2014): a cheap, well-mixed 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index``'s augmentation in ``epoch`` of a run seeded ``seed`` (63 bits)."""
    return _splitmix(_splitmix(_splitmix(seed & _MASK) ^ epoch) ^ index) >> 1


class EpochOrder(Sampler):
    """Training sample indices, each paired with its epoch: ``(index, epoch)``.

    Args:
        n: Number of training samples (captions).
        batch_size: The loader's batch size (positions are counted in batches).
        seed: The run seed.
        rank, world: This process's shard under DDP (``drop_last`` shards, as rdbench trains).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch = 0
        #: batches of ``epoch`` the training loop completed (set before a checkpoint is saved)
        self.position = 0
        self._skip = 0  # batches the next iteration leaves out (a restored position)
        self._replay: tuple[int, torch.Generator] | None = None  # (next epoch, its generator)

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at each epoch's start (it looks for ``set_epoch`` on the sampler)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n // self.world if self.world > 1 else self.n

    def _generator_at(self, epoch: int) -> torch.Generator:
        """The plain loader's generator as epoch ``epoch`` starts to draw its permutation."""
        if self._replay is None or self._replay[0] > epoch:
            self._replay = (0, torch.Generator().manual_seed(self.seed))
        done, generator = self._replay
        for _ in range(done, epoch):
            self._draws(generator)
        torch.empty((), dtype=torch.int64).random_(generator=generator)  # the iterator's worker seed
        return generator

    def _draws(self, generator: torch.Generator) -> None:
        """One whole epoch of the plain loader: worker seed, permutation."""
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        torch.randperm(self.n, generator=generator)

    def order(self, epoch: int) -> list[int]:
        """Every index of ``epoch`` for this process, in training order."""
        if self.world > 1:
            shard = DistributedSampler(range(self.n), num_replicas=self.world, rank=self.rank, shuffle=True,
                                       seed=self.seed, drop_last=True)
            shard.set_epoch(epoch)
            return list(shard)
        generator = self._generator_at(epoch)
        order = torch.randperm(self.n, generator=generator)
        self._replay = (epoch + 1, generator)
        return order.tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip = self.epoch, self._skip
        self._skip = 0
        for index in self.order(epoch)[skip * self.batch_size:]:
            yield index, epoch

    def state_dict(self) -> dict[str, int]:
        batches = len(self) // self.batch_size
        if self.position >= batches:  # saved at the epoch's end: the next one starts afresh
            return {"epoch": self.epoch + 1, "position": 0}
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self._skip = int(state["epoch"]), int(state["position"])
        self.position = self._skip


class ResumableLoader(DataLoader):
    """A training ``DataLoader`` over an :class:`EpochOrder` whose position Lightning checkpoints."""

    @property
    def order(self) -> EpochOrder:
        sampler = getattr(self.batch_sampler, "sampler", None)
        if not isinstance(sampler, EpochOrder):
            raise TypeError("a ResumableLoader needs an EpochOrder sampler")
        return sampler

    def state_dict(self) -> dict[str, int]:
        return self.order.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order.load_state_dict(state)


def split_items(items: list[int] | list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Indices and (when the items are ``(index, epoch)`` pairs) their epochs, as tensors."""
    if items and isinstance(items[0], (tuple, list)):
        index, epoch = zip(*items)
        return torch.as_tensor(index, dtype=torch.long), torch.as_tensor(epoch, dtype=torch.long)
    return torch.as_tensor(items, dtype=torch.long), None
