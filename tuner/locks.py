"""Single-flight across a Ray cluster: one trial builds a stage key, the others wait and then reuse it.

Object stores have no lock primitive, so a small named Ray actor hands out leases per key. The holder
renews its lease from a background thread; a trial killed mid-build (a stopped trial's thread is
abandoned) stops renewing, and its lease lapses after `ttl` seconds so the others can go on.
Local and NFS stores use the store's own file lock instead (released by the kernel on death).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator

import ray


@ray.remote(num_cpus=0)
class KeyLeases:
    def __init__(self) -> None:
        self._holders: dict[str, tuple[str, float]] = {}

    def acquire(self, key: str, owner: str, ttl: float) -> bool:
        now = time.monotonic()
        holder = self._holders.get(key)
        if holder is None or holder[1] < now or holder[0] == owner:
            self._holders[key] = (owner, now + ttl)
            return True
        return False

    def renew(self, key: str, owner: str, ttl: float) -> bool:
        return self.acquire(key, owner, ttl)

    def release(self, key: str, owner: str) -> None:
        if self._holders.get(key, ("", 0.0))[0] == owner:
            del self._holders[key]


def create_leases(name: str) -> ray.actor.ActorHandle:
    """The lease actor for one search (named, so every trial on every node finds it). Keep the returned
    handle for as long as the search runs: Ray ends a non-detached actor when its creator drops it."""
    return KeyLeases.options(name=name, get_if_exists=True).remote()  # type: ignore[attr-defined]


class ActorLock:
    """`lock(stage, key)` for wsss.run_pipeline, backed by the named lease actor."""

    def __init__(self, actor_name: str, ttl: float = 60.0, poll: float = 1.0) -> None:
        self.actor_name, self.ttl, self.poll = actor_name, ttl, poll

    @contextlib.contextmanager
    def __call__(self, stage: str, key: str) -> Iterator[None]:
        leases = ray.get_actor(self.actor_name)
        name, owner = f"{stage}/{key}", uuid.uuid4().hex
        while not ray.get(leases.acquire.remote(name, owner, self.ttl)):
            time.sleep(self.poll)
        done = threading.Event()

        def renew() -> None:
            while not done.wait(self.ttl / 3):
                ray.get(leases.renew.remote(name, owner, self.ttl))

        thread = threading.Thread(target=renew, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            ray.get(leases.release.remote(name, owner))
