"""Prometheus metrics: what operators alert on.

Defined once here so every module records into the same series. Under gunicorn,
prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR) merges the workers; gauges
declare how they combine across processes.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_DELIVERED = Counter("rustchat_ws_events_delivered", "Events handed to WebSocket sessions")
EVENTS_DROPPED = Counter("rustchat_ws_events_dropped", "Events or sessions dropped", ["reason"])
WS_CONNECTIONS = Gauge("rustchat_ws_connections", "Live WebSocket connections of this process",
                       multiprocess_mode="livesum")

CLUSTER_PUBLISHED = Counter("rustchat_cluster_published", "Events published to the cluster")
CLUSTER_PUBLISH_FAILURES = Counter("rustchat_cluster_publish_failures", "Failed publishes to the cluster")
CLUSTER_RECEIVED = Counter("rustchat_cluster_received", "Events received from other processes")
CLUSTER_SUBSCRIBER_RECONNECTS = Counter("rustchat_cluster_subscriber_reconnects", "Subscriber reconnects")
CLUSTER_GAPS = Counter("rustchat_cluster_gaps", "Subscription gaps", ["outcome"])
CLUSTER_LAG = Histogram(
    "rustchat_cluster_pubsub_lag_seconds", "Publish-to-deliver lag of cluster events (Redis Pub/Sub Lag)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CLUSTER_NODES = Gauge("rustchat_cluster_nodes", "Live cluster processes seen by this process",
                      multiprocess_mode="max")
