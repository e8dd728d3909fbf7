"""Dynamic batching: a queue of requests per model and one worker thread that runs them.

A request (`submit`) is a list of inputs, its cost (tokens after tokenization) and the
options it runs with; it gets a `concurrent.futures.Future` of one result per input. The
worker takes the oldest request, then every later request with the same options while the
batch stays within `max_batch_tokens` and `max_batch_requests`, runs the model once on the
concatenated inputs and hands each request its slice of the results. Requests with other
options keep their place in the queue. The oldest request is always taken, however costly,
so nothing waits forever.

When a batch fails, each of its requests is run again on its own: one bad request (say a
text without [MASK]) fails alone and its neighbours are answered.

Independent of the web framework: an `asyncio` caller awaits `asyncio.wrap_future(f)`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("zhplm")

# run(inputs, options) -> one result per input
Runner = Callable[[list[Any], dict[str, Any]], Sequence[Any]]
# on_batch(requests, inputs, tokens, seconds)
BatchObserver = Callable[[int, int, int, float], None]


class QueueClosed(RuntimeError):
    """The queue is shutting down and takes no new requests."""


@dataclass
class Job:
    """One request: its inputs, their cost in tokens, its options and its future."""

    inputs: list[Any]
    cost: int
    options: dict[str, Any]
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> Hashable:
        """Requests batch together only when their options are equal."""
        return tuple(sorted((k, repr(v)) for k, v in self.options.items()))


class BatchQueue:
    """A model's request queue and its worker thread (`start`, `submit`, `close`)."""

    def __init__(self, run: Runner, *, max_batch_tokens: int = 16384,
                 max_batch_requests: int = 32, name: str = "model",
                 on_batch: BatchObserver | None = None, max_wait: float = 0.002) -> None:
        """`max_wait`: seconds the worker waits, once a request is queued, for more to join
        its batch (requests arrive one by one; without a wait batches stay at 1-3)."""
        if max_batch_tokens < 1 or max_batch_requests < 1:
            raise ValueError("max_batch_tokens and max_batch_requests must be >= 1")
        self.run = run
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_requests = max_batch_requests
        self.name = name
        self.on_batch = on_batch
        self.max_wait = max_wait
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._busy = 0  # requests in the batch being computed
        self._thread: threading.Thread | None = None

    # -- caller side -------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=f"zhplm-batch-{self.name}",
                                            daemon=True)
            self._thread.start()

    def submit(self, inputs: Sequence[Any], cost: int, options: dict[str, Any] | None = None
               ) -> Future:
        """Queue a request; its future gets the list of results (or the run's exception)."""
        job = Job(list(inputs), max(int(cost), 1), dict(options or {}))
        with self._cond:
            if self._closing:
                raise QueueClosed(f"{self.name}: the server is shutting down")
            self._jobs.append(job)
            self._cond.notify()
        return job.future

    @property
    def depth(self) -> int:
        """Requests waiting (not yet taken into a batch)."""
        with self._cond:
            return len(self._jobs)

    @property
    def alive(self) -> bool:
        """Whether the worker thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float | None = None) -> bool:
        """Take no new requests, let the worker finish every queued one, and wait for it.
        Returns whether the queue drained within `timeout`."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is None:
            self._fail_pending(QueueClosed(f"{self.name}: the worker never started"))
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- worker side -------------------------------------------------------------------
    def _take(self) -> list[Job] | None:
        """The next batch, blocking while the queue is empty; None once closed and drained."""
        with self._cond:
            while not self._jobs:
                if self._closing:
                    return None
                self._cond.wait()
            deadline = time.monotonic() + self.max_wait
            while len(self._jobs) < self.max_batch_requests and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            first = self._jobs.popleft()
            if not first.future.set_running_or_notify_cancel():
                return []  # the caller gave up (client gone): skip it
            batch, tokens, kept = [first], first.cost, deque()
            while self._jobs and len(batch) < self.max_batch_requests:
                job = self._jobs.popleft()
                if job.key == first.key and tokens + job.cost <= self.max_batch_tokens:
                    if not job.future.set_running_or_notify_cancel():
                        continue
                    batch.append(job)
                    tokens += job.cost
                else:
                    kept.append(job)
            kept.extend(self._jobs)
            self._jobs = kept
            self._busy = len(batch)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if not batch:
                continue
            try:
                self._run_batch(batch)
            except BaseException as exc:  # never let the worker die with requests waiting
                logger.exception("batch worker %s failed", self.name)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
            finally:
                with self._cond:
                    self._busy = 0

    def _run_batch(self, batch: list[Job]) -> None:
        inputs = [x for job in batch for x in job.inputs]
        started = time.perf_counter()
        try:
            results = list(self.run(inputs, batch[0].options))
            if len(results) != len(inputs):
                raise RuntimeError(f"{self.name}: the model gave {len(results)} results for "
                                   f"{len(inputs)} inputs")
        except Exception as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            for job in batch:  # isolate the bad request: each runs alone
                self._run_batch([job])
            return
        if self.on_batch is not None:
            self.on_batch(len(batch), len(inputs), sum(j.cost for j in batch),
                          time.perf_counter() - started)
        start = 0
        for job in batch:
            job.future.set_result(results[start : start + len(job.inputs)])
            start += len(job.inputs)

    def _fail_pending(self, exc: BaseException) -> None:
        with self._cond:
            jobs, self._jobs = list(self._jobs), deque()
        for job in jobs:
            job.future.set_exception(exc)
