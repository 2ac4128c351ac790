"""Named fault points, so tests can crash or starve a writer at an exact step.

Library code marks a step with `faults.point("store.manifest.renamed")`. Nothing is armed in
normal use, and then a point is one truthiness check of an empty dict. A test arms a point
on the one explicit registry, `faults.REGISTRY`, with an action:

    with faults.REGISTRY.armed("store.shard.written", faults.crash(after=2)):
        ingest(config)          # the third shard write "dies" here

Actions: `crash` (raise SimulatedCrash, a BaseException, so no `except Exception` in the
library can swallow it), `die` (os._exit: no finally blocks, no atexit, no flushing; use
in a forked child or a subprocess), `sigkill` (a real SIGKILL to this process), and
`disk_full` (OSError ENOSPC, what a full disk raises), and `sleep` (a slow step).

A test that runs the library in other processes (Ray workers on a cluster, a submitted job)
arms points there through the environment, which those processes inherit or receive in a
Ray runtime_env: `MMINDEX_FAULTS="encode.batch=sleep:0.3"` (`;` between points; the number
is the seconds of `sleep`, the `after` of the other actions). It is read once, on import."""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Action = Callable[[str], None]  # called with the point's name when the point is reached

# Every point the library marks, so a test can iterate them and a typo fails loudly.
POINTS = (
    "store.shard.written",  # a Parquet shard is on disk, no manifest names it yet
    "store.write.midway",  # half of a FAISS file or manifest is in its temporary file
    "store.write.synced",  # the temporary file is complete and fsynced, not yet renamed
    "store.manifest.renamed",  # the new generation is live, garbage not yet collected
    "store.committed",  # garbage collected: the commit is complete
)
# Steps of the encoder workers, which may run in other processes than the writer.
WORKER_POINTS = (
    "encode.batch",  # a batch is decoded, its model forward pass about to run
)


class SimulatedCrash(BaseException):
    """Raised by `crash()`: the process 'died' at a fault point."""


class FaultRegistry:
    """The armed points of this process. Empty unless a test arms one."""

    def __init__(self) -> None:
        self._actions: dict[str, Action] = {}

    def arm(self, name: str, action: Action) -> None:
        if name not in POINTS + WORKER_POINTS:
            raise KeyError(f"unknown fault point {name!r}; known: "
                           f"{', '.join(POINTS + WORKER_POINTS)}")
        self._actions[name] = action

    def disarm(self, name: str | None = None) -> None:
        """Disarm one point, or every point when no name is given."""
        if name is None:
            self._actions.clear()
        else:
            self._actions.pop(name, None)

    @contextmanager
    def armed(self, name: str, action: Action) -> Iterator[None]:
        self.arm(name, action)
        try:
            yield
        finally:
            self.disarm(name)

    def hit(self, name: str) -> None:
        action = self._actions.get(name)
        if action is not None:
            action(name)


REGISTRY = FaultRegistry()


def point(name: str) -> None:
    """Mark a step where a test may inject a fault. Costs a dict check when nothing is armed."""
    if REGISTRY._actions:
        REGISTRY.hit(name)


def _after(skip: int, fire: Callable[[str], None]) -> Action:
    """An action that lets the point pass `skip` times, then fires on every later visit."""
    visits = {"count": 0}

    def action(name: str) -> None:
        visits["count"] += 1
        if visits["count"] > skip:
            fire(name)

    return action


def crash(after: int = 0) -> Action:
    def fire(name: str) -> None:
        raise SimulatedCrash(name)

    return _after(after, fire)


def die(after: int = 0, status: int = 137) -> Action:
    return _after(after, lambda name: os._exit(status))


def sigkill(after: int = 0) -> Action:
    return _after(after, lambda name: os.kill(os.getpid(), signal.SIGKILL))


def disk_full(after: int = 0) -> Action:
    def fire(name: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return _after(after, fire)


def sleep(seconds: float) -> Action:
    return lambda name: time.sleep(seconds)


_FROM_ENVIRONMENT = {"sleep": lambda arg: sleep(float(arg)), "crash": lambda arg: crash(int(arg)),
                     "die": lambda arg: die(int(arg)), "sigkill": lambda arg: sigkill(int(arg)),
                     "disk_full": lambda arg: disk_full(int(arg))}


def arm_from_environment(registry: FaultRegistry, value: str) -> None:
    """Arm `point=action:arg;...`, the format of $MMINDEX_FAULTS."""
    for item in filter(None, (part.strip() for part in value.split(";"))):
        try:
            name, spec = item.split("=", 1)
            action, _, arg = spec.partition(":")
            registry.arm(name.strip(), _FROM_ENVIRONMENT[action.strip()](arg or "0"))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"MMINDEX_FAULTS: cannot arm {item!r} ({exc}); the format is "
                             f"point=action:arg, actions {', '.join(_FROM_ENVIRONMENT)}") from exc


if os.environ.get("MMINDEX_FAULTS"):
    arm_from_environment(REGISTRY, os.environ["MMINDEX_FAULTS"])
