"""The Faust codec and topics of streamfold.integrations.faust, without a broker."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from decimal import Decimal

import faust
import pytest
from aiokafka.partitioner import DefaultPartitioner
from pydantic import BaseModel
from topologies.retail.domain import ReceiveSupply, SaleRecorded, StoreStock, retail

from streamfold.contracts import AvroCodec, InMemorySchemaRegistry
from streamfold.contracts.codec import CodecError, UnknownRecordTypeError
from streamfold.contracts.results import RESULT_NAMESPACE, CommandResult, Outcome
from streamfold.errors import ConfigurationError
from streamfold.integrations.faust import StreamfoldCodec, StreamfoldTopics
from streamfold.transport.partitioning import partition_for

pytestmark = pytest.mark.unit

AT = dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.UTC)
SALE = SaleRecorded(
    store_id="s1",
    item_id="apple",
    sale_id="r-1",
    quantity=3,
    unit_price=Decimal("0.40"),
    amount=Decimal("1.20"),
    sold_at=AT,
)


def test_an_event_written_by_streamfold_reads_as_its_model() -> None:
    avro = AvroCodec(InMemorySchemaRegistry())
    wire = avro.writer("retail.store_stock.events", SaleRecorded, retail.namespace).encode(SALE)
    codec = StreamfoldCodec(avro, retail, "retail.store_stock.events")
    decoded = codec.loads(wire)
    assert type(decoded) is SaleRecorded
    assert decoded == SALE


def test_a_model_encodes_as_streamfold_writes_it() -> None:
    avro = AvroCodec(InMemorySchemaRegistry())
    codec = StreamfoldCodec(avro, retail, "retail.store_stock.state")
    state = StoreStock(store_id="s1", item_id="apple", on_hand=4, sold_amount=Decimal("2.50"))
    wire = codec.dumps(state)
    # The same bytes as the worker's writer: same subject, same schema id, same Avro.
    writer = avro.writer("retail.store_stock.state", StoreStock, retail.namespace)
    assert wire == writer.encode(state)
    assert avro.reader(StoreStock, namespace=retail.namespace).decode(wire) == state


def test_results_decode_as_command_results() -> None:
    avro = AvroCodec(InMemorySchemaRegistry())
    result = CommandResult(
        command_id="c-1", aggregate_type="store_stock", outcome=Outcome.ACCEPTED, processed_at=AT
    )
    topic = "retail.store_stock.results"
    wire = avro.writer(topic, CommandResult, RESULT_NAMESPACE).encode(result)
    assert StreamfoldCodec(avro, retail, topic).loads(wire) == result


def test_a_clone_keeps_the_topic_and_a_record_of_another_context_is_refused() -> None:
    class Foreign(faust.Record):
        x: int

    avro = AvroCodec(InMemorySchemaRegistry())
    codec = StreamfoldCodec(avro, retail, "retail.store_stock.events")
    clone = codec.clone()
    assert isinstance(clone, StreamfoldCodec)
    assert clone.topic == codec.topic
    assert clone.loads(codec.dumps(SALE)) == SALE

    class Unrelated(BaseModel):
        x: int

    for foreign in (Foreign(x=1), Unrelated(x=1)):
        with pytest.raises(CodecError, match="carries retail models"):
            codec.dumps(foreign)
    other = AvroCodec(InMemorySchemaRegistry())

    wire = other.writer("elsewhere", Unrelated, "io.example").encode(Unrelated(x=1))
    with pytest.raises(UnknownRecordTypeError):
        StreamfoldCodec(other, retail, "elsewhere").loads(wire)


def test_aiokafka_default_partitioner_is_the_java_murmur2() -> None:
    # Faust hands keys to aiokafka's partitioner: it must put an aggregate where streamfold
    # (and a Java client) puts it, or one aggregate's commands would split over partitions.
    rng = random.Random(5)
    partitioner = DefaultPartitioner()
    for n in range(2000):
        key = f"store-{rng.randrange(100)}/item-{n}".encode()
        for count in (1, 6, 7, 32):
            partitions = list(range(count))
            assert partitioner(key, partitions, partitions) == partition_for(key, count)


def test_topics_are_named_as_the_workers_name_them() -> None:
    app = faust.App("t-names", broker="kafka://127.0.0.1:1")
    topics = StreamfoldTopics(app, retail, AvroCodec(InMemorySchemaRegistry()), topic_prefix="p.")
    assert topics.events("store_stock").get_topic_name() == "p.retail.store_stock.events"
    assert topics.commands("store_stock").get_topic_name() == "p.retail.store_stock.commands"
    assert topics.results("item").get_topic_name() == "p.retail.item.results"
    assert topics.state("supplier").get_topic_name() == "p.retail.supplier.state"
    with pytest.raises(ConfigurationError):
        topics.events("nope")


def test_a_custom_partitioner_needs_the_partition_count() -> None:
    app = faust.App("t-partitioner", broker="kafka://127.0.0.1:1")
    app.conf.producer_partitioner = lambda key, all_partitions, available: 0
    avro = AvroCodec(InMemorySchemaRegistry())
    with pytest.raises(ConfigurationError, match="partitions="):
        StreamfoldTopics(app, retail, avro)
    StreamfoldTopics(app, retail, avro, partitions=6)  # computes the partition itself


def test_send_command_keys_by_aggregate_id_with_a_command_id_header() -> None:
    sent: list[dict[str, object]] = []

    class Recorder:
        async def send(self, **kwargs: object) -> None:
            sent.append(kwargs)

    app = faust.App("t-send", broker="kafka://127.0.0.1:1")
    topics = StreamfoldTopics(app, retail, AvroCodec(InMemorySchemaRegistry()), partitions=6)
    topics._topics["retail.store_stock.commands"] = Recorder()  # type: ignore[assignment]
    command = ReceiveSupply(store_id="s1", item_id="apple", supplier_id="acme", quantity=2)
    command_id = asyncio.run(topics.send_command(command, tenant="t1", expected_version=0))
    (kwargs,) = sent
    assert kwargs["key"] == "s1/apple"
    assert kwargs["value"] == command
    assert kwargs["partition"] == partition_for(b"s1/apple", 6)
    assert kwargs["headers"] == [
        ("command_id", command_id.encode()),
        ("tenant", b"t1"),
        ("expected_version", b"0"),
    ]
