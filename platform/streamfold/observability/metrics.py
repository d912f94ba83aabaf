"""Prometheus metrics of an aggregate worker.

:class:`WorkerMetrics` owns the metric objects and its own registry, and offers one cheap
method per thing the worker observes. The health server renders it on ``/metrics``.
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "COMMIT_SECONDS_BUCKETS",
    "CONTENT_TYPE",
    "CommandOutcome",
    "WorkerMetrics",
]

CommandOutcome = Literal["accepted", "rejected", "invalid", "duplicate"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""Content type of :meth:`WorkerMetrics.render` (the Prometheus text format 0.0.4)."""

BATCH_SIZE_BUCKETS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
COMMIT_SECONDS_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

_OUTCOMES: Final[frozenset[str]] = frozenset(("accepted", "rejected", "invalid", "duplicate"))
_PREFIX: Final = "streamfold_worker_"


class WorkerMetrics:
    """Record what an aggregate worker does, in a registry of its own.

    Each instance has its own :class:`~prometheus_client.CollectorRegistry` (never the
    process-wide default), so several workers or tests can hold instances side by side. The
    metrics, all prefixed ``streamfold_worker_``:

    ``commands_total{aggregate, outcome}`` (counter)
        Commands handled, by outcome: ``accepted`` (events appended), ``rejected`` (a domain
        rejection), ``invalid`` (could not be decoded or validated), ``duplicate`` (already
        handled, answered from the dedup record).
    ``dead_letters_total{aggregate, reason}`` (counter)
        Records sent to the dead-letter topic, by reason.
    ``forwarded_total{aggregate}`` (counter)
        Commands that landed on a partition their aggregate does not live on (another
        partitioner, no key, an explicit partition), forwarded to the aggregate's partition.
    ``consumer_lag{topic, partition}`` (gauge)
        Records between the consumer position and the end offset of an assigned partition.
    ``batch_size`` (histogram)
        Commands per committed transaction.
    ``transaction_commit_seconds`` (histogram)
        Wall time of a transaction commit, from 1 ms to 10 s.
    ``transactions_total{result}`` (counter)
        Transactions that ended, ``committed`` or ``aborted``.
    ``restore_records_total{topic, partition}`` (counter)
        Changelog records applied to the state store while restoring a partition.
    ``restore_remaining{topic, partition}`` (gauge)
        Changelog records still to restore before the partition can process commands.
    ``assigned_partitions`` / ``restoring_partitions`` (gauges)
        Partitions assigned to this worker, and how many of them are still restoring.
    ``saga_inputs_total{saga, outcome}`` (counter)
        Saga inputs (events, outcomes of its commands, timers): ``handled``, ``ignored``
        (no instance and not a start, or no handler), ``dead_lettered``.
    ``saga_commands_total{saga}`` (counter)
        Commands sent by a saga.
    ``saga_unhandled_outcomes_total{saga, outcome, code}`` (counter)
        A saga's command rejected or invalid with no outcome handler (also logged, with
        the saga id: never silent).
    ``timers_fired_total{saga}`` (counter) and ``timer_lateness_seconds{saga}`` (histogram)
        Timers fired, and how long after its due time each fired.
    ``handler_events_total{handler, outcome}`` (counter)
        An event handler's events: ``handled``, ``failed`` (an attempt), ``handler_error``
        (dead-lettered, its aggregate parked), ``parked_behind``, ``released``, ``skipped``.
    ``handler_parked_aggregates{handler}`` (gauge)
        Aggregates an event handler holds parked.

    The recording methods are meant for the hot path: a labelled series is created once and
    kept, so a call is a dict lookup and an increment. Label values are validated only when a
    series is first created. Call :meth:`forget_partition` when a partition is revoked, or its
    last lag and restore values stay exported.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._commands = Counter(
            f"{_PREFIX}commands_total",
            "Commands handled, by aggregate and outcome.",
            ("aggregate", "outcome"),
            registry=r,
        )
        self._dead_letters = Counter(
            f"{_PREFIX}dead_letters_total",
            "Records sent to the dead-letter topic, by aggregate and reason.",
            ("aggregate", "reason"),
            registry=r,
        )
        self._forwarded = Counter(
            f"{_PREFIX}forwarded_total",
            "Commands forwarded to their aggregate's partition, by aggregate.",
            ("aggregate",),
            registry=r,
        )
        self._lag = Gauge(
            f"{_PREFIX}consumer_lag",
            "Records behind the end offset of an assigned partition.",
            ("topic", "partition"),
            registry=r,
        )
        self._batch_size = Histogram(
            f"{_PREFIX}batch_size",
            "Commands per committed transaction.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self._commit_seconds = Histogram(
            f"{_PREFIX}transaction_commit_seconds",
            "Wall time of a transaction commit in seconds.",
            buckets=COMMIT_SECONDS_BUCKETS,
            registry=r,
        )
        transactions = Counter(
            f"{_PREFIX}transactions_total",
            "Transactions that ended, by result (committed or aborted).",
            ("result",),
            registry=r,
        )
        self._committed = transactions.labels(result="committed")
        self._aborted = transactions.labels(result="aborted")
        self._restored = Counter(
            f"{_PREFIX}restore_records_total",
            "Changelog records applied while restoring a partition.",
            ("topic", "partition"),
            registry=r,
        )
        self._restore_remaining = Gauge(
            f"{_PREFIX}restore_remaining",
            "Changelog records left to restore for a partition.",
            ("topic", "partition"),
            registry=r,
        )
        self._assigned = Gauge(
            f"{_PREFIX}assigned_partitions",
            "Partitions assigned to this worker.",
            registry=r,
        )
        self._restoring = Gauge(
            f"{_PREFIX}restoring_partitions",
            "Assigned partitions still restoring their state.",
            registry=r,
        )
        self._saga_inputs = Counter(
            f"{_PREFIX}saga_inputs_total",
            "Saga inputs by saga and outcome (handled, ignored, dead_lettered).",
            ("saga", "outcome"),
            registry=r,
        )
        self._saga_commands = Counter(
            f"{_PREFIX}saga_commands_total", "Commands sent by a saga.", ("saga",), registry=r
        )
        self._unhandled = Counter(
            f"{_PREFIX}saga_unhandled_outcomes_total",
            "Rejected or invalid saga commands that no outcome handler took.",
            ("saga", "outcome", "code"),
            registry=r,
        )
        self._timers_fired = Counter(
            f"{_PREFIX}timers_fired_total", "Timers fired, by saga.", ("saga",), registry=r
        )
        self._timer_lateness = Histogram(
            f"{_PREFIX}timer_lateness_seconds",
            "Seconds from a timer's due time to its firing.",
            ("saga",),
            buckets=COMMIT_SECONDS_BUCKETS,
            registry=r,
        )
        self._handler_events = Counter(
            f"{_PREFIX}handler_events_total",
            "Events of an event handler, by outcome.",
            ("handler", "outcome"),
            registry=r,
        )
        self._parked = Gauge(
            f"{_PREFIX}handler_parked_aggregates",
            "Aggregates an event handler holds parked.",
            ("handler",),
            registry=r,
        )
        self._command_children: dict[tuple[str, str], Counter] = {}
        self._dead_letter_children: dict[tuple[str, str], Counter] = {}
        self._forwarded_children: dict[str, Counter] = {}
        self._lag_children: dict[tuple[str, int], Gauge] = {}
        self._restored_children: dict[tuple[str, int], Counter] = {}
        self._remaining_children: dict[tuple[str, int], Gauge] = {}

    def command(self, aggregate: str, outcome: str, n: int = 1) -> None:
        """Count ``n`` commands for ``aggregate`` that ended with ``outcome``.

        Raises :class:`ValueError` for an outcome outside :data:`CommandOutcome`.
        """
        key = (aggregate, outcome)
        child = self._command_children.get(key)
        if child is None:
            if outcome not in _OUTCOMES:
                raise ValueError(f"unknown command outcome {outcome!r}")
            child = self._command_children.setdefault(key, self._commands.labels(*key))
        child.inc(n)

    def dead_letter(self, aggregate: str, reason: str) -> None:
        """Count one record of ``aggregate`` sent to the dead-letter topic for ``reason``.

        Keep ``reason`` to a small fixed set (an error code, not a message): each distinct
        value is a new series.
        """
        key = (aggregate, reason)
        child = self._dead_letter_children.get(key)
        if child is None:
            child = self._dead_letter_children.setdefault(key, self._dead_letters.labels(*key))
        child.inc()

    def forwarded(self, aggregate: str) -> None:
        """Count one command of ``aggregate`` forwarded to its aggregate's partition."""
        child = self._forwarded_children.get(aggregate)
        if child is None:
            child = self._forwarded_children.setdefault(
                aggregate, self._forwarded.labels(aggregate)
            )
        child.inc()

    def saga_input(self, saga: str, outcome: str, commands: int = 0) -> None:
        """Count one input of ``saga`` (``handled``, ``ignored``, ``dead_lettered``) and the
        commands it sent."""
        self._saga_inputs.labels(saga, outcome).inc()
        if commands:
            self._saga_commands.labels(saga).inc(commands)

    def unhandled_outcome(self, saga: str, outcome: str, code: str) -> None:
        """Count a rejected or invalid saga command that no handler took."""
        self._unhandled.labels(saga, outcome, code).inc()

    def timer_fired(self, saga: str, lateness_seconds: float) -> None:
        """Count a fired timer of ``saga`` and how late it fired."""
        self._timers_fired.labels(saga).inc()
        self._timer_lateness.labels(saga).observe(max(0.0, lateness_seconds))

    def handler_event(self, handler: str, outcome: str) -> None:
        """Count one event of an event handler by outcome."""
        self._handler_events.labels(handler, outcome).inc()

    def parked(self, handler: str, aggregates: int) -> None:
        """Set how many aggregates an event handler holds parked."""
        self._parked.labels(handler).set(aggregates)

    def lag(self, topic: str, partition: int, value: int) -> None:
        """Set how many records ``topic``/``partition`` is behind its end offset."""
        key = (topic, partition)
        child = self._lag_children.get(key)
        if child is None:
            child = self._lag_children.setdefault(key, self._lag.labels(topic, str(partition)))
        child.set(value)

    def batch(self, size: int, commit_seconds: float) -> None:
        """Record a committed transaction of ``size`` commands that took ``commit_seconds``."""
        self._batch_size.observe(size)
        self._commit_seconds.observe(commit_seconds)
        self._committed.inc()

    def aborted(self) -> None:
        """Count an aborted transaction."""
        self._aborted.inc()

    def restore_progress(self, topic: str, partition: int, restored: int, remaining: int) -> None:
        """Record restore progress of ``topic``/``partition``.

        ``restored`` is the number of changelog records applied since the previous call (it is
        added to a counter); ``remaining`` is how many are left now (it replaces the gauge).
        """
        key = (topic, partition)
        counter = self._restored_children.get(key)
        gauge = self._remaining_children.get(key)
        if counter is None or gauge is None:
            labels = (topic, str(partition))
            counter = self._restored_children.setdefault(key, self._restored.labels(*labels))
            gauge = self._remaining_children.setdefault(
                key, self._restore_remaining.labels(*labels)
            )
        counter.inc(restored)
        gauge.set(remaining)

    def partitions(self, assigned: int, restoring: int) -> None:
        """Set how many partitions are assigned and how many of them are still restoring."""
        self._assigned.set(assigned)
        self._restoring.set(restoring)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Remove every series labelled with ``topic``/``partition``, after it is revoked.

        Removing a partition that has no series is a no-op.
        """
        key = (topic, partition)
        labels = (topic, str(partition))
        for children, metric in (
            (self._lag_children, self._lag),
            (self._restored_children, self._restored),
            (self._remaining_children, self._restore_remaining),
        ):
            if children.pop(key, None) is not None:
                metric.remove(*labels)

    def render(self) -> bytes:
        """Render every metric in the Prometheus text format (see :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)
