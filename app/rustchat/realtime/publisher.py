"""The path of an event: this process's connections first, then the rest of the cluster."""

from __future__ import annotations

from typing import Protocol

from rustchat.realtime.events import Event
from rustchat.realtime.hub import Hub


class ClusterLink(Protocol):
    def publish(self, event: Event) -> None: ...


class Publisher:
    def __init__(self, hub: Hub, node_id: str, cluster: ClusterLink | None = None) -> None:
        self.hub = hub
        self.node_id = node_id
        self.cluster = cluster
        self._counter = 0

    def publish(self, event: Event) -> None:
        self._counter += 1
        event.eid = f"{self.node_id}:{self._counter}"
        # Local delivery never waits on Redis: the cluster link queues the event and publishes it
        # from its own task, so a Redis outage cannot stall or fail the request that caused it.
        self.hub.deliver(event)
        if self.cluster is not None:
            self.cluster.publish(event)
