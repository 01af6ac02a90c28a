"""Single-flight across a Ray cluster: one trial builds a stage key, the others wait and then reuse it.

Object stores have no lock primitive, so a small named Ray actor hands out leases per key. The holder
renews its lease from a background thread; a trial killed mid-build (a stopped trial's thread is
abandoned, a node is lost) stops renewing, and its lease lapses after `ttl` seconds so that another
trial takes the key over. A renewal that fails in transit is retried while the lease still holds; a
holder whose lease is lost (refused because it lapsed and was taken, or no renewal got through
before it lapsed) learns it through `held()`, and the pipeline then throws its build away instead of
publishing over the new holder's. Leases cover building only, never downloading.
Local and NFS stores use the store's own file lock instead (released by the kernel on death).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator

import ray
from ray.exceptions import RayError

log = logging.getLogger(__name__)


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
        """Extend a lease its owner still holds; False once it lapsed and someone else took it."""
        holder = self._holders.get(key)
        if holder is not None and holder[0] != owner:
            return False
        return self.acquire(key, owner, ttl)

    def release(self, key: str, owner: str) -> None:
        if self._holders.get(key, ("", 0.0))[0] == owner:
            del self._holders[key]

    def holder(self, key: str) -> str | None:
        found = self._holders.get(key)
        return found[0] if found is not None and found[1] >= time.monotonic() else None


def create_leases(name: str) -> ray.actor.ActorHandle:
    """The lease actor for one search (named, so every trial on every node finds it). Keep the returned
    handle for as long as the search runs: Ray ends a non-detached actor when its creator drops it."""
    return KeyLeases.options(name=name, get_if_exists=True).remote()  # type: ignore[attr-defined]


class _Lease:
    """A held lease, renewed every ttl/3 seconds from a daemon thread until released.

    A renewal that fails in transit (the actor busy or briefly unreachable, a timeout) is retried at
    shorter intervals for as long as the lease is still surely ours, that is until `ttl` after the
    last renewal the actor granted; only then, or when the actor answers that someone else holds it,
    is the lease lost and the build thrown away (cluster-review.md: one failed renewal used to throw
    away an hours-long build).
    """

    def __init__(
        self, leases: ray.actor.ActorHandle, name: str, owner: str, ttl: float, asked_at: float
    ) -> None:
        self.leases, self.name, self.owner, self.ttl = leases, name, owner, ttl
        self.expires = asked_at + ttl  # the actor granted it no earlier than we asked
        self._released, self._lost = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True, name=f"lease-{name}")
        self._thread.start()

    def held(self) -> bool:
        return not self._lost.is_set()

    def _lose(self, why: str) -> None:
        self._lost.set()
        log.warning("lease %s: lost (%s); another trial may build this key now", self.name, why)

    def _renew(self) -> None:
        wait = self.ttl / 3
        while not self._released.wait(wait):
            sent = time.monotonic()
            left = self.expires - sent
            if left <= 0:
                return self._lose(f"no renewal got through in {self.ttl:g} s")
            try:
                renewed = bool(
                    ray.get(
                        self.leases.renew.remote(self.name, self.owner, self.ttl),
                        timeout=min(self.ttl / 3, left),
                    )
                )
            except (RayError, TimeoutError) as exc:
                wait = max(0.05, min(self.ttl / 10, (self.expires - time.monotonic()) / 3))
                log.warning("lease %s: renewal failed (%s); retrying for %.0f s more", self.name, exc, left)
                continue
            if not renewed:
                return self._lose("the actor gave it to another trial")
            self.expires, wait = sent + self.ttl, self.ttl / 3

    def release(self) -> None:
        self._released.set()
        with contextlib.suppress(RayError):
            ray.get(self.leases.release.remote(self.name, self.owner), timeout=self.ttl)


class ActorLock:
    """`lock(stage, key)` for wsss.run_pipeline, backed by the named lease actor; yields the lease."""

    def __init__(self, actor_name: str, ttl: float = 60.0, poll: float = 1.0) -> None:
        self.actor_name, self.ttl, self.poll = actor_name, ttl, poll

    @contextlib.contextmanager
    def __call__(self, stage: str, key: str) -> Iterator[_Lease]:
        leases = ray.get_actor(self.actor_name)
        name, owner = f"{stage}/{key}", uuid.uuid4().hex
        while True:
            asked_at = time.monotonic()
            if ray.get(leases.acquire.remote(name, owner, self.ttl)):
                break
            time.sleep(self.poll)
        lease = _Lease(leases, name, owner, self.ttl, asked_at)
        try:
            yield lease
        finally:
            lease.release()
