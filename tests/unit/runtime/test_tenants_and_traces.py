"""A command's tenant must be its aggregate's; the decide span continues the command's trace."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from topologies.retail.domain import ReceiveSupply, retail, stock

from streamfold.contracts import headers as h
from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import InMemorySchemaRegistry
from streamfold.contracts.results import TENANT_MISMATCH
from streamfold.runtime.command_processor import CommandProcessor
from streamfold.state.entry import AggregateEntry
from streamfold.state.rocksdb import PartitionStore, RocksDBOptions, StoreEnvironment
from tests.unit.runtime.test_processor import PARTITIONS, Counters, Outbox, record, results

pytestmark = pytest.mark.unit

SUPPLY = ReceiveSupply(store_id="s", item_id="i", supplier_id="x", quantity=3)


def processor(codec: AvroCodec, provider: TracerProvider | None = None) -> CommandProcessor:
    return CommandProcessor(
        stock,
        retail.namespace,
        codec,
        partitions=PARTITIONS,
        idempotency_window=4,
        handler_retries=0,
        counters=Counters(),
        tracer_provider=provider,
    )


@pytest.fixture
def store(tmp_path: Path) -> PartitionStore:
    return PartitionStore(tmp_path / "p0", StoreEnvironment(RocksDBOptions(block_cache_mb=8)))


def test_another_tenants_command_is_rejected_and_leaves_the_aggregate_alone(
    store: PartitionStore,
) -> None:
    codec = AvroCodec(InMemorySchemaRegistry())
    worker = processor(codec)
    first = str(uuid.uuid4())
    assert worker.process(record(codec, SUPPLY, 1, command_id=first, tenant="a"), store, Outbox())
    before = store.get(b"s/i")
    assert AggregateEntry.decode(before or b"").tenant == "a"
    for offset, headers in enumerate(
        [{"tenant": "b"}, {}, {"tenant": "b", "command_id": first}], start=2
    ):
        outbox = Outbox()
        headers.setdefault("command_id", str(uuid.uuid4()))
        outcome = worker.process(record(codec, SUPPLY, offset, **headers), store, outbox)
        assert outcome == "rejected", headers
        (result,) = results(codec, outbox)
        # no events, no state, not even the version, and not the first result of a repeat
        assert outbox.topics() == {"results": 1}
        assert (result["code"], result["version"], result["duplicate"]) == (
            TENANT_MISMATCH,
            0,
            False,
        )
        assert store.get(b"s/i") == before
    assert worker.process(record(codec, SUPPLY, 9, tenant="a"), store, Outbox()) == "accepted"


def test_an_entry_written_before_tenants_were_kept_has_none() -> None:
    old = msgpack.packb([3, False, b"state", [["id", ["accepted", 3, [], None, None]]]])
    entry = AggregateEntry.decode(old)
    assert (entry.version, entry.tenant) == (3, None)
    assert AggregateEntry.decode(entry.encode()) == entry
    tenanted = AggregateEntry(1, tenant="t")
    assert AggregateEntry.decode(tenanted.encode()).tenant == "t"


def test_the_decide_span_is_a_child_of_the_commands_trace_and_its_outputs_carry_it(
    store: PartitionStore,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    codec = AvroCodec(InMemorySchemaRegistry())
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    outbox = Outbox()
    message = record(codec, SUPPLY, 1, traceparent=f"00-{trace_id}-{parent_id}-01")
    assert processor(codec, provider).process(message, store, outbox) == "accepted"
    (span,) = exporter.get_finished_spans()
    assert span.name == "decide retail.store_stock"
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.parent is not None and f"{span.parent.span_id:016x}" == parent_id
    assert span.attributes is not None and span.attributes["streamfold.outcome"] == "accepted"
    own = f"00-{trace_id}-{span.context.span_id:016x}-01"
    carried: list[Any] = [headers[h.TRACEPARENT] for *_rest, headers, _p in outbox.sent]
    assert carried == [own] * len(outbox.sent) and len(carried) == 3


def test_without_a_provider_the_traceparent_goes_on_unchanged(store: PartitionStore) -> None:
    codec = AvroCodec(InMemorySchemaRegistry())
    outbox = Outbox()
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    processor(codec).process(record(codec, SUPPLY, 1, traceparent=traceparent), store, outbox)
    assert {headers[h.TRACEPARENT] for *_rest, headers, _p in outbox.sent} == {traceparent}


def test_an_empty_tenant_header_is_no_tenant(store: PartitionStore) -> None:
    codec = AvroCodec(InMemorySchemaRegistry())
    worker = processor(codec)
    assert worker.process(record(codec, SUPPLY, 1), store, Outbox()) == "accepted"
    assert worker.process(record(codec, SUPPLY, 2, tenant=""), store, Outbox()) == "accepted"
