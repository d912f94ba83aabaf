from __future__ import annotations

import pytest

from streamfold.observability.metrics import WorkerMetrics

pytestmark = pytest.mark.unit


@pytest.fixture
def metrics() -> WorkerMetrics:
    return WorkerMetrics()


def sample(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(f"streamfold_worker_{name}", labels)


def test_commands_are_counted_per_aggregate_and_outcome(metrics: WorkerMetrics) -> None:
    metrics.command("Order", "accepted")
    metrics.command("Order", "accepted", n=4)
    metrics.command("Order", "rejected")
    metrics.command("Cart", "duplicate", n=2)

    assert sample(metrics, "commands_total", aggregate="Order", outcome="accepted") == 5
    assert sample(metrics, "commands_total", aggregate="Order", outcome="rejected") == 1
    assert sample(metrics, "commands_total", aggregate="Cart", outcome="duplicate") == 2
    assert sample(metrics, "commands_total", aggregate="Cart", outcome="accepted") is None


def test_unknown_outcome_is_refused(metrics: WorkerMetrics) -> None:
    with pytest.raises(ValueError, match="unknown command outcome"):
        metrics.command("Order", "lost")  # type: ignore[arg-type]
    assert sample(metrics, "commands_total", aggregate="Order", outcome="lost") is None


def test_dead_letters_are_counted_per_reason(metrics: WorkerMetrics) -> None:
    metrics.dead_letter("Order", "undecodable")
    metrics.dead_letter("Order", "undecodable")
    metrics.dead_letter("Order", "schema_mismatch")

    assert sample(metrics, "dead_letters_total", aggregate="Order", reason="undecodable") == 2
    assert sample(metrics, "dead_letters_total", aggregate="Order", reason="schema_mismatch") == 1


def test_lag_keeps_the_latest_value_per_partition(metrics: WorkerMetrics) -> None:
    metrics.lag("orders.commands", 0, 120)
    metrics.lag("orders.commands", 0, 7)
    metrics.lag("orders.commands", 3, 42)

    assert sample(metrics, "consumer_lag", topic="orders.commands", partition="0") == 7
    assert sample(metrics, "consumer_lag", topic="orders.commands", partition="3") == 42


def test_batch_observes_size_and_commit_time_and_counts_a_commit(metrics: WorkerMetrics) -> None:
    metrics.batch(size=3, commit_seconds=0.004)
    metrics.batch(size=800, commit_seconds=0.2)
    metrics.aborted()

    assert sample(metrics, "batch_size_count") == 2
    assert sample(metrics, "batch_size_sum") == 803
    assert sample(metrics, "batch_size_bucket", le="5.0") == 1
    assert sample(metrics, "batch_size_bucket", le="1000.0") == 2
    assert sample(metrics, "transaction_commit_seconds_bucket", le="0.001") == 0
    assert sample(metrics, "transaction_commit_seconds_bucket", le="0.005") == 1
    assert sample(metrics, "transaction_commit_seconds_bucket", le="10.0") == 2
    assert sample(metrics, "transactions_total", result="committed") == 2
    assert sample(metrics, "transactions_total", result="aborted") == 1


def test_restore_progress_adds_restored_and_sets_remaining(metrics: WorkerMetrics) -> None:
    metrics.restore_progress("orders.changelog", 1, restored=500, remaining=1500)
    metrics.restore_progress("orders.changelog", 1, restored=1500, remaining=0)

    labels = {"topic": "orders.changelog", "partition": "1"}
    assert sample(metrics, "restore_records_total", **labels) == 2000
    assert sample(metrics, "restore_remaining", **labels) == 0


def test_partitions_sets_assigned_and_restoring(metrics: WorkerMetrics) -> None:
    metrics.partitions(assigned=6, restoring=2)
    metrics.partitions(assigned=6, restoring=0)

    assert sample(metrics, "assigned_partitions") == 6
    assert sample(metrics, "restoring_partitions") == 0


def test_forget_partition_removes_only_its_series(metrics: WorkerMetrics) -> None:
    metrics.lag("orders.commands", 0, 10)
    metrics.lag("orders.commands", 1, 20)
    metrics.restore_progress("orders.commands", 0, restored=5, remaining=1)

    metrics.forget_partition("orders.commands", 0)
    metrics.forget_partition("orders.commands", 9)  # never seen: a no-op

    gone = {"topic": "orders.commands", "partition": "0"}
    assert sample(metrics, "consumer_lag", **gone) is None
    assert sample(metrics, "restore_records_total", **gone) is None
    assert sample(metrics, "restore_remaining", **gone) is None
    assert sample(metrics, "consumer_lag", topic="orders.commands", partition="1") == 20

    # Reassigned later, the partition starts from fresh series.
    metrics.restore_progress("orders.commands", 0, restored=3, remaining=0)
    assert sample(metrics, "restore_records_total", **gone) == 3


def test_instances_do_not_share_series() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    first.command("Order", "accepted")

    assert sample(first, "commands_total", aggregate="Order", outcome="accepted") == 1
    assert sample(second, "commands_total", aggregate="Order", outcome="accepted") is None


def test_render_is_prometheus_text_with_every_metric(metrics: WorkerMetrics) -> None:
    metrics.command("Order", "invalid")
    metrics.dead_letter("Order", "undecodable")
    metrics.lag("orders.commands", 0, 1)
    metrics.restore_progress("orders.changelog", 0, restored=1, remaining=0)

    text = metrics.render().decode()

    for name in (
        "commands_total",
        "dead_letters_total",
        "consumer_lag",
        "batch_size",
        "transaction_commit_seconds",
        "transactions_total",
        "restore_records_total",
        "restore_remaining",
        "assigned_partitions",
        "restoring_partitions",
    ):
        assert f"# TYPE streamfold_worker_{name} " in text
    assert 'streamfold_worker_commands_total{aggregate="Order",outcome="invalid"} 1.0' in text
