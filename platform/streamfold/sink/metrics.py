"""What a sink reports on ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["SinkMetrics"]


class SinkMetrics:
    """What a sink reports on ``/metrics``, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.rows = Counter(
            "streamfold_sink_rows", "Rows inserted", ["table"], registry=self.registry
        )
        self.batches = Counter("streamfold_sink_batches", "Durable batches", registry=self.registry)
        self.skipped = Counter(
            "streamfold_sink_skipped_records",
            "Records that project nothing (undecodable: the worker dead-lettered them)",
            ["topic"],
            registry=self.registry,
        )
        self.retries = Counter(
            "streamfold_sink_target_retries", "Inserts retried", registry=self.registry
        )
        self.target_up = Gauge(
            "streamfold_sink_target_up", "1 while ClickHouse answers", registry=self.registry
        )
        self.insert_seconds = Histogram(
            "streamfold_sink_flush_seconds",
            "Time to make one flush durable",
            registry=self.registry,
        )
        self.acks = Counter("streamfold_sink_acks", "PROJECTED acks sent", registry=self.registry)
        self.replays = Counter(
            "streamfold_sink_replayed_ranges",
            "Unfinished ranges made durable again after a restart: with their batch re-formed"
            " (batch) or alone, each table checked for their rows first (alone)",
            ["how"],
            registry=self.registry,
        )
        self.ack_failures = Counter(
            "streamfold_sink_ack_failures", "PROJECTED acks not delivered", registry=self.registry
        )
        self.target_up.set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
