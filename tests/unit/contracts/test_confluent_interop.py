"""Interoperability with confluent-kafka's own Avro serializer and deserializer.

Both sides share one in-process registry (confluent-kafka's ``mock://`` client, behind our
adapter), as a producer and a consumer would share a real one.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from topologies.retail.domain import RecordSale, SaleRecorded, retail, stock

from streamfold.contracts import AvroCodec, ConfluentSchemaRegistry, Contract

pytestmark = pytest.mark.unit

SALE = RecordSale(
    store_id="s1", item_id="apple", sale_id="r-9", quantity=3, unit_price=Decimal("0.40")
)
RECORDED = SaleRecorded(
    store_id="s1",
    item_id="apple",
    sale_id="r-9",
    quantity=3,
    unit_price=Decimal("0.40"),
    amount=Decimal("1.20"),
    sold_at=dt.datetime(2026, 3, 1, 9, 30, 0, 123_000, tzinfo=dt.UTC),
)


@pytest.fixture
def client() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": "mock://interop"})  # a fresh store per client


def context(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def test_confluent_serializer_bytes_decode_with_our_codec(client: SchemaRegistryClient) -> None:
    topic = stock.topics.commands
    serializer = AvroSerializer(
        client,
        Contract.of(RecordSale, retail.namespace).schema_str,
        conf={"subject.name.strategy": topic_record_subject_name_strategy},
    )
    data = serializer(SALE.model_dump(), context(topic))
    assert data is not None
    codec = AvroCodec(ConfluentSchemaRegistry(client))
    assert codec.reader(RecordSale, namespace=retail.namespace).decode(data) == SALE
    # Same subject (TopicRecordNameStrategy) and so the same schema id as our own writer.
    assert codec.writer(topic, RecordSale, retail.namespace).schema_id == int.from_bytes(
        data[1:5], "big"
    )
    assert client.get_subjects() == [f"{topic}-io.streamfold.retail.RecordSale"]


def test_our_bytes_decode_with_confluent_deserializer(client: SchemaRegistryClient) -> None:
    topic = stock.topics.events
    codec = AvroCodec(ConfluentSchemaRegistry(client))
    data = codec.writer(topic, SaleRecorded, retail.namespace).encode(RECORDED)
    deserializer = AvroDeserializer(client, Contract.of(SaleRecorded, retail.namespace).schema_str)
    record = deserializer(data, context(topic))
    assert SaleRecorded.model_validate(record) == RECORDED


def test_confluent_deserializer_without_reader_schema(client: SchemaRegistryClient) -> None:
    topic = stock.topics.events
    data = (
        AvroCodec(ConfluentSchemaRegistry(client))
        .writer(topic, SaleRecorded, retail.namespace)
        .encode(RECORDED)
    )
    record = AvroDeserializer(client)(data, context(topic))
    assert record["amount"] == Decimal("1.20")
    assert record["sold_at"] == RECORDED.sold_at
