"""Baselines of the worker benchmark: the same work as the worker, without the framework.

- :func:`passthrough`: consume the command records and produce them unchanged to another
  topic, committing offsets after each batch (no transaction, no decoding): the floor of
  what one Python process moves through one broker;
- :func:`handwritten_eos`: per command what :class:`~streamfold.runtime.worker.AggregateWorker`
  does, written out with the libraries directly. It decodes the command with the fastest Avro
  code at hand, the compiled readers and writers of :mod:`streamfold.contracts.compiled`
  (plain functions generated from the schema; fastavro where they cannot), skipping the
  5-byte Confluent header, reads the aggregate's msgpack entry from a RocksDB
  (rocksdict) store of the partition, decodes the state, validates command and state as the
  retail pydantic models and calls the retail decide and evolve functions directly
  (``receive_supply`` / ``record_sale`` / ``adjust_stock``, then ``supply_received`` /
  ``sale_recorded`` / ``stock_adjusted``), encodes the event, state and result with the
  compiled writers behind a Confluent header, and produces the event, state and result
  records (and, at commit, each touched aggregate's latest entry to the changelog) in one
  Kafka transaction per batch with ``send_offsets_to_transaction``. The batch commits on
  the worker's rules (``max_batch`` commands, ``commit_interval_ms``, or nothing more to read
  right now); then each touched store gets one WriteBatch with its changelog offset. A
  transaction begins no sooner than the worker's ``transaction_gap_ms`` (3 ms) after the
  previous one ended; records made meanwhile are held and sent once it begins, as the worker
  does.

Schemas are registered (and parsed) once at start through the codec, as any hand-written
service would fetch its schema ids; per command only the generated Avro functions run, nothing
of the codec's classes or of the runtime.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import msgpack
import rocksdict
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from fastavro import schemaless_reader, schemaless_writer
from topologies.retail.domain import (
    AdjustStock,
    ReceiveSupply,
    RecordSale,
    SaleRecorded,
    StockAdjusted,
    StoreStock,
    SupplyReceived,
    adjust_stock,
    receive_supply,
    retail,
    sale_recorded,
    stock_adjusted,
    supply_received,
    take_stock,
)

from streamfold.contracts.codec import AvroCodec, RecordWriter
from streamfold.contracts.compiled import compile_reader
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.contracts.results import RESULT_NAMESPACE, CommandResult
from streamfold.domain import Metadata, Rejected
from streamfold.domain.naming import aggregate_topics
from streamfold.transport.settings import KafkaSettings

__all__ = ["LoopTiming", "handwritten_eos", "passthrough"]

OFFSET_KEY = b"\x00bench.changelog_offset"
WINDOW = 32  # the worker's default idempotency window
GAP_S = 0.003  # the worker's default transaction_gap_ms
# The worker's producer and consumer tuning (runtime/worker.py, start()).
PRODUCER_TUNING: dict[str, Any] = {
    "linger.ms": 2,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000,
}
CONSUMER_TUNING: dict[str, Any] = {
    "session.timeout.ms": 10_000,
    "max.poll.interval.ms": 60_000,
    "fetch.wait.max.ms": 20,
    "queued.max.messages.kbytes": 16 * 1024,
    "fetch.queue.backoff.ms": 10,
}


def record_sale(state: StoreStock, cmd: RecordSale, meta: Any) -> SaleRecorded:
    """The retail decider of a sale: one event, as the benchmark's stock has no reorder
    policy (``take_stock`` returns a list)."""
    (event,) = take_stock(state, cmd, meta)
    assert isinstance(event, SaleRecorded)
    return event


DECIDE: dict[type[Any], tuple[Callable[..., Any], bool]] = {
    ReceiveSupply: (receive_supply, True),
    RecordSale: (record_sale, False),
    AdjustStock: (adjust_stock, False),
}
EVOLVE: dict[type[Any], Callable[..., StoreStock]] = {
    SupplyReceived: supply_received,
    SaleRecorded: sale_recorded,
    StockAdjusted: stock_adjusted,
}


@dataclass(slots=True)
class LoopTiming:
    """From the first command read to the commit of the last one."""

    first: float
    last: float
    count: int

    @property
    def rate(self) -> float:
        return self.count / (self.last - self.first)


def passthrough(
    kafka: KafkaSettings, source: str, output: str, group: str, total: int, batch: int = 1000
) -> LoopTiming:
    """Copy ``total`` records of ``source`` to ``output``; commit offsets after each batch."""
    consumer = Consumer(kafka.consumer_config(group, **CONSUMER_TUNING))
    producer = Producer(kafka.producer_config(**PRODUCER_TUNING))
    consumer.subscribe([source])
    first = 0.0
    done = 0
    try:
        while done < total:
            messages = consumer.consume(batch, 0.1)
            records = [m for m in messages if m.error() is None]
            if not records:
                continue
            if not first:
                first = time.perf_counter()
            for message in records:
                _produce(producer, output, message.key(), message.value(), message.headers())
            producer.flush(30)
            consumer.commit(asynchronous=False)
            done += len(records)
        return LoopTiming(first, time.perf_counter(), done)
    finally:
        consumer.close()


def _produce(producer: Producer, topic: str, key: Any, value: Any, headers: Any, **kw: Any) -> None:
    while True:
        try:
            producer.produce(topic, value, key, headers=headers, **kw)
            return
        except BufferError:
            producer.poll(0.05)


class _HandwrittenLoop:
    """The worker's per-command work and checkpoint, spelled out."""

    def __init__(
        self,
        kafka: KafkaSettings,
        codec: AvroCodec,
        prefix: str,
        state_dir: Path,
        max_batch: int,
        commit_interval_ms: int,
    ) -> None:
        ns = retail.namespace
        self.topics = aggregate_topics("retail", "store_stock", prefix)
        self.group = f"{prefix}bench.handwritten"
        self.state_dir = state_dir
        self.max_batch = max_batch
        self.interval = commit_interval_ms / 1000
        # Schema ids and parsed schemas, once.
        self.commands: dict[int, tuple[Reader, type[Any]]] = {}
        for model in (ReceiveSupply, RecordSale, AdjustStock):
            writer = codec.writer(self.topics.commands, model, ns)
            self.commands[writer.schema_id] = (_reader(writer.contract.parsed), model)
        self.events = {
            model: _wire(codec.writer(self.topics.events, model, ns))
            for model in (SupplyReceived, SaleRecorded, StockAdjusted)
        }
        self.state = _wire(codec.writer(self.topics.state, StoreStock, ns))
        self.read_state = _reader(self.state[1].parsed)
        self.result = _wire(codec.writer(self.topics.results, CommandResult, RESULT_NAMESPACE))
        self.consumer = Consumer(kafka.consumer_config(self.group, **CONSUMER_TUNING))
        self.producer = Producer(
            kafka.transactional_producer_config(
                f"{self.group}.1", **{"transaction.timeout.ms": 30_000, **PRODUCER_TUNING}
            )
        )
        self.producer.init_transactions(30)
        self.write = rocksdict.WriteOptions()
        self.write.disable_wal = True  # type: ignore[method-assign,assignment]
        self.dbs: dict[int, rocksdict.Rdict] = {}
        self.staged: dict[int, dict[bytes, bytes]] = {}
        self.next_offsets: dict[int, int] = {}
        self.changelog_offsets: dict[int, int] = {}
        self.open = False
        self.in_transaction = False
        self.quiet_until = 0.0  # no transaction begins before (the gap)
        self.held: list[tuple[str, Any, Any, Any, dict[str, Any]]] = []
        self.started = 0.0
        self.count = 0
        self.committed = 0
        self.transactions = 0
        self.commit_seconds = 0.0

    def run(self, total: int | None, stop: Callable[[], bool] = lambda: False) -> LoopTiming:
        """Process until ``total`` commands are committed (``None``: until ``stop()``)."""
        self.consumer.subscribe([self.topics.commands])
        first = 0.0
        try:
            while (total is None or self.committed < total) and not stop():
                messages = self.consumer.consume(self.max_batch - self.count, 0)
                if not messages:
                    if self.open:
                        self.commit()
                        continue
                    message = self.consumer.poll(0.1)
                    messages = [message] if message is not None else []
                for message in messages:
                    if message.error() is not None:
                        continue
                    if not first:
                        first = time.perf_counter()
                    if not self.open:
                        self.open, self.started = True, time.monotonic()
                    self.process(message)
                if self.open and (
                    self.count >= self.max_batch or time.monotonic() - self.started >= self.interval
                ):
                    self.commit()
            if self.open:
                self.commit()
            return LoopTiming(first, time.perf_counter(), self.committed)
        finally:
            self.consumer.close()
            for db in self.dbs.values():
                db.close()

    def process(self, message: Message) -> None:
        partition, offset = message.partition() or 0, message.offset() or 0
        headers = dict(message.headers() or [])
        command_id = headers["command_id"].decode()
        value = message.value() or b""
        read, model = self.commands[int.from_bytes(value[1:5], "big")]
        command = model.model_validate(read(value))
        _kind, millis = message.timestamp()
        meta = Metadata(
            command_id=uuid.UUID(command_id), issued_at=datetime.fromtimestamp(millis / 1000, UTC)
        )
        aggregate_id = f"{command.store_id}/{command.item_id}"
        key = aggregate_id.encode()
        staged = self.staged.setdefault(partition, {})
        raw = staged.get(key)
        if raw is None:
            raw = self._db(partition).get(key)
        version, state_bytes, recent = 0, None, []
        if raw is not None:
            version, _deleted, state_bytes, recent = msgpack.unpackb(raw, raw=False)
        propagated = [("command_id", command_id.encode())]
        command_type = type(command).__name__
        for known, stored in recent:
            if known == command_id:  # a repeat: answer its first result
                self._result(
                    partition, command_id, aggregate_id, command_type, stored, propagated, True
                )
                self._done(partition, offset)
                return
        state = None
        if state_bytes is not None:
            state = StoreStock.model_validate(self.read_state(state_bytes))
        decide, creates = DECIDE[model]
        try:
            if state is None and not creates:
                raise Rejected("not_found", f"store_stock {aggregate_id!r} does not exist")
            event = decide(state, command, meta)
        except Rejected as rejection:
            stored = ["rejected", version, [], rejection.code, rejection.message]
        else:
            state = EVOLVE[type(event)](state, event)
            version += 1
            event_type = type(event).__name__
            header, schema = self.events[type(event)]
            self._send(
                self.topics.events,
                key,
                _encode(header, schema, event.model_dump()),
                [
                    *propagated,
                    ("message_type", event_type.encode()),
                    ("aggregate_version", str(version).encode()),
                ],
            )
            state_bytes = _encode(*self.state, state.model_dump())
            self._send(
                self.topics.state,
                key,
                state_bytes,
                [
                    *propagated,
                    ("message_type", b"StoreStock"),
                    ("aggregate_version", str(version).encode()),
                    ("deleted", b"false"),
                ],
            )
            stored = ["accepted", version, [event_type], None, None]
        recent = [*recent, [command_id, stored]][-WINDOW:]
        entry = msgpack.packb([version, False, state_bytes, recent], use_bin_type=True)
        staged[key] = entry  # to the changelog at commit: the latest entry per aggregate
        self._result(partition, command_id, aggregate_id, command_type, stored, propagated, False)
        self._done(partition, offset)

    def _done(self, partition: int, offset: int) -> None:
        self.next_offsets[partition] = offset + 1
        self.count += 1

    def _result(
        self,
        partition: int,
        command_id: str,
        aggregate_id: str,
        command_type: str,
        stored: list[Any],
        headers: list[tuple[str, bytes]],
        duplicate: bool,
    ) -> None:
        outcome, version, event_types, code, text = stored
        record = {
            "command_id": command_id,
            "request_id": None,
            "aggregate_type": "store_stock",
            "aggregate_id": aggregate_id,
            "command_type": command_type,
            "outcome": outcome,
            "version": version,
            "event_types": event_types,
            "code": code,
            "message": text,
            "duplicate": duplicate,
            "processed_at": time.time_ns() // 1_000_000,
        }
        # On the command's partition number, as the worker places results.
        self._produce(
            self.topics.results,
            command_id.encode(),
            _encode(*self.result, record),
            headers,
            partition=partition,
        )

    def _send(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self._produce(topic, key, value, headers)

    def _produce(self, topic: str, key: Any, value: Any, headers: Any, **kw: Any) -> None:
        """Produce in the open transaction; held until it begins, once the gap has passed."""
        if not self.in_transaction:
            self.held.append((topic, key, value, headers, kw))
            if time.monotonic() < self.quiet_until:
                return
            self._begin()
            return
        _produce(self.producer, topic, key, value, headers, **kw)

    def _begin(self) -> None:
        """Begin the transaction (waiting out the gap) and send what was held."""
        wait = self.quiet_until - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.producer.begin_transaction()
        self.in_transaction = True
        for topic, key, value, headers, kw in self.held:
            _produce(self.producer, topic, key, value, headers, **kw)
        self.held.clear()

    def _delivered(self, err: KafkaError | None, message: Message) -> None:
        if err is None:
            partition, offset = message.partition() or 0, message.offset() or 0
            if offset > self.changelog_offsets.get(partition, -1):
                self.changelog_offsets[partition] = offset

    def _db(self, partition: int) -> rocksdict.Rdict:
        db = self.dbs.get(partition)
        if db is None:
            options = rocksdict.Options(raw_mode=True)
            options.create_if_missing(True)
            options.set_compression_type(rocksdict.DBCompressionType.lz4())
            db = rocksdict.Rdict(str(self.state_dir / str(partition)), options)
            self.dbs[partition] = db
        return db

    def commit(self) -> None:
        """Changelogs, flush, offsets into the transaction, commit; then the WriteBatches."""
        started = time.monotonic()
        if not self.in_transaction:
            self._begin()
        for partition, staged in self.staged.items():
            items = list(staged.items())
            for key, value in items[:-1]:
                _produce(
                    self.producer, self.topics.changelog, key, value, None, partition=partition
                )
            if items:
                key, value = items[-1]
                _produce(
                    self.producer,
                    self.topics.changelog,
                    key,
                    value,
                    None,
                    partition=partition,
                    on_delivery=self._delivered,
                )
        if self.producer.flush(30):
            raise RuntimeError("flush timed out")
        offsets = [TopicPartition(self.topics.commands, p, o) for p, o in self.next_offsets.items()]
        self.producer.send_offsets_to_transaction(
            offsets, self.consumer.consumer_group_metadata(), 30
        )
        self.producer.commit_transaction(30)
        self.in_transaction = False
        self.quiet_until = time.monotonic() + GAP_S
        self.transactions += 1
        self.commit_seconds += time.monotonic() - started
        for partition, staged in self.staged.items():
            if not staged:
                continue
            batch = rocksdict.WriteBatch(raw_mode=True)
            for key, value in staged.items():
                batch.put(key, value)
            offset = self.changelog_offsets.get(partition)
            if offset is not None:
                batch.put(OFFSET_KEY, str(offset).encode())
            self._db(partition).write(batch, self.write)
            staged.clear()
        self.committed += self.count
        self.count = 0
        self.next_offsets.clear()
        self.open = False


class _FloorLoop(_HandwrittenLoop):
    """The bare-transaction floor: the loop's transactions and records, no processing.

    Per command, its value copied unchanged as the event, the state and the result (keyed
    by the command id, on the command's partition, as a result is), and at commit the last
    value per key to the changelog: the four records of an accepted command, in the same
    transactions on the same commit rules. A command's latency through any exactly-once
    worker on this broker cannot be lower than through this."""

    def process(self, message: Message) -> None:
        partition, offset = message.partition() or 0, message.offset() or 0
        headers = message.headers() or []
        command_id = dict(headers)["command_id"]
        key, value = message.key() or b"", message.value() or b""
        self._send(self.topics.events, key, value, headers)
        self._send(self.topics.state, key, value, headers)
        self._produce(self.topics.results, command_id, value, headers, partition=partition)
        self.staged.setdefault(partition, {})[key] = value
        self._done(partition, offset)


Reader = Callable[[bytes], dict[str, Any]]


def _wire(writer: RecordWriter[Any]) -> tuple[bytes, Any]:
    """The Confluent header and the contract (its compiled writer, else its parsed schema)."""
    return b"\x00" + writer.schema_id.to_bytes(4, "big"), writer.contract


def _encode(header: bytes, contract: Any, record: dict[str, Any]) -> bytes:
    if contract.compiled is not None:
        out = bytearray(header)
        contract.compiled(record, out)
        return bytes(out)
    buf = BytesIO()
    buf.write(header)
    schemaless_writer(buf, contract.parsed, record)
    return buf.getvalue()


def _reader(parsed: Any) -> Reader:
    """The compiled reader of ``parsed`` past the 5-byte header (else fastavro's)."""
    compiled = compile_reader(parsed)
    if compiled is not None:
        return lambda value: compiled(value, 5)

    def read(value: bytes) -> dict[str, Any]:
        buf = BytesIO(value)
        buf.seek(5)
        return schemaless_reader(buf, parsed, None)  # type: ignore[return-value]

    return read


def handwritten_eos(
    kafka: KafkaSettings,
    codec: AvroCodec,
    prefix: str,
    state_dir: Path,
    total: int,
    max_batch: int = 1000,
    commit_interval_ms: int = 100,
) -> LoopTiming:
    """Process ``total`` store-stock commands of ``prefix`` exactly once, by hand."""
    loop = _HandwrittenLoop(kafka, codec, prefix, state_dir, max_batch, commit_interval_ms)
    return loop.run(total)


def main() -> None:
    """Run the hand-written loop until SIGTERM, then print its figures as one JSON line.

    ``python benchmarks/handwritten_loop.py BOOTSTRAP REGISTRY_URL PREFIX STATE_DIR
    [--floor]``: the latency measurement runs it as a process, as it runs ``streamfold
    worker``; with ``--floor``, the bare-transaction floor (:class:`_FloorLoop`).
    """
    bootstrap, registry_url, prefix, state_dir = sys.argv[1:5]
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    codec = AvroCodec(ConfluentSchemaRegistry.from_url(registry_url))
    kind = _FloorLoop if sys.argv[5:] == ["--floor"] else _HandwrittenLoop
    loop = kind(
        KafkaSettings(bootstrap_servers=bootstrap), codec, prefix, Path(state_dir), 1000, 100
    )
    timing = loop.run(None, stop=lambda: bool(stopping))
    figures = {
        "commands": timing.count,
        "transactions": loop.transactions,
        "commit_seconds": loop.commit_seconds,
    }
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
