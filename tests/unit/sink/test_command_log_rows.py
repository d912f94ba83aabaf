"""The command log keeps each command once: a worker's forwarded copy is not a new command."""

from __future__ import annotations

import pytest
from confluent_kafka import Message
from topologies.retail.domain import ReceiveSupply, retail, stock

from streamfold.contracts import headers as h
from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import InMemorySchemaRegistry
from streamfold.sink.batches import Pending
from streamfold.sink.rows import builders_for

pytestmark = pytest.mark.unit

TOPIC = "retail.store_stock.commands"


def test_a_forwarded_copy_of_a_command_is_not_logged_again() -> None:
    codec = AvroCodec(InMemorySchemaRegistry())
    value = codec.writer(TOPIC, ReceiveSupply, retail.namespace).encode(
        ReceiveSupply(store_id="s", item_id="i", supplier_id="x", quantity=1)
    )
    build = builders_for(retail, stock, codec).commands()
    landed = Message(topic=TOPIC, partition=1, offset=7, key=None, value=value, headers=[])
    copy = Message(
        topic=TOPIC,
        partition=4,
        offset=9,
        key=b"s/i",
        value=value,
        headers=[
            (h.COMMAND_ID, h.derived_command_id(TOPIC, 1, 7).encode()),
            (h.FORWARDED_FROM, f"{TOPIC}/1/7".encode()),
        ],
    )
    rows = Pending(10)
    assert build(landed, 7, rows)
    assert not build(copy, 9, rows)
    assert rows.columns[0] == [h.derived_command_id(TOPIC, 1, 7)]  # one row, the same id
