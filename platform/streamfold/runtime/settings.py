"""Worker settings: typed, documented, read from the environment at the process edge.

Every field maps to ``STREAMFOLD_WORKER_<FIELD>`` (nested RocksDB options as
``STREAMFOLD_WORKER_ROCKSDB__BLOCK_CACHE_MB``) and to a Helm value. Precedence: environment,
then the topology file's ``worker:`` section, then these defaults.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamfold.state.rocksdb import RocksDBOptions

__all__ = ["TEST_HOOK_SETTINGS", "WorkerSettings"]

#: Settings for tests only: the chart never offers them.
TEST_HOOK_SETTINGS = frozenset({"pause_in_transaction_file"})


class WorkerSettings(BaseSettings):
    """How one worker process runs."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMFOLD_WORKER_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    #: Stable per instance (a StatefulSet pod name): the transactional id is
    #: ``<group>.<instance_id>``, so a restarted instance fences its zombie.
    instance_id: str = Field(default_factory=socket.gethostname)
    #: Prepended to every topic and to the consumer group (a deployment's namespace, e.g.
    #: ``staging.``); empty by default.
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    state_dir: Path = Path(".streamfold/state")
    #: Exactly-once (the default): every batch is one Kafka transaction. Off: at-least-once
    #: (offsets committed after the batch's records are acknowledged; a crash may repeat a
    #: batch's outputs); for comparison and for topologies that can tolerate it.
    exactly_once: bool = True
    #: Longest time a transaction stays open; a batch also commits when the consumer has
    #: nothing more to give right now (low latency at low load) or at ``max_batch``.
    commit_interval_ms: int = Field(default=100, ge=1)
    max_batch: int = Field(default=1000, ge=1)
    #: Least time between the end of one transaction and the start of the next. The broker
    #: writes a transaction's commit markers after it has answered the commit; a next
    #: transaction that registers its partitions before they are written is refused
    #: (CONCURRENT_TRANSACTIONS) and librdkafka retries only 20 ms later. Measured on a
    #: local broker: back-to-back transactions of 24 partitions took 49 ms, with a 3 ms gap
    #: 20 ms. Commands that arrive during the gap join the transaction.
    transaction_gap_ms: float = Field(default=3.0, ge=0)
    #: Recent command ids remembered per aggregate (see streamfold.state.entry).
    idempotency_window: int = Field(default=32, ge=0)
    #: Times a decide/evolve that raises (other than a rejection) is retried before the
    #: command is dead-lettered.
    handler_retries: int = Field(default=2, ge=0)
    #: Use ``instance_id`` as ``group.instance.id`` (static membership: a quick restart
    #: keeps its partitions without a rebalance).
    static_membership: bool = False
    #: How soon the group notices a dead worker and gives its partitions to the others
    #: (who then fence its open transaction: runtime/failover.py): failover takes about this
    #: plus a second. 6 s is the least a broker accepts by default
    #: (``group.min.session.timeout.ms``); where the broker allows less, 2 s fails over in
    #: about 3 s (benchmarks/reports/faults.md). Heartbeats go every quarter of it.
    session_timeout_ms: int = Field(default=6_000, ge=1000)
    #: Keep warm copies of the stores of the partitions this worker does not own, following
    #: their changelogs (streamfold.state.standby): a survivor then takes over a dead
    #: worker's partitions without a full restore. Costs the whole topology's state on every
    #: worker: for small groups.
    standby_stores: bool = False
    max_poll_interval_ms: int = Field(default=60_000, ge=1000)
    transaction_timeout_ms: int = Field(default=30_000, ge=1000)
    #: Health, readiness and Prometheus metrics; 0 picks a free port, -1 disables.
    health_port: int = 8080
    #: 127.0.0.1 by default; the chart sets 0.0.0.0, where probes come from outside the pod.
    health_host: str = "127.0.0.1"
    restore_batch: int = Field(default=10_000, ge=1)
    #: Changelog prefetch while restoring. The RSS peak during a restore follows it; the rate
    #: hardly does (see streamfold.state.restore). Memory is returned to the OS once
    #: restores end.
    restore_prefetch_mb: int = Field(default=8, ge=1)
    #: Commands prefetched per process; it counts in the RSS.
    consumer_prefetch_mb: int = Field(default=16, ge=1)
    #: A test hook: while this file exists, the worker holds each transaction it begins
    #: open right after sending its first records (and writes ``<file>.held``), so a test
    #: can pause or kill it inside an open transaction. Unset in production.
    pause_in_transaction_file: Path | None = None
    rocksdb: RocksDBOptions = RocksDBOptions()

    @classmethod
    def resolve(cls, file_values: dict[str, Any]) -> WorkerSettings:
        """Settings from the environment over the topology file's values over defaults."""
        from_env = cls()
        return cls(**{**file_values, **from_env.model_dump(exclude_unset=True)})
