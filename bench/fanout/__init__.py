"""`python -m bench.fanout`: WebSocket fan-out throughput, latency and server CPU per delivery.

N subscriber WebSockets in one channel, spread over P server processes joined through Redis; a
publisher posts at a fixed offered rate that steps up until the servers saturate. Method and
figures: docs/benchmarks.md.
"""
