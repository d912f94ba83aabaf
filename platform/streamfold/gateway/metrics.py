"""What a gateway reports on ``/metrics``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

if TYPE_CHECKING:
    from streamfold.gateway.bus import Sent

__all__ = ["GatewayMetrics"]


class GatewayMetrics:
    """What a gateway reports on ``/metrics``, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.open_waits = Gauge(
            "streamfold_gateway_open_waits",
            "Waits open right now (requests waiting for a stage)",
            registry=self.registry,
        )
        self.known = Gauge(
            "streamfold_gateway_known_outcomes",
            "Commands whose outcome this replica keeps in memory",
            registry=self.registry,
        )
        self.commands = Counter(
            "streamfold_gateway_commands",
            "Commands answered, by the stage asked for and the stage reached",
            ["wait", "reached"],
            registry=self.registry,
        )
        self.replays = Counter(
            "streamfold_gateway_replays",
            "Commands whose id was known: answered with the first outcome",
            registry=self.registry,
        )
        self.abandoned = Counter(
            "streamfold_gateway_abandoned_waits",
            "Waits released because their client went away",
            registry=self.registry,
        )
        self.unavailable = Counter(
            "streamfold_gateway_unavailable",
            "Commands refused before sending (503)",
            registry=self.registry,
        )

    def answered(self, wait: str, sent: Sent) -> None:
        reached = sent.known.stage.label if sent.known is not None else "sent"
        if not sent.acknowledged:
            reached = "queued"
        self.commands.labels(wait, reached).inc()
        if sent.replay:
            self.replays.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
