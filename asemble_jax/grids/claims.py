"""Claim files: several workers share one grid workdir (one machine or a shared filesystem) and never run the same
cell at once, and a worker that dies does not hold its cell for ever.

A cell's claims are files `claim.<generation>` in the cell's folder. A worker owns the cell while its claim has the
highest generation and its modification time is fresh: a heartbeat thread touches it every `interval` seconds.
To take a cell a worker creates the next generation with os.open(O_CREAT | O_EXCL), which exactly one worker can
do: a free cell (no claim) is taken with generation 0, a stale one (highest claim untouched for `stale_after`
seconds: its worker died) with the generation above. So two workers that both judge a claim stale race for the
same new file, and one of them loses; and a worker that was only paused, not dead, finds on its next heartbeat
that a higher generation exists and knows that it lost the cell.

On an object store (a grid workdir at gs://...) the same files are objects, but creating one only if it is absent
takes two requests here (storage.create_exclusive), so two workers could both take a cell: the runner therefore
lets one worker at a time run a grid there, with a claim on the grid workdir itself (grid_claim). Several workers
on one grid on a store belong to a scheduler that hands out the cells (the distributed-grid engine), not to
claims.

Staleness compares the claim's modification time (set by the filesystem) with this machine's clock, so on a
shared filesystem `stale_after` must exceed the clock skew between machines as well as the heartbeat interval.
A claim also names the processes holding it (the runner, and the cell subprocess that adopts it): when they ran
on this machine and none of them is alive any more, the claim is stale at once, so a runner restarted right
after a crash resumes the cell instead of waiting `stale_after` for it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import threading
import time
from typing import Callable

from asemble_jax import atomic_io, storage
from asemble_jax.workdir import Workdir

_CLAIM = re.compile(r"claim\.(\d+)")
DEFAULT_STALE_AFTER_S = 600.0
DEFAULT_HEARTBEAT_S = 30.0


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclasses.dataclass(frozen=True)
class ClaimState:
    """The newest claim of a cell: none, held by a live worker, or stale (its worker stopped touching it)."""
    generation: int | None
    age_s: float | None
    owner: str | None
    stale: bool

    @property
    def held(self) -> bool:
        return self.generation is not None and not self.stale


def _generations(directory: str) -> list[int]:
    try:
        names = storage.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for m in map(_CLAIM.fullmatch, names) if m)


def _path(directory: str, generation: int) -> str:
    return Workdir(directory).claim(generation)


def _payload(path: str) -> dict:
    try:
        with storage.open(path) as f:
            return json.load(f)
    except (OSError, ValueError):  # being written, or removed meanwhile
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holders_gone(payload: dict) -> bool:
    """True when the claim's holders ran on this machine and none of them is alive."""
    pids = payload.get("pids") or []
    return payload.get("host") == socket.gethostname() and bool(pids) and not any(_alive(int(p)) for p in pids)


def inspect(directory: str, *, stale_after: float = DEFAULT_STALE_AFTER_S,
            clock: Callable[[], float] = time.time) -> ClaimState:
    for _ in range(3):  # the newest claim can be released between listing and stat: look again
        generations = _generations(directory)
        if not generations:
            return ClaimState(None, None, None, False)
        path = _path(directory, generations[-1])
        try:
            age = clock() - storage.mtime(path)
        except FileNotFoundError:
            continue
        payload = _payload(path)
        return ClaimState(generations[-1], age, payload.get("owner"), age > stale_after or _holders_gone(payload))
    return ClaimState(None, None, None, False)


class Claim:
    """A claim this process holds. `lost` is set when another worker took the cell over (a higher generation
    appeared, or this claim file vanished): whatever this worker does then must not be recorded."""

    def __init__(self, directory: str, generation: int):
        self.directory = directory
        self.generation = generation
        self.path = _path(directory, generation)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def adopt(cls, path: str) -> Claim:
        """The claim at `path`, held on behalf of this process (a cell subprocess adopting its runner's claim):
        this process joins the claim's holders, so that the claim stays live while it runs, even if the runner is
        gone."""
        match = _CLAIM.fullmatch(os.path.basename(path))
        if not match:
            raise ValueError(f"{path} is not a claim file")
        payload = _payload(path)
        if payload:
            payload["pids"] = sorted(set(payload.get("pids", [])) | {os.getpid()})
            # Rewritten in place under the same name: the generation, and so the ownership, do not change.
            atomic_io.write_text(path, json.dumps(payload))
        return cls(storage.dirname(path), int(match.group(1)))

    def check(self) -> bool:
        """Touches the claim; False (and `lost` set) when this process no longer owns the cell."""
        if not self.lost.is_set():
            try:
                storage.touch(self.path)
            except FileNotFoundError:
                self.lost.set()
            if any(g > self.generation for g in _generations(self.directory)):
                self.lost.set()
        return not self.lost.is_set()

    def start_heartbeat(self, interval: float = DEFAULT_HEARTBEAT_S,
                        on_lost: Callable[[], None] | None = None) -> None:
        def beat():
            while not self._stop.wait(interval):
                if not self.check():
                    if on_lost is not None:
                        on_lost()
                    return

        self._thread = threading.Thread(target=beat, name=f"heartbeat {self.path}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stops the heartbeat and removes the claim file unless another worker has taken the cell over."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if not self.lost.is_set():
            storage.remove(self.path)


def try_claim(directory: str, *, stale_after: float = DEFAULT_STALE_AFTER_S, owner: str | None = None,
              clock: Callable[[], float] = time.time) -> Claim | None:
    """Takes the cell in `directory` if it is free or its claim is stale; None when a live worker holds it or
    another worker won the race for it."""
    storage.makedirs(directory)
    state = inspect(directory, stale_after=stale_after, clock=clock)
    if state.held:
        return None
    generation = 0 if state.generation is None else state.generation + 1
    payload = {"owner": owner or worker_id(), "host": socket.gethostname(), "pids": [os.getpid()],
               "claimed": time.time()}
    if not storage.create_exclusive(_path(directory, generation), json.dumps(payload).encode("utf-8")):
        return None
    for older in _generations(directory):
        if older < generation:
            storage.remove(_path(directory, older))
    return Claim(directory, generation)
