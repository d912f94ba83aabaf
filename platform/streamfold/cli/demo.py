"""``streamfold demo``: the retail example end to end, from commands to BI reports.

It brings up a stack of its own (Kafka from the fetched jars, the schema registry, the retail
workers with their sagas and event handler, the retail sink on chDB and the command gateway,
on free ports, with its data in ``.streamfold/demo``, wiped at the start) and sends a day of
retail traffic (:mod:`topologies.retail.day`, fixed seed) phase by phase: the trading day
(the commands of a tenth of the aggregates through the command gateway with the SDK, until
PROJECTED, the rest produced to Kafka); once the ``replenishment`` saga has raised its
purchase orders, the confirmed deliveries and the customers' purchases; once their invoices
are issued, the payments. It waits until every saga instance has ended (each purchase order
delivered or cancelled, its timers fired, each purchase closed) and every command, the
sagas' too, is projected; prints the BI reports (the named queries of
``connectors/retail/queries``, through the sink's query port) and the customer notifications
``notify_customer`` wrote; checks them against :meth:`~topologies.retail.day.Day.expected`;
reads two reports again through the gateway's query API; and stops the stack, or keeps it
until Ctrl-C with ``--keep``.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT_HOME = Path(".streamfold/demo")


def demo(
    commands: Annotated[int, typer.Option(help="Commands in the day of traffic.")] = 3000,
    seed: Annotated[int, typer.Option(help="Seed of the day of traffic.")] = 2026,
    keep: Annotated[bool, typer.Option(help="Keep the stack running until Ctrl-C.")] = False,
    home: Annotated[Path, typer.Option(help="Where the demo keeps its data.")] = ROOT_HOME,
) -> None:
    """Run the retail example end to end and print its BI reports."""
    run_demo(commands=commands, seed=seed, keep=keep, home=home)


def run_demo(
    *,
    commands: int = 3000,
    seed: int = 2026,
    keep: bool = False,
    home: Path = ROOT_HOME,
    console: Console | None = None,
) -> dict[str, tuple[list[str], list[Sequence[Any]]]]:
    """The demo; returns each report's columns and rows (for tests)."""
    from streamfold.cli.edge import default_cache_dir, setup_logging  # noqa: PLC0415
    from streamfold.contracts.codec import AvroCodec  # noqa: PLC0415
    from streamfold.contracts.registry import ConfluentSchemaRegistry  # noqa: PLC0415
    from streamfold.embedded.children import start_all, stop_all  # noqa: PLC0415
    from streamfold.embedded.kafka import LocalKafkaCluster  # noqa: PLC0415
    from streamfold.embedded.ports import free_ports  # noqa: PLC0415
    from streamfold.gateway.server import GatewayProcess  # noqa: PLC0415
    from streamfold.registry.server import RegistryProcess  # noqa: PLC0415
    from streamfold.runtime.process import WorkerProcess  # noqa: PLC0415
    from streamfold.sink.named_queries import load_named_queries  # noqa: PLC0415
    from streamfold.sink.process import SinkProcess  # noqa: PLC0415
    from streamfold.sink.queries import run_sql  # noqa: PLC0415
    from streamfold.transport.commands import CommandProducer  # noqa: PLC0415
    from streamfold.transport.settings import KafkaSettings  # noqa: PLC0415

    sys.path.insert(0, str(Path.cwd()))
    from topologies.retail.day import retail_day  # noqa: PLC0415
    from topologies.retail.domain import retail  # noqa: PLC0415

    setup_logging()
    out = console or Console(width=None if sys.stdout.isatty() else 140)
    root = Path.cwd()
    home = home.resolve()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    target = f"chdb:{home / 'clickhouse'}"
    started = time.monotonic()
    with LocalKafkaCluster(home / "kafka", default_cache_dir()) as kafka:
        out.print(f"[bold]Kafka[/] {kafka.bootstrap_servers} (KRaft, from the fetched jars)")
        registry_port, worker_port, sink_port, gateway_port = free_ports(4)
        registry = RegistryProcess(
            kafka.bootstrap_servers, registry_port, log_file=home / "registry.log"
        )
        registry.start(timeout=120)
        out.print(f"[bold]Schema registry[/] {registry.url}")
        worker = WorkerProcess(
            root / "topologies" / "retail" / "topology.yaml",
            bootstrap_servers=kafka.bootstrap_servers,
            registry_url=registry.url,
            instance_id="demo",
            state_dir=home / "state",
            health_port=worker_port,
            log_file=home / "worker.log",
        )
        sink = SinkProcess(
            root / "connectors" / "retail",
            bootstrap_servers=kafka.bootstrap_servers,
            registry_url=registry.url,
            health_port=sink_port,
            target=target,
            log_file=home / "sink.log",
        )
        gateway = GatewayProcess(
            root / "topologies" / "retail" / "topology.yaml",
            bootstrap_servers=kafka.bootstrap_servers,
            registry_url=registry.url,
            port=gateway_port,
            connectors_dir=root / "connectors" / "retail",
            clickhouse_target=target,
            log_file=home / "gateway.log",
        )
        try:
            start_all([worker, sink, gateway], timeout=180)
            out.print(f"[bold]Retail workers[/] ready ({worker.health_url}/metrics)")
            out.print(f"[bold]Retail sink[/] ready, chDB at {home / 'clickhouse'}")
            out.print(f"[bold]Command gateway[/] {gateway.url} (docs at {gateway.url}/docs)")
            settings = KafkaSettings(bootstrap_servers=kafka.bootstrap_servers)
            codec = AvroCodec(ConfluentSchemaRegistry.from_url(registry.url))
            day = retail_day(commands=commands, seed=seed)
            ids = _send_and_wait(out, settings, codec, retail, day, CommandProducer, gateway.url)
            orders = set(day.purchase_orders())
            _wait_for(
                out,
                f"the replenishment saga raises {len(orders)} purchase orders",
                lambda: orders <= _keys(settings, _state_topic(retail, "purchase_order")),
            )
            second = day.deliveries + day.purchases
            ids |= _send_phase(out, settings, codec, retail, second, CommandProducer)
            bought = {cast(Any, r.command).purchase_id for r in day.purchases}
            _wait_for(
                out,
                f"the purchase saga issues {len(bought)} invoices",
                lambda: bought <= _keys(settings, _state_topic(retail, "invoice")),
            )
            ids |= _send_phase(out, settings, codec, retail, day.payments, CommandProducer)
            sagas = {"replenishment": orders, "purchase_flow": bought}
            _wait_for(
                out,
                "the sagas finish (deliveries received, late orders reordered and cancelled, "
                "purchases closed)",
                lambda: _sagas_ended(settings, retail, sagas),
            )
            replenished_on = datetime.now(UTC).date()  # the sagas' commands carry the clock's
            everything, by_sagas = _command_ids(settings, retail)
            _wait_projected(out, settings, retail, everything - ids, "the sagas' commands")
            notices = _notifications(out, settings, retail)
            _wait_caught_up(out, settings, root / "connectors" / "retail", retail)
            out.print(
                f"{len(ids):,} records sent, {len(by_sagas):,} commands sent by the "
                f"sagas, all projected in {time.monotonic() - started:.1f} s since the start"
            )
            results: dict[str, tuple[list[str], list[Sequence[Any]]]] = {}
            queries = root / "connectors" / "retail" / "queries"
            for report in load_named_queries(queries, "retail"):
                parameters = report.bind({}, tenant=None)
                columns, rows = run_sql(target, "retail", report.sql, parameters=parameters)
                results[report.name] = (columns, rows)
                _print(out, report.title, columns, rows)
            results["notifications"] = (["customer_id", "purchase_id", "reason"], notices)
            _print(out, "Customer notifications (notify_customer)", *results["notifications"])
            cancelled = [r for r in results["purchases"][1] if r[6] == "cancelled"]
            out.print(
                f"notify_customer wrote {len(notices)} notifications to "
                f"{_notifications_topic()}; {len(cancelled)} purchases were cancelled"
            )
            _check(out, results, day.expected(replenished_on=replenished_on))
            for name in ("store_daily_sales", "purchase_orders"):
                _query_through_the_gateway(out, gateway.url, results, name)
            if keep:
                out.print(
                    "The stack keeps running (Ctrl-C stops it). Try: "
                    f'streamfold sql --target "{target}" '
                    '"SELECT outcome, count() FROM retail.retail_commands GROUP BY outcome"'
                )
                stop = threading.Event()
                signal.signal(signal.SIGINT, lambda *_: stop.set())
                signal.signal(signal.SIGTERM, lambda *_: stop.set())
                stop.wait()
        finally:
            stop_all([gateway, sink, worker, registry])
    out.print("Stack stopped.")
    return results


#: The commands of every this many-th aggregate (about a tenth of the day) go through the
#: gateway (the SDK, in order per aggregate, until PROJECTED); the rest is produced to Kafka
#: as any producer of commands does (one producer: in order per partition). Split by
#: aggregate, so that each aggregate's commands keep the day's order.
GATEWAY_SHARE = 10


def _send_and_wait(
    out: Console,
    settings: Any,
    codec: Any,
    context: Any,
    day: Any,
    producer_type: Any,
    gateway_url: str,
) -> set[str]:
    """Send the day's records; wait for a PROJECTED ack of each; return their command ids."""
    import uuid  # noqa: PLC0415

    from streamfold.domain.naming import aggregate_topics  # noqa: PLC0415

    producer = producer_type(settings, codec, context)
    garbage_topic = aggregate_topics(context.name, "store_stock").commands
    ids: set[str] = set()

    def aggregate_of(record: Any) -> str:
        aggregate = context.aggregate_for(type(record.command))
        return f"{aggregate.name}:{aggregate.aggregate_id(record.command)}"

    commands = [r for r in day.records if r.command is not None]
    aggregates = sorted({aggregate_of(r) for r in commands})
    picked = set(aggregates[::GATEWAY_SHARE])
    through_gateway: dict[str, list[Any]] = {}
    for record in commands:
        if aggregate_of(record) in picked:
            through_gateway.setdefault(aggregate_of(record), []).append(record)
    chosen = {id(r) for records in through_gateway.values() for r in records}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=out) as progress:
        # The gateway's share goes at the same time as the rest, from a thread of its own.
        via = progress.add_task("through the gateway (SDK)", total=len(chosen))
        outcomes: dict[str, int] = {}
        gateway = threading.Thread(
            target=lambda: outcomes.update(
                asyncio.run(
                    _send_through_the_gateway(gateway_url, context, through_gateway, progress, via)
                )
            ),
            name="demo-gateway",
        )
        gateway.start()
        sending = progress.add_task(
            "sending the day's traffic to Kafka", total=len(day.records) - len(chosen)
        )
        for record in day.records:
            if id(record) in chosen:
                continue
            headers = {"issued_at": record.issued_at.isoformat(), "principal": record.principal}
            if record.command is not None:
                ids.add(producer.send(record.command, **headers))
            else:
                command_id = str(uuid.uuid4())
                pairs = [("command_id", command_id), *headers.items()]
                producer.send_raw(garbage_topic, b"store-1/item-01", record.garbage, pairs)
                ids.add(command_id)
            progress.advance(sending)
        producer.flush()
        producer.close()
        projected = progress.add_task("projected into ClickHouse", total=len(ids))
        _await_acks(settings, context, ids, lambda: progress.advance(projected))
        gateway.join()
    if sum(outcomes.values()) != len(chosen):
        raise RuntimeError("the gateway's share of the day did not all get an answer")
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
    out.print(f"{len(chosen):,} commands sent through the gateway: {summary}")
    return ids


def _await_acks(settings: Any, context: Any, ids: set[str], advance: Callable[[], None]) -> None:
    """Wait for a PROJECTED ack of each of ``ids`` (``advance`` at each)."""
    import uuid  # noqa: PLC0415

    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # noqa: PLC0415

    from streamfold.domain.naming import context_topics  # noqa: PLC0415

    consumer = Consumer(settings.consumer_config(f"demo-{uuid.uuid4().hex}"))
    topic = context_topics(context.name).projected
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    seen: set[str] = set()
    deadline = time.monotonic() + 300
    try:
        while not ids <= seen:
            if time.monotonic() > deadline:
                missing = len(ids - seen)
                raise TimeoutError(f"{missing} commands were not projected in 300 s")
            first = consumer.poll(0.2)  # then what else is there, without waiting
            for message in [first, *consumer.consume(1000, 0)] if first else []:
                if message.error() is None:
                    command_id = (message.key() or b"").decode()
                    if command_id in ids and command_id not in seen:
                        seen.add(command_id)
                        advance()
    finally:
        consumer.close()


def _send_phase(
    out: Console, settings: Any, codec: Any, context: Any, records: list[Any], producer_type: Any
) -> set[str]:
    """Produce one phase of the day to Kafka; wait for a PROJECTED ack of each command."""
    producer = producer_type(settings, codec, context)
    ids = set()
    for record in records:
        headers = {"issued_at": record.issued_at.isoformat(), "principal": record.principal}
        ids.add(producer.send(record.command, **headers))
    producer.flush()
    producer.close()
    kinds = sorted({type(r.command).__name__ for r in records})
    _wait_projected(out, settings, context, ids, f"{', '.join(kinds)}")
    return ids


def _wait_projected(out: Console, settings: Any, context: Any, ids: set[str], what: str) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=out) as progress:
        task = progress.add_task(f"{what}: projected into ClickHouse", total=len(ids))
        _await_acks(settings, context, ids, lambda: progress.advance(task))


def _wait_for(out: Console, what: str, done: Callable[[], bool], timeout: float = 300) -> None:
    """Poll ``done`` until it holds (or fail after ``timeout`` seconds)."""
    since = time.monotonic()
    with out.status(what):
        while not done():
            if time.monotonic() - since > timeout:
                raise TimeoutError(f"not done in {timeout:.0f} s: {what}")
            time.sleep(0.25)
    out.print(f"{what}: done in {time.monotonic() - since:.1f} s")


def _state_topic(context: Any, aggregate: str) -> str:
    from streamfold.domain.naming import aggregate_topics  # noqa: PLC0415

    return aggregate_topics(context.name, aggregate).state


def _keys(settings: Any, topic: str) -> set[str]:
    """The keys of ``topic``'s records (an aggregate's ids, in its state topic)."""
    from streamfold.transport.reading import read_to_end  # noqa: PLC0415

    return {(m.key() or b"").decode() for m in read_to_end(settings, topic) if m.value()}


def _sagas_ended(settings: Any, context: Any, expected: dict[str, set[str]]) -> bool:
    """Whether each saga's ``expected`` instances have ended and no other one is running:
    its changelog (its store's) holds a tombstone as the latest record of each instance."""
    from streamfold.domain.naming import saga_topics  # noqa: PLC0415
    from streamfold.state.timers import TIMER_PREFIX  # noqa: PLC0415
    from streamfold.transport.reading import read_to_end  # noqa: PLC0415

    for saga, instances in expected.items():
        latest: dict[bytes, bool] = {}
        for message in read_to_end(settings, saga_topics(context.name, saga).changelog):
            key = message.key() or b""
            if not key.startswith(TIMER_PREFIX):
                latest[key] = message.value() is not None
        ended = {k.decode() for k, running in latest.items() if not running}
        if any(latest.values()) or not instances <= ended:
            return False
    return True


def _command_ids(settings: Any, context: Any) -> tuple[set[str], set[str]]:
    """The id of every record on the context's commands topics, and of those the sagas sent."""
    from streamfold.contracts.headers import COMMAND_ID, PRINCIPAL, header_map  # noqa: PLC0415
    from streamfold.domain.naming import aggregate_topics  # noqa: PLC0415
    from streamfold.transport.reading import read_to_end  # noqa: PLC0415

    ids, by_sagas = set(), set()
    for aggregate in context.aggregates:
        topic = aggregate_topics(context.name, aggregate.name).commands
        for message in read_to_end(settings, topic):
            headers = header_map(message.headers())
            if command_id := headers.get(COMMAND_ID):
                ids.add(command_id)
                if headers.get(PRINCIPAL, "").startswith("saga:"):
                    by_sagas.add(command_id)
    return ids, by_sagas


def _notifications_topic() -> str:
    from topologies.retail.handlers import NOTIFICATIONS  # noqa: PLC0415

    return NOTIFICATIONS  # the demo's deployment has no topic prefix


def _notifications(out: Console, settings: Any, context: Any) -> list[Sequence[Any]]:
    """Once ``notify_customer`` has handled every purchase event: the notices it wrote,
    (customer, purchase, reason) in order."""
    import json  # noqa: PLC0415

    from streamfold.domain.naming import aggregate_topics  # noqa: PLC0415
    from streamfold.sink.progress import caught_up, record_ends  # noqa: PLC0415
    from streamfold.transport.reading import read_to_end  # noqa: PLC0415

    ends = record_ends(settings, [aggregate_topics(context.name, "purchase").events])
    group = f"streamfold.{context.name}.handler.notify_customer"  # the topology's group
    _wait_for(
        out,
        "notify_customer handles the purchases' events",
        lambda: caught_up(settings, group, ends),
    )
    notices = [
        json.loads(m.value() or b"{}") for m in read_to_end(settings, _notifications_topic())
    ]
    return [
        list(n) for n in sorted((n["customer_id"], n["purchase_id"], n["reason"]) for n in notices)
    ]


def comparable(value: Any) -> Any:
    """One comparable form for a value from ClickHouse (through JSON) or from Python."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    text = str(value)
    try:
        return Decimal(text)
    except InvalidOperation:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return text
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def _check(
    out: Console,
    reports: dict[str, tuple[list[str], list[Sequence[Any]]]],
    expected: dict[str, list[tuple[Any, ...]]],
) -> None:
    """Every report must be what the day's independent computation says."""
    differ = sorted(set(reports) ^ set(expected)) + [
        name
        for name in sorted(set(reports) & set(expected))
        if [tuple(map(comparable, r)) for r in reports[name][1]]
        != [tuple(map(comparable, r)) for r in expected[name]]
    ]
    if differ:
        raise RuntimeError(f"reports that differ from Day.expected(): {', '.join(differ)}")
    out.print(f"All {len(expected)} reports equal Day.expected(), computed from the commands alone")


async def _send_through_the_gateway(
    url: str, context: Any, records: dict[str, list[Any]], progress: Progress, task: Any
) -> dict[str, int]:
    """Send each aggregate's records in order with the SDK; when this returns, every one of
    them is PROJECTED. Outcomes by kind."""
    from streamfold.client import AsyncClient, CommandRejected  # noqa: PLC0415

    outcomes: dict[str, int] = {}
    async with AsyncClient(url, context=context) as client:

        async def in_order(aggregate: list[Any]) -> list[str]:
            # Each waits for SENT, which keeps the aggregate's order in Kafka; the last
            # waits for PROJECTED, which the sink reaches in order: the whole aggregate is
            # then projected.
            ids = []
            for n, record in enumerate(aggregate, start=1):
                last = n == len(aggregate)
                try:
                    status = await client.send(
                        record.command,
                        wait="projected" if last else "sent",
                        timeout=60,
                        issued_at=record.issued_at,
                        principal=record.principal,
                    )
                    ids.append(status.command_id)
                except CommandRejected as rejection:
                    assert rejection.command_id is not None
                    ids.append(rejection.command_id)
                progress.advance(task)
            return ids

        sent = await asyncio.gather(*(in_order(a) for a in records.values()))
        ids = [command_id for chain in sent for command_id in chain]
        for status in await asyncio.gather(*(client.wait(i, timeout=60) for i in ids)):
            kind = status.outcome or status.stage
            outcomes[kind] = outcomes.get(kind, 0) + 1
    return outcomes


def _query_through_the_gateway(
    out: Console, url: str, reports: dict[str, tuple[list[str], list[Sequence[Any]]]], name: str
) -> None:
    """Read one report through the gateway's query API; it must be what ClickHouse said."""
    from streamfold.client import Client  # noqa: PLC0415
    from streamfold.sink.queries import jsonable  # noqa: PLC0415

    with Client(url) as client:
        answer = client.query(name, context="retail")
    columns, rows = reports[name]
    same = answer.columns == columns and answer.rows == jsonable([list(r) for r in rows])
    if not same:
        raise RuntimeError(f"the gateway's {name} differs from ClickHouse's")
    out.print(
        f"GET {url}/retail/queries/{name}: {len(answer.rows)} rows, the same as the report above"
    )


def _wait_caught_up(out: Console, settings: Any, spec_path: Path, context: Any) -> None:
    """A PROJECTED ack means a command's state (or rejection) is visible; the reports also
    read the events and the audit log, so wait until the sink has every source record."""
    from streamfold.domain.naming import aggregate_topics  # noqa: PLC0415
    from streamfold.sink.progress import caught_up, record_ends  # noqa: PLC0415
    from streamfold.sink.spec import load_connector  # noqa: PLC0415

    spec = load_connector(spec_path)
    topics = [
        topic
        for aggregate in spec.select(context)
        for topic in aggregate_topics(context.name, aggregate.name).all()
        if not topic.endswith(".changelog")
    ]
    ends = record_ends(settings, topics)
    deadline = time.monotonic() + 300
    with out.status("the sink projects the rest (events, audit log)"):
        while not caught_up(settings, spec.group_id, ends):
            if time.monotonic() > deadline:
                raise TimeoutError("the sink did not catch up in 300 s")
            time.sleep(0.2)


def _print(out: Console, title: str, columns: list[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(*columns, title=title, title_justify="left")
    for row in rows[:40]:
        table.add_row(*("" if v is None else str(v) for v in row))
    if len(rows) > 40:
        table.caption = f"{len(rows) - 40} more rows"
    out.print(table)
