"""A retail stack under steady load, and the kills that land inside its work.

Shared by the kill-cycle test (``test_kill_cycles.py``) and the soak (``tests/fault/soak.py``,
``scripts/soak``): two workers of ``stock-only.yaml`` (suppliers, the catalogue, store
stock), a chDB sink and the gateway, all child processes, on the broker and registry the
caller gives; :class:`SteadyLoad` sends commands straight to Kafka at a steady rate and a
few a second through the gateway with PROJECTED waits.

A kill counts as landing inside the work only on evidence read from Kafka:

- a worker (:meth:`RetailRun.kill_inside_a_transaction`): 2 s after the SIGKILL, an output
  partition's last stable offset still lags its high watermark (an open transaction);
- the sink (:meth:`RetailStack.kill_sink`): right after the SIGKILL, its group's committed
  offsets still carry a batch's intent (offset metadata, :mod:`streamfold.sink.batches`),
  and the restarted sink logs "replaying an unfinished batch" for it.
"""

from __future__ import annotations

import random
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import yaml
from confluent_kafka import Consumer, IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from topologies.retail.domain import (
    AddItem,
    ChangePrice,
    ReceiveSupply,
    RegisterSupplier,
    retail,
)
from topologies.retail.workload import stock_commands

from streamfold.client import Client, CommandPending, GatewayUnavailable, NotFound
from streamfold.domain import Command
from streamfold.domain.naming import aggregate_topics
from streamfold.embedded.ports import free_ports
from streamfold.gateway.server import GatewayProcess
from streamfold.runtime.process import WorkerProcess
from streamfold.runtime.topology import load_topology
from streamfold.sink.batches import parse_intent
from streamfold.sink.process import SinkProcess
from streamfold.sink.progress import caught_up, record_ends
from streamfold.sink.spec import load_connector
from streamfold.sink.target import ClickHouseTarget
from streamfold.testing.invariants import Report, check_aggregate
from tests.fault.watch import ResultWatcher
from tests.integration.runtime.conftest import TOPOLOGY, RetailRun

CONNECTOR = Path(__file__).resolve().parents[2] / "connectors" / "retail"
#: The aggregates of ``stock-only.yaml``, and which of them each command goes to.
AGGREGATES = ("store_stock", "supplier", "item")
PARTITIONS = 6
REPLAYING = "replaying an unfinished batch"
#: How often the load asks the gateway about the PROJECTED waits it answered 202 (s).
LOOK_UP_EVERY = 10.0


def aggregate_of(command: Command) -> str:
    if isinstance(command, RegisterSupplier):
        return "supplier"
    if isinstance(command, AddItem | ChangePrice):
        return "item"
    return "store_stock"


def mixed_commands(seed: int, mixed: bool) -> Iterator[Command]:
    """Store-stock commands over 2,000 aggregates; with ``mixed``, one in 25 a supplier's or
    the catalogue's (new suppliers and items, price changes of items added before)."""
    rng = random.Random(seed)
    added: list[str] = []
    for n, command in enumerate(stock_commands(2_000, 10**9, seed)):
        if mixed and n % 25 == 0:
            draw = rng.random()
            if draw < 0.3:
                yield RegisterSupplier(supplier_id=f"sup-{seed}-{n}", name=f"supplier {n}")
            elif draw < 0.6 or not added:
                added.append(f"item-{seed}-{n}")
                yield AddItem(item_id=added[-1], name=f"item {n}", price=Decimal("1.25"))
            else:
                price = Decimal(rng.randint(100, 999)) / 100
                yield ChangePrice(item_id=rng.choice(added), price=price)
        yield command


@dataclass
class SteadyLoad:
    """Commands straight to Kafka (about ``rate`` a second) and, serially, through the
    gateway with PROJECTED waits (a 503 or no answer: sent again with the same id)."""

    stack: RetailStack
    rate: float = 200.0
    mixed: bool = False
    #: aggregate -> the command ids sent to it (both ways)
    sent: dict[str, set[str]] = field(default_factory=lambda: {a: set() for a in AGGREGATES})
    projected: dict[str, str] = field(default_factory=dict)  # command id -> "200" or "202"
    #: (monotonic time, "200" / "202") of every PROJECTED answer, in order
    answers: list[tuple[float, str]] = field(default_factory=list)
    retried: set[str] = field(default_factory=set)
    #: answered 202, then found projected by a later look-up while the load ran
    found_later: set[str] = field(default_factory=set)
    failures: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._direct, daemon=True),
            threading.Thread(target=self._through_the_gateway, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    @property
    def commands(self) -> int:
        return sum(len(s) for s in self.sent.values())

    def answered_200(self) -> list[float]:
        return [at for at, status in self.answers if status == "200"]

    def _direct(self) -> None:
        producer = self.stack.run.producer
        try:
            for n, command in enumerate(mixed_commands(31, self.mixed)):
                if self._stop.is_set():
                    break
                self.sent[aggregate_of(command)].add(producer.send(command))
                if n % 20 == 0:
                    producer.flush(120)
                    time.sleep(20 / self.rate)
            producer.flush(120)
        except BaseException as exc:  # noqa: BLE001 - the caller asserts there is none
            self.failures.append(exc)

    def _gateway_command(self, n: int) -> Command:
        if not self.mixed or n % 4 or n < 8:  # a price changes an item added 4 before
            return ReceiveSupply(
                store_id="gw", item_id=f"gw-{n % 50}", supplier_id="s-1", quantity=1
            )
        if n % 8 == 0:
            return AddItem(item_id=f"gw-item-{n}", name=f"item {n}", price=Decimal("2.00"))
        return ChangePrice(item_id=f"gw-item-{n - 4}", price=Decimal("2.10"))

    def _look_up_pending(self, client: Client) -> None:
        """Ask the gateway about the commands answered 202 so far, each until it is found
        projected: while the load runs, before the gateway's bounded memory of outcomes
        (``recent``) forgets them."""
        for command_id, status in list(self.projected.items()):
            if status != "202" or command_id in self.found_later:
                continue
            try:
                if client.status(command_id).stage == "projected":
                    self.found_later.add(command_id)
            except (NotFound, GatewayUnavailable):
                pass  # not processed yet, or the gateway is restarting: asked again later

    def _through_the_gateway(self) -> None:
        with Client(self.stack.gateway.url, context=retail) as client:
            n = 0
            next_look_up = time.monotonic() + LOOK_UP_EVERY
            while not self._stop.is_set():
                if time.monotonic() >= next_look_up:
                    self._look_up_pending(client)
                    next_look_up = time.monotonic() + LOOK_UP_EVERY
                n += 1
                command = self._gateway_command(n)
                command_id = str(uuid.uuid4())
                while True:  # a 503 was not sent: send it again, with the same id
                    try:
                        client.send(command, wait="projected", timeout=20, command_id=command_id)
                        status = "200"
                    except CommandPending:
                        status = "202"
                    except GatewayUnavailable:
                        self.retried.add(command_id)
                        time.sleep(0.5)
                        continue
                    except BaseException as exc:  # noqa: BLE001 - the caller asserts
                        self.failures.append(exc)
                        return
                    break
                self.projected[command_id] = status
                self.answers.append((time.monotonic(), status))
                self.sent[aggregate_of(command)].add(command_id)
                time.sleep(0.2)


@dataclass(frozen=True)
class Outage:
    """What happened while ClickHouse was away (:meth:`RetailStack.outage`)."""

    inside: bool  # the sink's kill that began it landed inside an unfinished batch
    seconds: float
    started: float  # monotonic
    target_up: float  # the sink's gauge in the middle of it
    retries: float  # inserts the sink had retried by then
    ready_in_outage: bool
    ready_after: float  # seconds from the path given back to the sink ready
    answered_200: int  # PROJECTED waits answered in it
    answered_202: int
    results_stall: float  # the longest gap between results in it

    def describe(self) -> str:
        ready = "ready (!)" if self.ready_in_outage else "not ready"
        return (
            f"ClickHouse unavailable for {self.seconds:.0f} s (another process owned the chDB"
            f" path): the sink stayed alive and {ready}"
            f" (target_up {self.target_up:.0f}, {self.retries:.0f} inserts retried by the middle"
            f" of it), the workers went on (longest gap between results {self.results_stall:.2f}"
            f" s), PROJECTED waits answered in it: {self.answered_200} with 200,"
            f" {self.answered_202} with 202; the sink was ready {self.ready_after:.1f} s after"
            " the path was given back."
        )


@dataclass
class Invariants:
    """What the end of a run found: the reports per aggregate and ClickHouse's rows."""

    reports: dict[str, Report]
    rows: int
    unique: int
    late: int  # PROJECTED waits answered 202, found projected later

    @property
    def events(self) -> int:
        return self.reports["store_stock"].events

    def problems(self) -> list[str]:
        found = [f"{a}: {p}" for a, r in self.reports.items() for p in r.problems]
        if not self.rows == self.unique == self.events:
            found.append(
                f"ClickHouse: {self.rows} event rows, {self.unique} distinct, {self.events} events"
            )
        return found


class RetailStack:
    """Two workers, a chDB sink and the gateway of ``stock-only.yaml`` on ``run``'s broker."""

    def __init__(self, run: RetailRun, directory: Path) -> None:
        self.run = run
        self.directory = directory
        self.target = f"chdb:{directory / 'clickhouse'}"
        self.spec = load_connector(CONNECTOR, target=self.target, topic_prefix=run.prefix)
        self.sink_log = directory / "sink.log"
        self.sink = self._sink_process()
        (gateway_port,) = free_ports(1)
        self.gateway = GatewayProcess(
            TOPOLOGY,
            bootstrap_servers=run.settings.bootstrap_servers,
            registry_url=run.registry_url,
            port=gateway_port,
            connectors_dir=CONNECTOR,
            clickhouse_target=self.target,
            log_file=directory / "gateway.log",
            extra_env={"STREAMFOLD_GATEWAY_TOPIC_PREFIX": run.prefix},
        )
        self.watcher: ResultWatcher | None = None

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.run.worker("w1")
        self.run.worker("w2")
        self.sink.start(timeout=180)
        self.gateway.start(timeout=180)
        self.watcher = ResultWatcher(
            self.run.settings, self.run.stock_topics.results, self.run.codec
        )

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        for process in [self.gateway, self.sink, *self.run.workers]:
            process.stop()

    @property
    def workers(self) -> list[WorkerProcess]:
        return self.run.workers

    def _sink_process(self, ready_when: str = "ready") -> SinkProcess:
        spec_file = self.directory / "sink.yaml"
        spec_file.write_text(yaml.safe_dump(self.spec.model_dump(mode="json", exclude_none=True)))
        (port,) = free_ports(1)
        return SinkProcess(
            spec_file,
            bootstrap_servers=self.run.settings.bootstrap_servers,
            registry_url=self.run.registry_url,
            health_port=port,
            log_file=self.sink_log,
            ready_when=ready_when,
            # A static member: the sink restarted after a kill takes its partitions back.
            extra_env={"STREAMFOLD_SINK_INSTANCE_ID": "sink-0"},
        )

    # -- faults ----------------------------------------------------------------------------

    def kill_worker(self, victim: WorkerProcess) -> bool:
        """SIGKILL ``victim`` once it works, aimed at a moment its transaction is open
        (:meth:`aim`); restart it; True when it died in a transaction."""
        self.run.wait_until_working(victim, 120)
        self.aim(victim)
        inside = self.run.kill_inside_a_transaction(victim)
        victim.start(timeout=180)
        return inside

    def aim(self, victim: WorkerProcess, patience: float = 10.0) -> bool:
        """Return as soon as one of ``victim``'s results partitions has a transaction open
        (its last stable offset below its high watermark), or after ``patience`` s (False).
        A transaction lasts about the commit interval (100 ms) and this look takes tens of
        milliseconds, so a kill right after it lands inside most of the time: it still
        counts only on the evidence of :meth:`RetailRun.kill_inside_a_transaction`."""
        group = worker_group(self.run)
        admin = AdminClient(self.run.settings.admin_config())
        description = admin.describe_consumer_groups([group])[group].result()
        suffix = f"/{group}.{victim.instance_id}"
        partitions = [
            tp.partition
            for member in description.members
            if member.client_id.endswith(suffix)
            for tp in member.assignment.topic_partitions
            if tp.topic == self.run.stock_topics.commands
        ]
        if not partitions:
            return False
        wanted = [TopicPartition(self.run.stock_topics.results, p) for p in partitions]
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            stable = admin.list_offsets(
                {tp: OffsetSpec.latest() for tp in wanted},
                isolation_level=IsolationLevel.READ_COMMITTED,
            )
            high = admin.list_offsets({tp: OffsetSpec.latest() for tp in wanted})
            if any(stable[tp].result().offset < high[tp].result().offset for tp in stable):
                return True
        return False

    def sink_topics(self) -> list[str]:
        return [
            name
            for aggregate in AGGREGATES
            for name in aggregate_topics("retail", aggregate, self.run.prefix).all()
        ]

    def open_intents(self, patience: float = 0.0) -> int:
        """Partitions whose committed offset carries the intent of an unfinished batch; with
        ``patience``, looking again until one does or ``patience`` s have passed (a kill
        right after lands inside a batch most of the time)."""
        consumer = Consumer(self.run.settings.consumer_config(self.spec.group_id))  # never joins
        deadline = time.monotonic() + patience
        try:
            wanted = [TopicPartition(t, p) for t in self.sink_topics() for p in range(PARTITIONS)]
            while True:
                committed = consumer.committed(wanted, timeout=30)
                found = sum(parse_intent(tp.metadata) is not None for tp in committed)
                if found or time.monotonic() >= deadline:
                    return found
        finally:
            consumer.close()

    def replays_logged(self) -> int:
        return (
            self.sink_log.read_text(encoding="utf-8").count(REPLAYING)
            if self.sink_log.exists()
            else 0
        )

    def kill_sink(self, *, restart: bool = True) -> bool:
        """SIGKILL the sink once it has made a batch durable; restart it (unless not
        ``restart``); True when it died inside an unfinished batch: its intents were still
        committed and (restarted) it replayed them."""
        deadline = time.monotonic() + 120
        while sink_batches(self.sink) < 1:
            assert time.monotonic() < deadline, "the sink makes no batch durable"
            time.sleep(0.2)
        before = self.replays_logged()
        self.open_intents(patience=10.0)  # aim
        self.sink.kill()
        intents = self.open_intents()
        if not restart:
            return intents > 0
        self.sink.start(timeout=180)  # ready: it has joined, its replays are logged
        return intents > 0 and self.replays_logged() > before

    def outage(self, seconds: float, load: SteadyLoad) -> Outage:
        """Make ClickHouse unavailable for ``seconds``: SIGKILL the sink (a kill like the
        others), let this process own the chDB path (as a second sink on it would), start
        the sink again (alive, not ready), then give the path back. Returns what happened."""
        before = self.replays_logged()
        intents = self.kill_sink(restart=False)
        holder = ClickHouseTarget(self.target, "retail")
        try:
            holder.query("SELECT 1")  # this process owns the chDB path now
            started = time.monotonic()
            self.sink = self._sink_process(ready_when="alive")
            self.sink.start(timeout=180)
            time.sleep(max(0.0, seconds / 2 - (time.monotonic() - started)))
            middle = sink_metrics(self.sink)
            ready_in_outage = self.sink_ready()
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        finally:
            holder.close()  # the target is back
        back = time.monotonic()
        deadline = back + 300
        while not self.sink_ready():
            assert time.monotonic() < deadline, "the sink never got ready after the outage"
            time.sleep(0.2)
        ready_after = time.monotonic() - back
        self.sink.ready_url = f"{self.sink.health_url}/readyz"  # a restart waits for ready again
        during = [status for at, status in load.answers if started <= at <= back]
        return Outage(
            inside=intents and self.replays_logged() > before,
            seconds=back - started,
            started=started,
            target_up=middle.get("streamfold_sink_target_up", -1.0),
            retries=middle.get("streamfold_sink_target_retries_total", 0.0),
            ready_in_outage=ready_in_outage,
            ready_after=ready_after,
            answered_200=during.count("200"),
            answered_202=during.count("202"),
            results_stall=self.results_stall(started, back - started),
        )

    def sink_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.sink.health_url}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    # -- measures ----------------------------------------------------------------------

    def results_stall(self, at: float, window: float = 60.0) -> float:
        assert self.watcher is not None, "start() first"
        return self.watcher.stall_after(at, window)

    # -- the end -------------------------------------------------------------------------

    def check(self, load: SteadyLoad, patience: float) -> Invariants:
        """Wait until everything sent is processed and projected; check every invariant."""
        run = self.run
        everything = load.sent["store_stock"]
        run.wait_until_processed(everything, patience, resent=load.retried)
        reports: dict[str, Report] = {}
        for aggregate in AGGREGATES:
            topics = aggregate_topics("retail", aggregate, run.prefix)
            reports[aggregate] = check_aggregate(
                run.settings,
                next(a for a in retail.aggregates if a.name == aggregate),
                topics,
                retail.namespace,
                run.codec,
                load.sent[aggregate],
                load.retried,
            )
        late = [c for c, status in load.projected.items() if status == "202"]
        with Client(self.gateway.url, context=retail) as client:
            for command_id in late:
                if command_id in load.found_later:
                    continue
                try:
                    outcome = client.wait(command_id, wait="projected", timeout=120)
                except NotFound as exc:
                    reports["store_stock"].problem(f"{command_id} answered 202, then: {exc}")
                    continue
                if outcome.stage != "projected":
                    reports["store_stock"].problem(f"{command_id} never projected: {outcome.stage}")
        ends = record_ends(
            run.settings, [t for t in self.sink_topics() if t.endswith(SINK_TOPIC_ENDS)]
        )
        deadline = time.monotonic() + patience
        while not caught_up(run.settings, self.spec.group_id, ends):
            assert time.monotonic() < deadline, "the sink never caught up"
            time.sleep(1.0)
        self.stop()
        clickhouse = ClickHouseTarget(self.target, "retail")
        try:
            ((rows, unique),) = clickhouse.query(
                "SELECT count(), uniqExact(aggregate_id, version)"
                " FROM retail.retail_store_stock_events"
            )[1]
        finally:
            clickhouse.close()
        return Invariants(reports, rows, unique, len(late))


#: The topics the sink projects, by their names' ends.
SINK_TOPIC_ENDS = (".events", ".state", ".results", ".commands")


def sink_metrics(sink: SinkProcess) -> dict[str, float]:
    """The sink's Prometheus metrics (unlabelled series), empty when it does not answer."""
    try:
        with urllib.request.urlopen(f"{sink.health_url}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def sink_batches(sink: SinkProcess) -> float:
    return sink_metrics(sink).get("streamfold_sink_batches_total", 0.0)


def worker_group(run: RetailRun) -> str:
    return f"{run.prefix}{load_topology(TOPOLOGY).group_id}"


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


__all__ = [
    "CONNECTOR",
    "Invariants",
    "Outage",
    "RetailStack",
    "SteadyLoad",
    "median",
    "worker_group",
]
