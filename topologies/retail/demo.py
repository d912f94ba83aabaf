"""The retail example end to end: send commands to the running stack, show what happened.

Run ``python -m topologies.retail.demo`` with the dev stack up (``streamfold dev up``): it
sends a few store-stock commands (a supply, a sale, a sale that must be refused, a retried
command, an adjustment), waits for each command's result from the workers, and prints the
results and the stock's state as the workers committed it. Settings come from the usual
``STREAMFOLD_KAFKA_*`` and ``STREAMFOLD_REGISTRY_*`` variables (default: the dev stack).
"""

from __future__ import annotations

import sys
import time
import uuid
from decimal import Decimal

from rich.console import Console
from rich.table import Table

from streamfold.cli.edge import kafka_settings, registry_settings, setup_logging
from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.contracts.results import RESULT_NAMESPACE, CommandResult
from streamfold.domain.naming import aggregate_topics
from streamfold.transport.commands import CommandProducer
from streamfold.transport.reading import read_to_end
from topologies.retail.domain import (
    AdjustmentReason,
    AdjustStock,
    ReceiveSupply,
    RecordSale,
    StoreStock,
    retail,
)

console = Console()


def main() -> int:
    """Send the demo commands, wait for their results, print them; 0 when all answered."""
    setup_logging()
    settings = kafka_settings()
    registry = ConfluentSchemaRegistry.from_url(**registry_settings().client_config())
    codec = AvroCodec(registry)
    producer = CommandProducer(settings, codec, retail)
    run = uuid.uuid4().hex[:6]
    store, item = f"store-{run}", "espresso-beans"
    supply = ReceiveSupply(store_id=store, item_id=item, supplier_id="roastery", quantity=12)
    commands = [
        ("supply 12", supply, None),
        (
            "sell 5",
            RecordSale(
                store_id=store, item_id=item, sale_id="1", quantity=5, unit_price=Decimal("8.90")
            ),
            None,
        ),
        (
            "sell 9 (too many)",
            RecordSale(
                store_id=store, item_id=item, sale_id="2", quantity=9, unit_price=Decimal("8.90")
            ),
            None,
        ),
        ("supply 12, retried", supply, "first"),
        (
            "2 damaged",
            AdjustStock(store_id=store, item_id=item, delta=-2, reason=AdjustmentReason.damaged),
            None,
        ),
    ]
    sent: list[tuple[str, str]] = []
    first_id = None
    for label, command, retry in commands:
        command_id = producer.send(command, command_id=first_id if retry else None)
        first_id = first_id or command_id
        sent.append((label, command_id))
    producer.flush()
    producer.close()
    topics = aggregate_topics(retail.name, "store_stock")
    reader = codec.reader(CommandResult, namespace=RESULT_NAMESPACE)
    wanted = {command_id for _, command_id in sent}
    answers: dict[tuple[str, bool], dict[str, object]] = {}
    deadline = time.monotonic() + 60
    while len(answers) < len(sent) and time.monotonic() < deadline:
        for message in read_to_end(settings, topics.results):
            _, record = reader.decode_dict(message.value() or b"")
            if record["command_id"] in wanted:
                answers[(str(record["command_id"]), bool(record["duplicate"]))] = record
        time.sleep(0.5)
    table = Table("command", "outcome", "version", "why")
    for label, command_id in sent:
        retried = label.endswith("retried")
        record = answers.get((command_id, retried))
        if record is None:
            table.add_row(label, "[red]no result[/red]", "", "")
            continue
        outcome = str(record["outcome"]) + (" (duplicate)" if record["duplicate"] else "")
        why = f"{record['code']}: {record['message']}" if record["code"] else ""
        table.add_row(label, outcome, str(record["version"]), why)
    console.print(table)
    states = codec.reader(StoreStock, namespace=retail.namespace)
    latest = None
    for message in read_to_end(settings, topics.state):
        if message.key() == f"{store}/{item}".encode():
            latest = states.decode(message.value() or b"")
    console.print(f"state of {store}/{item}: {latest}")
    return 0 if len(answers) == len(sent) else 1


if __name__ == "__main__":
    sys.exit(main())
