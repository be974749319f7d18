"""TensorBoard event files of a run (config.tensorboard): the scalars of metrics.jsonl, written without TensorFlow.

metrics.jsonl stays the record and the events are a view of it: at every start the trainer deletes the run's event
files and writes again what metrics.jsonl keeps (after its truncation to the restored step), then adds each new
record as it is logged. So a resumed run shows every step once, and events lost to a kill (at most the last
`flush_secs`) are rewritten by the next start. Rewritten events carry the wall time of the rewrite; TensorBoard's
default x axis is the step.

The event files lie in the workdir itself, so `tensorboard --logdir=GRID_WORKDIR` shows each cell as a run named
after the cell. Object stores have no append, so the current event file is always written whole (every
`flush_secs` and at close) and a new one is begun once it holds `segment_bytes`: a flush uploads at most
`segment_bytes`, however long the run. TensorBoard reads every event file of a folder as one run.
"""
from __future__ import annotations

import fnmatch
import os
import struct
import time
from typing import Any, Iterable, Iterator

from asemble_jax import atomic_io, storage
from asemble_jax.errors import UserError

EVENT_FILE_PATTERN = "events.out.tfevents.*"


def _scalars(record: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """(tag, value) of every number of a metrics.jsonl record: `train/loss`, `val/auc`, ... A non-finite value
    comes back from metrics.jsonl as the string "nan" or "inf", which float() reads as the number it was."""
    split = record.get("split", "train")
    for key, value in record.items():
        if key in ("step", "split"):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        yield f"{split}/{key.removeprefix('val_')}", number


class TensorBoardLog:
    """The event files of one run: restart() begins them from metrics.jsonl's records, write() adds a record."""

    def __init__(self, directory: str | os.PathLike, *, enabled: bool = True, flush_secs: float = 30.0,
                 segment_bytes: int = 1 << 20):
        self.enabled = enabled
        if not enabled:
            return
        try:
            from tensorboardX.proto import event_pb2, summary_pb2
            from tensorboardX.record_writer import masked_crc32c
        except ImportError:
            raise UserError("config.tensorboard needs tensorboardX: pip install 'asemble_jax[tensorboard]'") \
                from None
        self._event_pb2, self._summary_pb2, self._crc = event_pb2, summary_pb2, masked_crc32c
        self.directory = os.fspath(directory)
        self.flush_secs, self.segment_bytes = flush_secs, segment_bytes
        self._path: str | None = None  # the event file being written, from restart() on
        self._segment, self._unwritten = bytearray(), False
        self._last_flush = time.monotonic()

    def restart(self, records: Iterable[dict[str, Any]]) -> None:
        """Replaces the run's event files by the events of `records` (metrics.jsonl as it now stands)."""
        if not self.enabled:
            return
        for path in self._event_files():
            storage.remove(path)
        self._started, self._sequence = int(time.time()), 0
        self._new_segment()
        for record in records:
            self._add(record)
        self.flush()

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._add(record)
        if time.monotonic() - self._last_flush >= self.flush_secs:
            self.flush()

    def flush(self) -> None:
        if not self.enabled or not self._unwritten:
            return
        with atomic_io.atomic_open(self._path, "wb") as f:
            f.write(bytes(self._segment))
        self._unwritten, self._last_flush = False, time.monotonic()
        if len(self._segment) >= self.segment_bytes:
            self._new_segment()

    close = flush

    def _new_segment(self) -> None:
        # Names sort in writing order: the time of the restart, then the segment's number.
        self._path = os.path.join(self.directory, f"events.out.tfevents.{self._started:010d}.{self._sequence:05d}")
        self._sequence += 1
        self._segment = bytearray()
        self._append(self._event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _event_files(self) -> list[str]:
        try:
            names = storage.listdir(self.directory)
        except FileNotFoundError:
            return []
        return [os.path.join(self.directory, name) for name in names if fnmatch.fnmatch(name, EVENT_FILE_PATTERN)]

    def _add(self, record: dict[str, Any]) -> None:
        summary = self._summary_pb2.Summary(value=[self._summary_pb2.Summary.Value(tag=tag, simple_value=value)
                                                   for tag, value in _scalars(record)])
        if summary.value:
            self._append(self._event_pb2.Event(wall_time=time.time(), step=int(record["step"]), summary=summary))

    def _append(self, event) -> None:
        """One TFRecord: length, its masked CRC32C, the serialised event, its masked CRC32C."""
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        self._segment += header + struct.pack("<I", self._crc(header)) + data + struct.pack("<I", self._crc(data))
        self._unwritten = True
