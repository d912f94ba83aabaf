"""Framed rows decoded by ClickHouse give exactly the rows the Python path builds.

Both paths project the same Kafka records into twin tables of embedded ClickHouse (chDB):
the Python path (:mod:`streamfold.sink.rows`, Arrow inserts) and the framed path
(:mod:`streamfold.sink.passthrough`, ``INSERT … SELECT FROM file(…, 'Avro')``); every
column of every row must be equal, the JSON payload byte for byte.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import pytest
from confluent_kafka import Message
from pydantic import Field

from streamfold.contracts.avro import avro_schema
from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import InMemorySchemaRegistry
from streamfold.domain import BoundedContext, Event, State
from streamfold.sink.batches import Batch, Pending
from streamfold.sink.ddl import TableSpec, aggregate_tables
from streamfold.sink.passthrough import Framer, writer_plan
from streamfold.sink.rows import builders_for, row_width
from streamfold.sink.target import ClickHouseTarget, TargetError

pytestmark = pytest.mark.unit

EVENTS_TOPIC = "shop.cart.events"
STATE_TOPIC = "shop.cart.state"


class Colour(StrEnum):
    red = "red"
    blue = "blue"


class Priced(Event):
    cart_id: str
    label: str
    count: int
    paid: bool
    amount: Annotated[Decimal, Field(max_digits=12, decimal_places=2)]
    at: dt.datetime
    day: dt.date
    ref: uuid.UUID
    colour: Colour
    note: str | None = None
    extra: int | None = None


class Measured(Event):  # a float and a list: the payload is spelled in Python
    cart_id: str
    weight: float
    height: float  # two columns Priced lacks, of one type: two equal SELECT expressions
    tags: list[str]


class Cart(State):
    cart_id: str
    items: int = 0
    weight: float = 0.0
    tags: list[str] = []
    last: dt.datetime | None = None
    colour: Colour = Colour.red


def context() -> BoundedContext:
    ctx = BoundedContext("shop", namespace="io.shop")
    cart = ctx.aggregate("cart", state=Cart, id="cart_id")
    for event in (Priced, Measured):
        cart.evolves(event, creates=True)(lambda state, event: Cart(cart_id="c"))
    return ctx


AT = dt.datetime(2026, 11, 25, 9, 30, 15, 123000, tzinfo=dt.UTC)
STRINGS = ["plain", 'quote " and \\ slash / end', "line\nbreak\ttab", "é ü 日本 🙂", "", "\x01"]


def priced(i: int) -> dict[str, Any]:
    return {
        "cart_id": f"c{i % 3}",
        "label": STRINGS[i % len(STRINGS)],
        "count": [0, -1, 2**62, 7][i % 4],
        "paid": i % 2 == 0,
        "amount": [Decimal("9.00"), Decimal("-0.01"), Decimal("0.00"), Decimal("1234.5")][i % 4],
        "at": [
            AT,
            AT.replace(microsecond=0),
            dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC),
        ][i % 3],
        "day": dt.date(2026, 1, 1 + i % 28),
        "ref": uuid.UUID(int=i * 7919),
        "colour": Colour.blue if i % 2 else Colour.red,
        "note": None if i % 3 else STRINGS[i % len(STRINGS)],
        "extra": None if i % 2 else i,
    }


def message(
    codec: AvroCodec, topic: str, model: type[Any], record: dict[str, Any], offset: int, **hd: str
) -> Message:
    value = codec.writer(topic, model, "io.shop").encode_dict(record)
    return Message(
        topic=topic,
        partition=offset % 2,
        offset=offset,
        key=f"cart-{offset % 5}".encode(),
        value=value,
        headers=[(k, v.encode()) for k, v in hd.items()],
        timestamp=(1, 1_764_000_000_000 + offset),
    )


def project(
    target: ClickHouseTarget, table: TableSpec, framer: Framer, build: Any, messages: list[Message]
) -> None:
    """The framed path into ``table``; the Python path into ``<table>_py``."""
    twin = TableSpec(
        name=f"{table.name}_py",
        columns=table.columns,
        engine=table.engine,
        order_by=table.order_by,
        kind=table.kind,
        aggregate=table.aggregate,
    )
    target.ensure([table, twin])
    framed: dict[int, Pending] = {}
    decoded: dict[int, Pending] = {}
    for m in messages:
        p, o = m.partition() or 0, m.offset() or 0
        assert framer.build(m, o, framed.setdefault(p, Pending(0, first=o)))
        assert build(m, o, decoded.setdefault(p, Pending(row_width(table), first=o)))
    parts = framer.parts(list(framed.values()), 0)
    assert parts, "every record here takes the framed path"
    target.insert_avro(table, parts, "t1")
    batch = Batch(messages[0].topic() or "", sorted(decoded.items()))
    target.insert_columns(twin, batch.columns(), "t1")
    # The Python path of a batch ClickHouse refuses reads records rebuilt from the frames.
    rebuilt: dict[int, Pending] = {}
    for p, pending in framed.items():
        rows = rebuilt[p] = Pending(row_width(table), first=pending.first)
        for m in framer.messages(pending):
            assert build(m, m.offset() or 0, rows)
    assert Batch(batch.topic, sorted(rebuilt.items())).columns() == batch.columns()


def rows(target: ClickHouseTarget, table: str) -> list[Any]:
    return target.query(f"SELECT * FROM shop.{table} ORDER BY _partition, _offset")[1]


def test_framed_event_rows_equal_the_python_rows(tmp_path: Path) -> None:
    ctx = context()
    cart = ctx.get("cart")
    codec = AvroCodec(InMemorySchemaRegistry())
    events = aggregate_tables(ctx, "cart")[2]
    framer = Framer(codec, [events], EVENTS_TOPIC, {"io.shop.Priced": "Priced"})
    messages = [
        message(
            codec,
            EVENTS_TOPIC,
            Priced,
            priced(i),
            i,
            tenant="acme",
            command_id=f"cmd-{i}",
            aggregate_version=str(i + 1),
        )
        for i in range(48)
    ]
    messages.append(message(codec, EVENTS_TOPIC, Priced, priced(99), 99))  # no headers at all
    target = ClickHouseTarget(f"chdb:{tmp_path / 'ch'}", "shop")
    try:
        project(target, events, framer, builders_for(ctx, cart, codec).events(events), messages)
        framed, python = rows(target, events.name), rows(target, f"{events.name}_py")
        assert len(framed) == 49
        assert framed == python
        payload = events.columns.index(next(c for c in events.columns if c.name == "payload"))
        assert framed[3][payload] == python[3][payload]  # the JSON text, byte for byte
        assert any('"label":"quote \\" and \\\\ slash / end"' in r[payload] for r in framed)
    finally:
        target.close()


def test_framed_state_rows_equal_the_python_rows_and_carry_the_acks(tmp_path: Path) -> None:
    ctx = context()
    cart = ctx.get("cart")
    codec = AvroCodec(InMemorySchemaRegistry())
    state_last = aggregate_tables(ctx, "cart")[0]
    framer = Framer(codec, [state_last], STATE_TOPIC, None, acks="cart")
    states = [
        {
            "cart_id": "c1",
            "items": 3,
            "weight": 0.1,
            "tags": ["a", "b/c"],
            "last": AT,
            "colour": Colour.blue,
        },
        {
            "cart_id": "c2",
            "items": -4,
            "weight": -1e300,
            "tags": [],
            "last": None,
            "colour": Colour.red,
        },
    ]
    messages = [
        message(
            codec,
            STATE_TOPIC,
            Cart,
            s,
            i,
            command_id=f"cmd-{i}",
            aggregate_version="3",
            deleted="true" if i else "false",
        )
        for i, s in enumerate(states)
    ]
    target = ClickHouseTarget(f"chdb:{tmp_path / 'ch'}", "shop")
    try:
        project(
            target, state_last, framer, builders_for(ctx, cart, codec).state(state_last), messages
        )
        assert rows(target, state_last.name) == rows(target, f"{state_last.name}_py")
    finally:
        target.close()
    acks = Pending(0)
    framer.build(messages[0], 0, acks)
    assert [(a.command_id, a.aggregate_type, a.aggregate_id, a.version) for a in acks.acks] == [
        ("cmd-0", "cart", "cart-0", 3)
    ]


def test_a_writer_schema_the_framed_path_cannot_spell_sends_the_batch_to_python() -> None:
    ctx = context()
    codec = AvroCodec(InMemorySchemaRegistry())
    events = aggregate_tables(ctx, "cart")[2]
    accepts = {"io.shop.Priced": "Priced", "io.shop.Measured": "Measured"}
    framer = Framer(codec, [events], EVENTS_TOPIC, accepts)
    pending = Pending(0)
    measured = {"cart_id": "c", "weight": 0.5, "height": 1.0, "tags": []}
    m = message(codec, EVENTS_TOPIC, Measured, measured, 0)
    assert framer.build(m, 0, pending)
    assert pending.python and framer.parts([pending], 0) is None
    plan = writer_plan(1, avro_schema(Measured, "io.shop"), events, event_type="Measured")
    assert not plan.eligible and "payload" in plan.why


def test_records_the_topic_does_not_take_are_skipped_like_the_python_path() -> None:
    ctx = context()
    codec = AvroCodec(InMemorySchemaRegistry())
    events = aggregate_tables(ctx, "cart")[2]
    framer = Framer(codec, [events], EVENTS_TOPIC, {"io.shop.Priced": "Priced"})
    pending = Pending(0)
    measured = {"cart_id": "c", "weight": 1.0, "height": 1.0, "tags": []}
    other = message(codec, EVENTS_TOPIC, Measured, measured, 1)
    bad = Message(topic=EVENTS_TOPIC, partition=0, offset=2, value=b"\x01\x00\x00\x00\x01xx")
    unknown = Message(topic=EVENTS_TOPIC, partition=0, offset=3, value=b"\x00\x00\x00\x03\xe7xx")
    assert not framer.build(other, 1, pending)
    assert not framer.build(bad, 2, pending)
    assert not framer.build(unknown, 3, pending)
    assert pending.rows == 0


def test_clickhouse_refuses_a_corrupt_body_whole(tmp_path: Path) -> None:
    """The connector then inserts the batch decoded in Python with the same token."""
    ctx = context()
    codec = AvroCodec(InMemorySchemaRegistry())
    events = aggregate_tables(ctx, "cart")[2]
    framer = Framer(codec, [events], EVENTS_TOPIC, {"io.shop.Priced": "Priced"})
    good = message(codec, EVENTS_TOPIC, Priced, priced(1), 0)
    value = good.value() or b""
    corrupt = Message(topic=EVENTS_TOPIC, partition=0, offset=1, value=value[:12] + b"\xff" * 3)
    pending = Pending(0)
    assert framer.build(good, 0, pending) and framer.build(corrupt, 1, pending)
    parts = framer.parts([pending], 0)
    assert parts
    target = ClickHouseTarget(f"chdb:{tmp_path / 'ch'}", "shop")
    try:
        target.ensure([events])
        with pytest.raises(TargetError):
            target.insert_avro(events, parts, "t1")
        assert target.query(f"SELECT count() FROM shop.{events.name}")[1] == [(0,)]
    finally:
        target.close()


def test_retail_events_framed_equal_the_python_rows(tmp_path: Path) -> None:
    """The example domain: event types lacking several columns of one type each."""
    from topologies.retail.domain import (  # noqa: PLC0415
        AdjustmentReason,
        SaleRecorded,
        StockAdjusted,
        SupplyReceived,
        retail,
    )

    stock = retail.get("store_stock")
    codec = AvroCodec(InMemorySchemaRegistry())
    events = aggregate_tables(retail, stock)[2]
    accepts = {f"{retail.namespace}.{m.__name__}": m.__name__ for m in stock.events}
    topic = "retail.store_stock.events"
    framer = Framer(codec, [events], topic, accepts)
    records: list[tuple[type[Any], dict[str, Any]]] = [
        (
            SupplyReceived,
            {
                "store_id": "s1",
                "item_id": "i1",
                "supplier_id": "sup",
                "quantity": 10,
                "received_at": AT,
            },
        ),
        (
            SaleRecorded,
            {
                "store_id": "s1",
                "item_id": "i1",
                "sale_id": "x",
                "quantity": 3,
                "unit_price": Decimal("2.50"),
                "amount": Decimal("7.50"),
                "sold_at": AT,
            },
        ),
        (
            StockAdjusted,
            {
                "store_id": "s1",
                "item_id": "i1",
                "delta": -2,
                "reason": AdjustmentReason.damaged,
                "note": None,
            },
        ),
    ]
    messages = []
    for offset, (model, record) in enumerate(records):
        value = codec.writer(topic, model, retail.namespace).encode_dict(record)
        messages.append(
            Message(
                topic=topic,
                partition=0,
                offset=offset,
                key=b"s1/i1",
                value=value,
                headers=[("aggregate_version", b"1")],
                timestamp=(1, 1_764_000_000_000),
            )
        )
    target = ClickHouseTarget(f"chdb:{tmp_path / 'ch'}", "retail")
    try:
        project(target, events, framer, builders_for(retail, stock, codec).events(events), messages)
        query = "SELECT * FROM retail.{} ORDER BY _offset"
        framed = target.query(query.format(events.name))[1]
        assert framed == target.query(query.format(f"{events.name}_py"))[1]
        amount = [c.name for c in events.columns].index("amount")
        assert framed[1][amount] == Decimal("7.50")
    finally:
        target.close()
