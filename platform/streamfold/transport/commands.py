"""Send commands to their aggregates' topics, as any producer of commands does.

:class:`CommandProducer` encodes a command with the codec (Confluent wire format,
TopicRecordNameStrategy), keys it by its aggregate id (murmur2 puts it on the aggregate's
partition) and sets the ``command_id`` header (a new UUID unless given) plus any of
``request_id``, ``tenant``, ``principal``, ``traceparent``, ``expected_version``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streamfold.contracts import headers as h
from streamfold.contracts.codec import AvroCodec, RecordWriter
from streamfold.domain.context import BoundedContext
from streamfold.domain.messages import Command
from streamfold.domain.naming import aggregate_topics
from streamfold.errors import RetryableError
from streamfold.observability.logging import get_logger
from streamfold.transport.admin import translate_kafka_error
from streamfold.transport.producing import produce
from streamfold.transport.settings import KafkaSettings

__all__ = ["CommandProducer", "DeliveryCallback"]

log = get_logger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Message], None]


class CommandProducer:
    """Produce the commands of one bounded context (``topic_prefix`` as the workers use)."""

    def __init__(
        self,
        settings: KafkaSettings,
        codec: AvroCodec,
        context: BoundedContext,
        *,
        topic_prefix: str = "",
        **producer_config: Any,
    ) -> None:
        self.context = context
        self.codec = codec
        self.prefix = topic_prefix
        self._producer = Producer(settings.producer_config(**producer_config))
        self._writers: dict[type[Command], tuple[str, RecordWriter[Any]]] = {}
        self._failures: list[KafkaError] = []

    def send(
        self,
        command: Command,
        *,
        command_id: str | None = None,
        expected_version: int | None = None,
        on_delivery: DeliveryCallback | None = None,
        **headers: str | None,
    ) -> str:
        """Queue ``command``; return its command id. :meth:`flush` waits for delivery.

        ``on_delivery(error, message)`` replaces the producer's own failure count for this
        command: a caller that follows each command's delivery (the gateway) sees its error
        there, and must call :meth:`poll` for callbacks to run.
        """
        topic, writer = self._writer(type(command))
        command_id = command_id or str(uuid.uuid4())
        aggregate = self.context.aggregate_for(type(command))
        pairs: list[tuple[str, str | None]] = [(h.COMMAND_ID, command_id)]
        pairs += [(name, value) for name, value in headers.items()]
        if expected_version is not None:
            pairs.append((h.EXPECTED_VERSION, str(expected_version)))
        produce(
            self._producer,
            topic,
            writer.encode(command),
            aggregate.aggregate_id(command).encode(),
            headers=_kafka_headers(h.encode(pairs)),
            on_delivery=on_delivery or self._delivered,
        )
        return command_id

    def send_raw(
        self, topic: str, key: bytes | None, value: bytes | None, headers: h.Headers
    ) -> None:
        """Queue any bytes to any topic (garbage for tests, or a record from elsewhere)."""
        produce(
            self._producer,
            topic,
            value,
            key,
            headers=_kafka_headers(headers),
            on_delivery=self._delivered,
        )

    def reachable(self, timeout: float) -> bool:
        """Whether a broker answers a metadata request within ``timeout`` seconds."""
        try:
            self._producer.list_topics(None, timeout)
        except KafkaException as exc:
            log.debug("no broker answers", error=str(exc))
            return False
        return True

    def poll(self, timeout: float) -> int:
        """Serve delivery callbacks for up to ``timeout`` seconds; how many ran."""
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every queued command is acknowledged; raise if any failed."""
        try:
            left = self._producer.flush(timeout)
        except KafkaException as exc:
            raise translate_kafka_error(exc, "flushing commands") from exc
        if left:
            raise RetryableError(f"{left} commands not acknowledged within {timeout}s")
        if self._failures:
            failures, self._failures = self._failures, []
            raise RetryableError(f"{len(failures)} commands failed, first: {failures[0]}")

    def close(self) -> None:
        """Flush what is queued and release the client's connections and threads."""
        try:
            self._producer.flush(10)
        finally:
            self._producer.close()

    def topic_of(self, command: type[Command]) -> str:
        return self._writer(command)[0]

    def _writer(self, command: type[Command]) -> tuple[str, RecordWriter[Any]]:
        found = self._writers.get(command)
        if found is None:
            aggregate = self.context.aggregate_for(command)
            topic = aggregate_topics(self.context.name, aggregate.name, self.prefix).commands
            found = (topic, self.codec.writer(topic, command, self.context.namespace))
            self._writers[command] = found
        return found

    def _delivered(self, err: KafkaError | None, _message: Message) -> None:
        if err is not None:
            self._failures.append(err)


def _kafka_headers(headers: h.Headers) -> list[tuple[str, str | bytes | None]]:
    return list(headers)
