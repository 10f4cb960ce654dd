"""A batch loader over an in-memory dataset: seeded shuffling, sharding by rank, resumable.

Images stay uint8 until they reach the training device (augmentation and normalisation run
there, batched: :mod:`beyond_attention.data.augment`), so a batch is one numpy gather. The
order of an epoch is ``torch.randperm(N)`` from a generator seeded with ``seed + epoch``;
under distributed training each rank takes every ``world_size``-th index of the permutation
padded to a multiple of ``world_size`` (the same scheme as
``torch.utils.data.DistributedSampler``), so every rank runs the same number of steps.
:meth:`BatchLoader.iter_from` starts an epoch at a given batch: a resumed run sees exactly
the batches the interrupted one would have.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch

from .base import ImageDataset

Batch = tuple[torch.Tensor, torch.Tensor]


class BatchLoader:
    """Batches ``(images (B, C, H, W) uint8, labels (B,) int64)`` of an :class:`ImageDataset`.

    Args:
        dataset: the data, in memory.
        batch_size: samples per batch on this rank.
        shuffle: a new seeded permutation every epoch (training); else the dataset's order.
        seed: the shuffling seed; epoch ``e`` uses ``seed + e``.
        drop_last: drop a last incomplete batch (training), unless it would leave none;
            :attr:`dropped_per_epoch` says how many samples that leaves out.
        rank, world_size: this process's shard (``rank`` of ``world_size``).
        pad: pad the index list to a multiple of ``world_size`` by repeating its start, so
            all ranks get equally many samples (training); without it each sample is seen
            exactly once across ranks (evaluation).
        workers: background threads gathering batches ahead (0: gather in the caller).
        pin_memory: return page-locked tensors (for asynchronous copies to a GPU).
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        pad: bool | None = None,
        workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if len(dataset) == 0:
            raise ValueError(f"dataset {dataset!r} is empty")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pad = shuffle if pad is None else pad
        self.workers = workers
        self.pin_memory = pin_memory
        self.epoch = 0
        self.drop_last = drop_last and self.shard_size >= batch_size

    @property
    def shard_size(self) -> int:
        """Samples this rank sees per epoch."""
        n, ws = len(self.dataset), self.world_size
        if self.pad:
            return math.ceil(n / ws)
        return len(range(self.rank, n, ws))

    @property
    def dropped_per_epoch(self) -> int:
        """Samples of this rank's shard left out of every epoch by ``drop_last`` (the last
        incomplete batch; a different set of samples each shuffled epoch), 0 without it.
        A trainer reports it: ``N % batch_size`` images are not seen in an epoch."""
        if not self.drop_last:
            return 0
        return self.shard_size - len(self) * self.batch_size

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.shard_size // self.batch_size
        return math.ceil(self.shard_size / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (call before iterating, as with
        ``DistributedSampler``)."""
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, in order."""
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.pad:
            total = math.ceil(n / self.world_size) * self.world_size
            if total > n:
                order = torch.cat([order, order[: total - n]])
        return order[self.rank :: self.world_size]

    def _gather(self, idx: np.ndarray) -> Batch:
        images = torch.from_numpy(self.dataset.images[idx])
        labels = torch.from_numpy(self.dataset.labels[idx])
        if self.pin_memory:
            images, labels = images.pin_memory(), labels.pin_memory()
        return images, labels

    def iter_from(self, start: int = 0) -> Iterator[Batch]:
        """Iterate the current epoch's batches from batch number ``start``."""
        idx = self.indices().numpy()
        chunks = [idx[i * self.batch_size : (i + 1) * self.batch_size]
                  for i in range(start, len(self))]
        if self.workers <= 0:
            for c in chunks:
                yield self._gather(c)
            return
        yield from _prefetch((self._gather(c) for c in chunks), depth=2 * self.workers)

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_from(0)


def _prefetch(source: Iterator[Batch], depth: int) -> Iterator[Batch]:
    """Run ``source`` in a background thread, ``depth`` items ahead."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in source:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as e:  # hand the error to the consumer
            q.put(e)
        q.put(done)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.01)
