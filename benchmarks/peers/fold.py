"""The store_stock fold of the retail domain on plain dicts, for the peer applications.

The peers (``quix_app.py``, ``faust_app.py``) run in virtualenvs of their own, where
streamfold and pydantic are not installed, so they cannot import
``topologies.retail.domain``. This module re-implements its ``store_stock`` deciders and
evolvers (``receive_supply``, ``record_sale``, ``adjust_stock``; ``supply_received``,
``sale_recorded``, ``stock_adjusted``) and the worker's per-command steps (idempotency window,
``not_found`` for a non-creating command, one result per command) on plain dicts, with the
same rejection codes and messages, so every engine's outputs decode to equal values. It
validates nothing the pydantic models would: that is less work than the worker and the
hand-written loop do per command, never more.

Records are Avro in the Confluent wire format, written with the schema ids the harness
registered and passes in the plan (a JSON file, see :class:`Plan`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

WINDOW = 32  # the worker's default idempotency window
CREATES = {"ReceiveSupply"}
Output = tuple[str, bytes, bytes, list[tuple[str, bytes]], "int | None"]


@dataclass
class Plan:
    """What the harness tells a peer: where to read and write, with which schemas."""

    bootstrap: str
    group: str
    commands: str
    events: str
    state: str
    results: str
    partitions: int
    state_dir: str
    exactly_once: bool
    commit_interval_ms: int
    max_batch: int
    #: Record name → [schema id, schema], for every command, event, state and result type.
    schemas: dict[str, list[Any]]

    @classmethod
    def load(cls, path: str) -> Plan:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


class Codec:
    """Confluent-Avro decoding by schema id and encoding by record name, with fastavro."""

    def __init__(self, schemas: dict[str, list[Any]]) -> None:
        self.by_id: dict[int, tuple[str, Any]] = {}
        self.by_name: dict[str, tuple[bytes, Any]] = {}
        for name, (schema_id, schema) in schemas.items():
            parsed = parse_schema(schema)
            self.by_id[schema_id] = (name, parsed)
            self.by_name[name] = (b"\x00" + schema_id.to_bytes(4, "big"), parsed)

    def decode(self, value: bytes) -> tuple[str, dict[str, Any]]:
        name, parsed = self.by_id[int.from_bytes(value[1:5], "big")]
        buf = BytesIO(value)
        buf.seek(5)
        return name, schemaless_reader(buf, parsed, None)

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        header, parsed = self.by_name[name]
        buf = BytesIO()
        buf.write(header)
        schemaless_writer(buf, parsed, record)
        return buf.getvalue()


class Rejection(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decide(
    kind: str,
    state: dict[str, Any] | None,
    cmd: dict[str, Any],
    at: datetime,
    principal: str | None,
    aggregate_id: str,
) -> tuple[str, dict[str, Any]]:
    """The event a command causes, or :class:`Rejection` (the retail deciders)."""
    if state is None and kind not in CREATES:
        raise Rejection("not_found", f"store_stock {aggregate_id!r} does not exist")
    if kind == "ReceiveSupply":
        return "SupplyReceived", {
            "store_id": cmd["store_id"],
            "item_id": cmd["item_id"],
            "supplier_id": cmd["supplier_id"],
            "quantity": cmd["quantity"],
            "received_at": at,
        }
    assert state is not None
    if kind == "RecordSale":
        if cmd["quantity"] > state["on_hand"]:
            where = f"item {cmd['item_id']} in store {cmd['store_id']}"
            message = f"cannot sell {cmd['quantity']} of {where}: {state['on_hand']} on hand"
            raise Rejection("insufficient_stock", message)
        return "SaleRecorded", {
            "store_id": cmd["store_id"],
            "item_id": cmd["item_id"],
            "sale_id": cmd["sale_id"],
            "quantity": cmd["quantity"],
            "unit_price": cmd["unit_price"],
            "amount": cmd["unit_price"] * cmd["quantity"],
            "sold_at": at,
        }
    after = state["on_hand"] + cmd["delta"]
    if after < 0:
        raise Rejection(
            "negative_stock", f"adjusting by {cmd['delta']} would leave {after} on hand"
        )
    return "StockAdjusted", {
        "store_id": cmd["store_id"],
        "item_id": cmd["item_id"],
        "delta": cmd["delta"],
        "reason": cmd["reason"],
        "note": cmd.get("note"),
        "adjusted_by": principal,
    }


def evolve(kind: str, state: dict[str, Any] | None, event: dict[str, Any]) -> dict[str, Any]:
    """The state after ``event`` (the retail evolvers)."""
    if kind == "SupplyReceived":
        if state is None:
            return {
                "store_id": event["store_id"],
                "item_id": event["item_id"],
                "on_hand": event["quantity"],
                "sold_amount": Decimal("0.00"),
            }
        return {**state, "on_hand": state["on_hand"] + event["quantity"]}
    assert state is not None
    if kind == "SaleRecorded":
        return {
            **state,
            "on_hand": state["on_hand"] - event["quantity"],
            "sold_amount": state["sold_amount"] + event["amount"],
        }
    return {**state, "on_hand": state["on_hand"] + event["delta"]}


class Fold:
    """One command in, its outputs and the aggregate's new entry out.

    An entry is a plain JSON-able dict, so each framework's state serialises it its own way:
    ``{"v": version, "s": state (sold_amount as text) or None, "r": [[command id, result],
    ...]}`` with the last :data:`WINDOW` results (``[outcome, version, event types, code,
    message]``).
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.codec = Codec(plan.schemas)

    def handle(
        self,
        value: bytes,
        headers: dict[str, bytes],
        timestamp_ms: int,
        partition: int,
        entry: dict[str, Any] | None,
    ) -> tuple[dict[str, Any] | None, list[Output]]:
        """The aggregate's new entry (None: unchanged) and the records to produce."""
        kind, cmd = self.codec.decode(value)
        command_id = headers["command_id"].decode()
        aggregate_id = f"{cmd['store_id']}/{cmd['item_id']}"
        key = aggregate_id.encode()
        propagated = [("command_id", headers["command_id"])]
        version, state_text, recent = 0, None, []
        if entry is not None:
            version, state_text, recent = entry["v"], entry["s"], entry["r"]
        for known, stored in recent:
            if known == command_id:  # a repeat: its first result, no effect
                result = self._result(command_id, aggregate_id, kind, stored, True)
                return None, [
                    (self.plan.results, command_id.encode(), result, propagated, partition)
                ]
        state = None
        if state_text is not None:
            state = {**state_text, "sold_amount": Decimal(state_text["sold_amount"])}
        at = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
        principal = headers["principal"].decode() if "principal" in headers else None
        outputs: list[Output] = []
        try:
            event_type, event = decide(kind, state, cmd, at, principal, aggregate_id)
        except Rejection as rejection:
            stored: list[Any] = ["rejected", version, [], rejection.code, rejection.message]
        else:
            state = evolve(event_type, state, event)
            version += 1
            tagged = [
                *propagated,
                ("message_type", event_type.encode()),
                ("aggregate_version", str(version).encode()),
            ]
            outputs.append(
                (self.plan.events, key, self.codec.encode(event_type, event), tagged, None)
            )
            state_headers = [
                *propagated,
                ("message_type", b"StoreStock"),
                ("aggregate_version", str(version).encode()),
                ("deleted", b"false"),
            ]
            state_value = self.codec.encode("StoreStock", state)
            outputs.append((self.plan.state, key, state_value, state_headers, None))
            state_text = {**state, "sold_amount": str(state["sold_amount"])}
            stored = ["accepted", version, [event_type], None, None]
        result = self._result(command_id, aggregate_id, kind, stored, False)
        # On the command's partition number, as the worker places results.
        outputs.append((self.plan.results, command_id.encode(), result, propagated, partition))
        recent = [*recent, [command_id, stored]][-WINDOW:]
        return {"v": version, "s": state_text, "r": recent}, outputs

    def _result(
        self, command_id: str, aggregate_id: str, kind: str, stored: list[Any], duplicate: bool
    ) -> bytes:
        outcome, version, event_types, code, message = stored
        return self.codec.encode(
            "CommandResult",
            {
                "command_id": command_id,
                "request_id": None,
                "aggregate_type": "store_stock",
                "aggregate_id": aggregate_id,
                "command_type": kind,
                "outcome": outcome,
                "version": version,
                "event_types": event_types,
                "code": code,
                "message": message,
                "duplicate": duplicate,
                "processed_at": datetime.now(UTC),
            },
        )
