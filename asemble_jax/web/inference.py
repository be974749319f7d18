"""The one inference worker of the web app: a thread that owns the model, compiled for its one batch shape before
the app serves anything, fed by a bounded queue.

Requests hand it their slices (submit) and wait on a future. The worker takes slices in arrival order and, with
batching on, fills each batch with the slices of as many waiting requests as fit, so that concurrent requests
share the padded batch that would otherwise be mostly padding (asemble_jax/classify.py pads every batch to
batch_size: one compiled program serves every batch). With batching off, a batch holds one request's slices only,
which is what the benchmark compares against. The queue holds at most `max_queued_slices` slices; a request that
would pass it is refused at once (Busy: the app answers 503) rather than left waiting behind work it cannot
overtake.

A slice's class is decided with the threshold chosen on validation (positive when its positive-class probability
is at or above it), which is not always the most probable class; the Grad-CAM maps must explain the class the
page shows, so the slices where the two differ are explained again with that class as the target. Both programs
(predicted class, given class) are compiled at start-up, and `compiles` counts every JAX trace or compilation
after that, which the load test checks stays 0."""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import pathlib
import queue
import threading
from collections.abc import Sequence

import numpy as np
from jax import monitoring

from asemble_jax.classify import Classifier, SliceResult
from asemble_jax.user_inputs import Slice

# JAX's monitoring events for tracing a function and compiling it (jax/_src/dispatch.py).
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration")


class Busy(Exception):
    """The queue cannot take a request's slices now."""


@dataclasses.dataclass
class _Job:
    slices: Sequence[Slice]
    future: concurrent.futures.Future
    results: list[SliceResult | None]
    remaining: int

    @classmethod
    def of(cls, slices: Sequence[Slice]) -> _Job:
        return cls(slices, concurrent.futures.Future(), [None] * len(slices), len(slices))


class InferenceWorker:
    def __init__(self, classifier: Classifier, threshold: float, *, positive_class: int = 1,
                 max_queued_slices: int = 256, batching: bool = True):
        self.classifier, self.threshold, self.positive_class = classifier, threshold, positive_class
        self.max_queued_slices, self.batching = max_queued_slices, batching
        self.compiles = 0
        self.batches = self.slices = 0
        self._queued = 0
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._warm_up()
        monitoring.register_event_duration_secs_listener(self._on_event)
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    def decide(self, result: SliceResult) -> int:
        """The class the page shows: positive at or above the threshold."""
        positive = result.probabilities[self.positive_class] >= self.threshold
        return self.positive_class if positive else 1 - self.positive_class

    def submit(self, slices: Sequence[Slice]) -> concurrent.futures.Future:
        """A future of one SliceResult per slice, in order, whose maps explain decide()'s class; Busy if the
        queue cannot take them."""
        with self._lock:
            if self._queued + len(slices) > self.max_queued_slices:
                raise Busy(f"the server is busy ({self._queued} slices waiting, room for {self.max_queued_slices}); "
                           "try again in a moment")
            self._queued += len(slices)
        job = _Job.of(slices)
        self._queue.put(job)
        return job.future

    def stats(self) -> dict[str, int]:
        return {"batch_size": self.classifier.batch_size, "batching": self.batching, "batches": self.batches,
                "slices": self.slices, "queued_slices": self._queued, "compiles_since_ready": self.compiles}

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        monitoring.unregister_event_duration_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **kwargs) -> None:
        if event in _COMPILE_EVENTS:
            self.compiles += 1

    def _warm_up(self) -> None:
        blank = Slice("warm-up", pathlib.Path("warm-up"), np.zeros((self.classifier.image_size, self.classifier.image_size, 1),
                                                 np.float32))
        list(self.classifier.explain([blank]))
        list(self.classifier.explain([blank], target_class=self.positive_class))

    def _run(self) -> None:
        pending: collections.deque[tuple[_Job, int]] = collections.deque()
        stopping = False
        while not (stopping and not pending):
            if not pending:
                job = self._queue.get()
                if job is None:
                    break
                pending.extend((job, index) for index in range(len(job.slices)))
            while self.batching and len(pending) < self.classifier.batch_size and not stopping:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                else:
                    pending.extend((job, index) for index in range(len(job.slices)))
            first = pending[0][0]
            batch = []
            while pending and len(batch) < self.classifier.batch_size and (self.batching or pending[0][0] is first):
                batch.append(pending.popleft())
            with self._lock:
                self._queued -= len(batch)
            self._explain([(job, index) for job, index in batch if not job.future.cancelled()])

    def _explain(self, batch: list[tuple[_Job, int]]) -> None:
        if not batch:
            return
        try:
            slices = [job.slices[index] for job, index in batch]
            results = list(self.classifier.explain(slices))
            for target in {self.decide(result) for result in results}:
                again = [k for k, result in enumerate(results)
                         if self.decide(result) == target != result.explained_class]
                if again:
                    for k, result in zip(again, self.classifier.explain([slices[k] for k in again],
                                                                        target_class=target)):
                        results[k] = result
        except Exception as error:  # a bug: every request of the batch gets it, the worker goes on
            for job, _ in batch:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        self.batches += 1
        self.slices += len(batch)
        for (job, index), result in zip(batch, results):
            job.results[index] = result
            job.remaining -= 1
            if job.remaining == 0 and not job.future.done():
                job.future.set_result(job.results)
