"""Prometheus metrics: what operators alert on.

Defined once here so every module records into the same series. Under gunicorn,
prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR) merges the workers; gauges
declare how they combine across processes.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# No `*_created` series: they double the output and nothing here alerts on them (multiprocess
# mode never has them anyway, so this keeps `rustchat serve` and gunicorn alike).
disable_created_metrics()

EVENTS_DELIVERED = Counter("rustchat_ws_events_delivered", "Events handed to WebSocket sessions")
EVENTS_DROPPED = Counter("rustchat_ws_events_dropped", "Events or sessions dropped", ["reason"])
WS_INVALID_FRAMES = Counter("rustchat_ws_invalid_frames",
                            "Client WebSocket frames refused at the edge, by the error id answered", ["reason"])
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
CLUSTER_DROPPED = Counter("rustchat_cluster_messages_dropped",
                          "Cluster messages and replay-log entries refused at the edge, by reason", ["reason"])
CLUSTER_TASK_RESTARTS = Counter("rustchat_cluster_task_restarts",
                                "Cluster link tasks (publisher, subscriber, heartbeat) restarted after ending", ["task"])
CLUSTER_NODES = Gauge("rustchat_cluster_nodes", "Live cluster processes seen by this process",
                      multiprocess_mode="livemax")

# -- HTTP (api/metrics_routes.py records these) ----------------------------------------------------
# Latency buckets around the 500 ms p99 alert threshold.
HTTP_REQUEST_DURATION = Histogram(
    "rustchat_http_request_duration_seconds",
    "HTTP request duration by route template, method and status (WebSocket upgrades excluded)",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
BODY_TOO_LARGE = Counter("rustchat_http_body_too_large", "Requests refused with 413 for their body size",
                         ["category"])

# -- WebSocket connections, sampled from the hub every second --------------------------------------
# rustchat_ws_connections (above) is the node's total: summed over the live gunicorn workers.
WS_PROCESS_CONNECTIONS = Gauge(
    "rustchat_ws_process_connections", "Live WebSocket connections of one process (pid label under gunicorn)",
    ["node_id"], multiprocess_mode="liveall",
)

# -- database pool, per process (db/pool.py PoolStats), sampled every second -----------------------
DB_POOL_SIZE = Gauge("rustchat_db_pool_size", "Open pool connections (in use + idle)",
                     multiprocess_mode="liveall")
DB_POOL_IN_USE = Gauge("rustchat_db_pool_in_use", "Pool connections in use (or being opened)",
                       multiprocess_mode="liveall")
DB_POOL_IDLE = Gauge("rustchat_db_pool_idle", "Idle pool connections", multiprocess_mode="liveall")
DB_POOL_WAITING = Gauge("rustchat_db_pool_waiting", "Requests waiting for a pool connection",
                        multiprocess_mode="liveall")
DB_POOL_MAX = Gauge("rustchat_db_pool_max", "Pool maximum (RUSTCHAT_DB_POOL__MAX_CONNECTIONS)",
                    multiprocess_mode="liveall")
DB_POOL_SATURATION = Gauge("rustchat_db_pool_saturation", "Pool connections in use / pool maximum (0..1)",
                           multiprocess_mode="liveall")
DB_POOL_ACQUIRE_TIMEOUTS = Counter("rustchat_db_pool_acquire_timeouts",
                                   "Pool acquires that timed out (answered 503 db.pool.timeout)")

# -- files ----------------------------------------------------------------------------------------
FILES_UPLOADED = Counter("rustchat_files_uploaded", "Files stored")
FILE_UPLOAD_BYTES = Counter("rustchat_file_upload_bytes", "Bytes of files stored")
