"""Watchers of the catalog: each has a bounded queue of changes, filled as loads publish
them; None in a queue ends its watch."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable

from token_fetcher.snapshot import Change

__all__ = ["WATCH_QUEUE_CAPACITY", "Subscribers", "Subscription"]

# How many changes a watcher may fall behind before its watch ends.
WATCH_QUEUE_CAPACITY = 10000


class Subscription:
    """A watcher's queue of changes; ``overflowed`` when it fell too far behind."""

    def __init__(self, cluster: str, capacity: int = WATCH_QUEUE_CAPACITY) -> None:
        self.cluster = cluster
        self.queue: queue.Queue[Change | None] = queue.Queue(capacity)
        self.overflowed = False

    def offer(self, change: Change | None) -> None:
        try:
            self.queue.put_nowait(change)
        except queue.Full:
            self.overflowed = True


class Subscribers:
    """Every current subscription; thread-safe."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._lock = threading.Lock()

    def add(self, cluster: str) -> Subscription:
        """A new subscription to ``cluster``'s changes ("": every cluster's)."""
        subscription = Subscription(cluster)
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def remove(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    def publish(self, changes: Iterable[Change]) -> None:
        with self._lock:
            subscriptions = list(self._subscriptions)
        for change in changes:
            for subscription in subscriptions:
                if not subscription.cluster or subscription.cluster == change.cluster:
                    subscription.offer(change)

    def end_all(self) -> None:
        """End every current watch."""
        with self._lock:
            for subscription in self._subscriptions:
                subscription.offer(None)
