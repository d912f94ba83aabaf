"""Faust (faust-streaming) over streamfold's topics: typed events in, commands out.

An existing Faust application can subscribe to a streamfold events (or state, or results)
topic and receive the bounded context's pydantic models, and can send commands a streamfold
worker accepts::

    avro = AvroCodec(ConfluentSchemaRegistry.from_url("http://localhost:8081"))
    topics = StreamfoldTopics(app, retail, avro)

    @app.agent(topics.events("store_stock"))
    async def on_stock(stream):
        async for event in stream:           # SupplyReceived, SaleRecorded, ...
            ...

    await topics.send_command(ReceiveSupply(store_id="s1", item_id="apple", ...))

:class:`StreamfoldCodec` is the Faust codec: Confluent wire format (magic byte, schema id,
Avro), the writer's schema fetched from the registry by id and resolved against the
context's models (:class:`~streamfold.contracts.codec.RecordReader`); encoding registers or
looks up the schema under the topic's TopicRecordNameStrategy subject, as every streamfold
writer does. Keys are the aggregate id as UTF-8 (results: the command id).

A command is sent as :class:`~streamfold.transport.commands.CommandProducer` sends it: keyed
by its aggregate id, with a ``command_id`` header (and any of ``request_id``, ``tenant``,
``principal``, ``traceparent``, ``expected_version``). The partition must be the one a Java
client picks (murmur2 of the key), or the aggregate's commands would be split over two
partitions: aiokafka's default partitioner, which Faust uses unless ``producer_partitioner``
is set, is that murmur2; with ``partitions`` given, the partition is computed here
(:func:`~streamfold.transport.partitioning.partition_for`) and set on each record instead, so
any ``producer_partitioner`` is fine.

Needs the ``faust`` extra: ``pip install 'streamfold[faust]'``.
"""

from __future__ import annotations

import uuid
from typing import Any

import faust
from faust.types import TopicT
from pydantic import BaseModel

from streamfold.contracts import headers as h
from streamfold.contracts.codec import AvroCodec, CodecError, Contract, RecordReader, RecordWriter
from streamfold.contracts.results import RESULT_NAMESPACE, CommandResult
from streamfold.domain.context import BoundedContext
from streamfold.domain.messages import Command
from streamfold.domain.naming import AggregateTopics, aggregate_topics
from streamfold.errors import ConfigurationError
from streamfold.transport.partitioning import partition_for

__all__ = ["StreamfoldCodec", "StreamfoldTopics"]


class StreamfoldCodec(faust.Codec):
    """Values of one streamfold topic <-> the pydantic models of a bounded context.

    Decoding accepts any record type of the context (commands, events, states) and command
    results; encoding writes a model with its schema under ``{topic}-{record full name}``.
    """

    def __init__(
        self,
        avro: AvroCodec,
        context: BoundedContext,
        topic: str,
        children: tuple[faust.Codec, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        # Faust's clone() rebuilds a codec from its kwargs, so they carry the arguments.
        super().__init__(children, avro=avro, context=context, topic=topic, **kwargs)
        self.avro = avro
        self.context = context
        self.topic = topic
        models = (*context.commands(), *context.events(), *context.states())
        contracts = tuple(Contract.of(m, context.namespace) for m in models)
        self._reader = RecordReader(
            avro, (*contracts, Contract.of(CommandResult, RESULT_NAMESPACE))
        )
        self._models = {*models, CommandResult}
        self._writers: dict[type[BaseModel], RecordWriter[Any]] = {}

    def _loads(self, s: bytes) -> Any:
        return self._reader.decode(s)

    def _dumps(self, s: Any) -> bytes:
        if type(s) not in self._models:
            raise CodecError(
                f"{self.topic} carries {self.context.name} models, not {type(s).__name__}"
            )
        writer = self._writers.get(type(s))
        if writer is None:  # the first of its type: registered (or looked up) once
            namespace = RESULT_NAMESPACE if isinstance(s, CommandResult) else self.context.namespace
            writer = self.avro.writer(self.topic, type(s), namespace)
            self._writers[type(s)] = writer
        return writer.encode(s)


class StreamfoldTopics:
    """Faust topics over one bounded context's streamfold topics (``topic_prefix`` as the
    workers use), and the sending of its commands."""

    def __init__(
        self,
        app: faust.App,
        context: BoundedContext,
        avro: AvroCodec,
        *,
        topic_prefix: str = "",
        partitions: int | None = None,
    ) -> None:
        # faust types the setting as its descriptor's function, so read it untyped.
        custom = getattr(app.conf, "producer_partitioner", None)
        if partitions is None and custom is not None:
            raise ConfigurationError(
                "the app sets producer_partitioner, so commands could land on another "
                "partition than a Java client puts them: pass partitions= (the commands "
                "topics' partition count) to compute it"
            )
        self.app = app
        self.context = context
        self.avro = avro
        self.prefix = topic_prefix
        self.partitions = partitions
        self._topics: dict[str, TopicT] = {}

    def events(self, aggregate: str) -> TopicT:
        """``{context}.{aggregate}.events``: keys are aggregate ids, values the events."""
        return self._topic(self._names(aggregate).events)

    def state(self, aggregate: str) -> TopicT:
        """``{context}.{aggregate}.state``: each state after a change, keyed by aggregate id."""
        return self._topic(self._names(aggregate).state)

    def results(self, aggregate: str) -> TopicT:
        """``{context}.{aggregate}.results``: a :class:`CommandResult` per command id."""
        return self._topic(self._names(aggregate).results)

    def commands(self, aggregate: str) -> TopicT:
        """``{context}.{aggregate}.commands``; send with :meth:`send_command`."""
        return self._topic(self._names(aggregate).commands)

    async def send_command(
        self,
        command: Command,
        *,
        command_id: str | None = None,
        expected_version: int | None = None,
        **headers: str | None,
    ) -> str:
        """Send ``command`` to its aggregate's commands topic; return its command id.

        Returns once the record is handed to the producer, as Faust's ``send`` does; await
        ``app.producer.flush()`` to wait for the broker.
        """
        aggregate = self.context.aggregate_for(type(command))
        command_id = command_id or str(uuid.uuid4())
        pairs: list[tuple[str, str | None]] = [(h.COMMAND_ID, command_id), *headers.items()]
        if expected_version is not None:
            pairs.append((h.EXPECTED_VERSION, str(expected_version)))
        key = aggregate.aggregate_id(command)
        partition = None if self.partitions is None else partition_for(key, self.partitions)
        await self.commands(aggregate.name).send(
            key=key, value=command, partition=partition, headers=h.encode(pairs)
        )
        return command_id

    def _names(self, aggregate: str) -> AggregateTopics:
        self.context.get(aggregate)  # an unknown name fails here, naming the known ones
        return aggregate_topics(self.context.name, aggregate, self.prefix)

    def _topic(self, name: str) -> TopicT:
        topic = self._topics.get(name)
        if topic is None:
            topic = self.app.topic(
                name,
                key_type=str,
                key_serializer="raw",
                value_serializer=StreamfoldCodec(self.avro, self.context, name),
            )
            self._topics[name] = topic
        return topic
