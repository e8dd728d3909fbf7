"""The trainer's resumable source of pre-training batches, collated ahead in the background.

:class:`InstanceStream` walks the epochs of :mod:`zhplm.data.epochs`. One optimiser step takes
the next ``global_batch`` positions of the epoch's seeded order; rank r's micro-batch j is the
slice ``[(j * world + r) * micro, +micro)`` of them, so the instances of a step are the same
for any number of ranks, and each rank only ever reads its own. A partial last step of an
epoch is dropped. An index with something stored per instance (the pair kinds') keeps only
this rank's share (:meth:`~zhplm.data.epochs.Epoch.keep_share`).

The main process turns positions into :class:`~zhplm.data.epochs.InstanceRefs` (a few numbers
per instance); cutting the instances from the shards and collating them (masking, ELECTRA's
uniforms, StructBERT's trigrams, padding) runs in ``workers`` processes of a
:class:`torch.utils.data.DataLoader`, each ``prefetch`` micro-batches ahead (``workers=0``:
in the training process, when the step asks). A batch depends only on (seed, epoch, ids), so
the batches are the same for any number of workers, and resuming from (epoch, position) is
exact. The next epoch's index is built in a thread as soon as an epoch starts, so crossing
an epoch boundary does not wait for it.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch.utils.data

from zhplm.data.collate import PretrainBatch, PretrainCollator
from zhplm.data.epochs import Epoch, InstanceReader, InstanceRefs
from zhplm.errors import ConfigError, DataError

__all__ = ["InstanceStream", "check_collation"]


@dataclass
class _Job:
    """One micro-batch to collate, and the stream's position once its step is done."""

    refs: InstanceRefs
    after: tuple[int, int] | None  # (epoch, position), on a step's last micro-batch


class _Collate(torch.utils.data.Dataset):
    """Map-style dataset whose "indices" are jobs: reads and collates one micro-batch.

    It holds no epoch index, only the reader (corpus, settings, seed)."""

    def __init__(self, reader: InstanceReader, collate: PretrainCollator) -> None:
        self.reader = reader
        self.collate = collate

    def __getitem__(self, job: _Job) -> tuple[PretrainBatch, tuple[int, int] | None]:
        instances = self.reader.read(job.refs)
        batch = self.collate(instances, range(len(job.refs)), job.refs.epoch,
                             keys=job.refs.ids.tolist())
        return batch, job.after


def check_collation(workers: int, prefetch: int) -> None:
    """Raise :class:`ConfigError` for a bad ``data.workers`` / ``data.prefetch``."""
    if workers < 0:
        raise ConfigError(f"data.workers={workers}; use 0 (collate in the training process) "
                          "or more worker processes")
    if prefetch < 1:
        raise ConfigError(f"data.prefetch={prefetch}; use 1 or more micro-batches per worker")


_FORK = "fork" if "fork" in multiprocessing.get_all_start_methods() else None


def _ignore_signals(worker_id: int) -> None:  # noqa: ARG001
    """Collation workers leave SIGINT/SIGTERM to the trainer, which checkpoints first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _unwrap(item: Any) -> Any:
    return item


class InstanceStream:
    """A resumable stream of micro-batches for this rank (the trainer's `BatchSource`).

    ``build_epoch(epoch)`` returns the index of an epoch (:func:`zhplm.data.epochs
    .build_epoch`); ``workers`` processes collate ``prefetch`` micro-batches ahead each."""

    def __init__(self, build_epoch: Callable[[int], Epoch], collate: PretrainCollator,
                 micro_batch: int, rank: int, world_size: int, workers: int = 0,
                 prefetch: int = 2) -> None:
        check_collation(workers, prefetch)
        self.build_epoch = build_epoch
        self.collate = collate
        self.micro_batch = micro_batch
        self.rank = rank
        self.world_size = world_size
        self.workers = workers
        self.prefetch = prefetch
        self.epoch = 0
        self.position = 0
        self._epochs: dict[int, Epoch] = {}
        self._building: dict[int, threading.Thread] = {}
        self._built: dict[int, Epoch | BaseException] = {}
        self._lock = threading.Lock()
        self._batches: Iterator[tuple[PretrainBatch, tuple[int, int] | None]] | None = None
        self._micro_batches = 1  # per step: the trainer's grad_accum

    # ---- epochs ---------------------------------------------------------------------------
    def _build_in_background(self, epoch: int) -> None:
        with self._lock:
            if epoch in self._epochs or epoch in self._building:
                return

            def run() -> None:
                try:
                    result: Epoch | BaseException = self._build(epoch)
                except BaseException as err:  # noqa: BLE001 - raised in the caller
                    result = err
                with self._lock:
                    self._built[epoch] = result

            thread = threading.Thread(target=run, name=f"zhplm-epoch-{epoch}", daemon=True)
            self._building[epoch] = thread
            thread.start()

    def _build(self, epoch: int) -> Epoch:
        """The index of ``epoch``, keeping this rank's share only."""
        index = self.build_epoch(epoch)
        index.keep_share(self.rank, self.world_size, self.micro_batch,
                         self._micro_batches)
        return index

    def epoch_index(self, epoch: int, build_next: bool = True) -> Epoch:
        """The index of ``epoch`` (built now, or taken from the thread that built it ahead);
        starts building the next one."""
        if epoch not in self._epochs:
            thread = self._building.pop(epoch, None)
            if thread is not None:
                thread.join()
                with self._lock:
                    result = self._built.pop(epoch)
                if isinstance(result, BaseException):
                    raise result
                self._epochs[epoch] = result
            else:
                self._epochs[epoch] = self._build(epoch)
            for old in [e for e in self._epochs if e < epoch]:
                del self._epochs[old]
        if build_next:
            self._build_in_background(epoch + 1)
        return self._epochs[epoch]

    # ---- the plan of micro-batches ----------------------------------------------------------
    def _jobs(self, micro_batches: int, epoch: int, position: int) -> Iterator[_Job]:
        global_batch = self.micro_batch * self.world_size * micro_batches
        while True:
            index = self.epoch_index(epoch)
            if len(index) < global_batch:
                raise DataError(
                    f"one epoch has only {len(index)} instances, fewer than one global batch "
                    f"of {global_batch}; use a larger corpus or a smaller train.batch_size")
            if position + global_batch > len(index):
                epoch, position = epoch + 1, 0
                continue
            for j in range(micro_batches):
                start = position + (j * self.world_size + self.rank) * self.micro_batch
                refs = index.refs_at(np.arange(start, start + self.micro_batch))
                last = j == micro_batches - 1
                yield _Job(refs, (epoch, position + global_batch) if last else None)
            position += global_batch

    def _start(self, micro_batches: int) -> None:
        self.close()
        if micro_batches != self._micro_batches and self.world_size > 1:
            # the shares kept were cut for steps of another number of micro-batches
            self._join_builders()
            self._epochs.clear()
        self._micro_batches = micro_batches
        reader = self.epoch_index(self.epoch, build_next=False).reader  # no thread at fork
        loader = torch.utils.data.DataLoader(
            _Collate(reader, self.collate), batch_size=None,
            sampler=_Plan(self, micro_batches, self.epoch, self.position),
            num_workers=self.workers, collate_fn=_unwrap,
            prefetch_factor=self.prefetch if self.workers else None,
            worker_init_fn=_ignore_signals if self.workers else None,
            # its own generator: drawing the workers' base seed from torch's global one would
            # shift the model's dropout stream wherever the loader is (re)started (resume)
            generator=torch.Generator().manual_seed(0),
            multiprocessing_context=_FORK if self.workers else None,
        )
        # fork (where there is one): workers share the memory-mapped shards instead of
        # receiving a pickled copy of them
        self._batches = iter(loader)
        self._build_in_background(self.epoch + 1)

    def next_step(self, micro_batches: int) -> list[PretrainBatch]:
        """The micro-batches of this rank for the next optimiser step."""
        if self._batches is None or micro_batches != self._micro_batches:
            self._start(micro_batches)
        assert self._batches is not None
        batches = []
        for _ in range(micro_batches):
            try:
                batch, after = next(self._batches)
            except BaseException:
                self.close()  # the next call starts again from the last finished step
                raise
            batches.append(batch)
            if after is not None:
                self.epoch, self.position = after
        return batches

    def _join_builders(self) -> None:
        for thread in self._building.values():
            thread.join()
        self._building.clear()
        self._built.clear()

    def close(self) -> None:
        """Stop the collation workers (a later `next_step` starts them again)."""
        batches, self._batches = self._batches, None
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.close()
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


class _Plan(torch.utils.data.Sampler):
    """The DataLoader's sampler: the stream's jobs from a position on (never ends)."""

    def __init__(self, stream: InstanceStream, micro_batches: int, epoch: int,
                 position: int) -> None:
        self.stream = stream
        self.args = (micro_batches, epoch, position)

    def __iter__(self) -> Iterator[_Job]:
        return self.stream._jobs(*self.args)  # noqa: SLF001 - the stream's own plan
