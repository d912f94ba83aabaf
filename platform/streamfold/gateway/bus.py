"""The command bus behind the gateway's routes: send a command, follow it to a stage.

:class:`CommandBus` owns one idempotent producer (murmur2 keys by aggregate id, ``acks=all``)
and the :class:`~streamfold.gateway.outcomes.OutcomeBook`. A send:

1. refuses with :class:`Unavailable` before sending when the brokers are known to be down
   or too many waits are open (nothing was sent: a retry is safe), and with
   :class:`Unencodable` a command its Avro schema cannot hold;
2. opens the wait, then produces the command, so no outcome can arrive unseen;
3. waits for the broker's acknowledgement (SENT): a delivery error is :class:`Unavailable`;
   the deadline passing first means the command is queued and may still go: *pending*;
4. waits for the outcome the caller asked for, until the deadline.

A command id already known to the book with a result is not sent again: its first outcome
is the answer, marked as a replay (the worker would answer a repeat with that same result).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message

from streamfold.contracts.codec import AvroCodec, EncodeError
from streamfold.domain.context import BoundedContext
from streamfold.domain.messages import Command
from streamfold.domain.naming import aggregate_topics, context_topics
from streamfold.errors import PermanentError, RetryableError
from streamfold.gateway.outcomes import Known, OutcomeBook, Registration, Stage
from streamfold.gateway.settings import GatewaySettings
from streamfold.observability.logging import get_logger
from streamfold.transport.commands import CommandProducer
from streamfold.transport.settings import KafkaSettings

__all__ = ["CommandBus", "Sent", "Unavailable", "Unencodable"]

log = get_logger(__name__)

_PROBE_S = 1.0


class Unencodable(PermanentError):
    """The command passed its model but cannot be encoded (e.g. an int past Avro's long)."""


class Unavailable(RetryableError):
    """The command was not sent (Kafka unreachable, too many waits); a retry is safe."""

    def __init__(self, reason: str, retry_after_s: int = 1) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class Sent:
    """How a send ended: what is known, whether it was a replay, whether it was acked."""

    command_id: str
    known: Known | None
    replay: bool
    acknowledged: bool


class CommandBus:
    """Send commands and follow them (see the module docstring)."""

    def __init__(
        self,
        context: BoundedContext,
        aggregates: list[str],
        settings: GatewaySettings,
        kafka: KafkaSettings,
        codec: AvroCodec,
    ) -> None:
        self.context = context
        self.settings = settings
        self._kafka = kafka
        self._codec = codec
        prefix = settings.topic_prefix
        results = [aggregate_topics(context.name, name, prefix).results for name in aggregates]
        self.book = OutcomeBook(
            kafka,
            codec,
            results,
            context_topics(context.name, prefix).projected,
            recent=settings.recent_outcomes,
            lookback_s=settings.lookback_s,
        )
        self.commands = [c for name in aggregates for c in context.get(name).commands]
        self._producer: CommandProducer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: threading.Thread | None = None
        self._stopping = threading.Event()
        self._brokers_down = False
        self._probe: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect, get every command's writer (its schema registered), start reading."""
        self._loop = asyncio.get_running_loop()
        producer = CommandProducer(
            self._kafka,
            self._codec,
            self.context,
            topic_prefix=self.settings.topic_prefix,
            error_cb=self._kafka_error,
            **{"message.timeout.ms": self.settings.send_timeout_ms, "linger.ms": 1},
        )
        self._producer = producer
        await asyncio.to_thread(lambda: [producer.topic_of(c) for c in self.commands])
        self._poller = threading.Thread(target=self._poll, name="gateway-producer", daemon=True)
        self._poller.start()
        self.book.start(self._loop)

    async def stop(self) -> None:
        """Release every wait, stop reading, deliver what is queued, close."""
        self.book.stop()
        self._stopping.set()
        if self._probe is not None:
            self._probe.cancel()
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join, 5)
        if self._producer is not None:
            await asyncio.to_thread(self._producer.close)

    @property
    def ready(self) -> bool:
        return self.book.ready and not self._brokers_down and self._producer is not None

    @property
    def alive(self) -> bool:
        return self._poller is not None and self._poller.is_alive() and self.book.failure is None

    def _poll(self) -> None:
        assert self._producer is not None
        while not self._stopping.is_set():
            self._producer.poll(0.05)

    def _kafka_error(self, error: KafkaError) -> None:
        """librdkafka's error callback (producer thread)."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            log.warning("every broker is down; commands answer 503 until one is back")
            self._brokers_down = True
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._watch_brokers)
        elif error.fatal():
            log.error("fatal producer error", error=str(error))

    def _watch_brokers(self) -> None:
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._until_brokers_answer())

    async def _until_brokers_answer(self) -> None:
        producer = self._producer
        assert producer is not None
        while self._brokers_down and not self._stopping.is_set():
            if await asyncio.to_thread(producer.reachable, _PROBE_S):
                self._brokers_down = False
                log.info("a broker answers again")
            else:
                await asyncio.sleep(_PROBE_S)

    # ------------------------------------------------------------------ sending

    async def send(
        self,
        command: Command,
        *,
        command_id: str,
        stage: Stage,
        timeout_s: float,
        headers: dict[str, str | None],
        expected_version: int | None,
        on_stage: Callable[[Known | None, Stage], Awaitable[None]] | None = None,
    ) -> Sent:
        """Send and wait (module docstring); ``on_stage`` hears each stage as it is reached.

        Cancelling the call (a client that went away) releases its wait at once.
        """
        deadline = time.monotonic() + timeout_s
        self._admit()
        with self.book.register(command_id, stage) as wait:
            known = self.book.known(command_id)
            replay = known is not None and known.result is not None
            if not replay and not await self._produce(
                command, command_id, headers, expected_version, deadline
            ):
                return Sent(command_id, self.book.known(command_id), False, False)
            return Sent(
                command_id,
                await self._until(wait, command_id, stage, deadline, on_stage, Stage.SENT),
                replay,
                True,
            )

    async def follow(self, command_id: str, stage: Stage, timeout_s: float) -> Known | None:
        """Wait on a command sent anywhere (``GET /commands/{id}``); what is known then."""
        deadline = time.monotonic() + timeout_s
        with self.book.register(command_id, stage) as wait:
            return await self._until(wait, command_id, stage, deadline, None, None)

    async def _until(
        self,
        wait: Registration,
        command_id: str,
        stage: Stage,
        deadline: float,
        on_stage: Callable[[Known | None, Stage], Awaitable[None]] | None,
        floor: Stage | None,
    ) -> Known | None:
        """Wait for ``stage``, the deadline or shutdown; ``floor`` is the stage reached when
        nothing is known yet (SENT once the broker acknowledged the command)."""
        reached: Stage | None = None
        while True:
            known = self.book.known(command_id)
            now_at = known.stage if known is not None else floor
            if (
                on_stage is not None
                and now_at is not None
                and (reached is None or now_at > reached)
            ):
                await on_stage(known, now_at)
            reached = now_at
            left = deadline - time.monotonic()
            if (now_at is not None and now_at >= stage) or left <= 0 or self.book.stopping:
                return known
            await wait.changed(left)

    def _admit(self) -> None:
        if self._brokers_down:
            raise Unavailable("Kafka is unreachable: no broker answers", retry_after_s=2)
        if self.book.open_waits >= self.settings.max_open_waits:
            raise Unavailable(f"{self.book.open_waits} waits are open; try again shortly")
        if self.book.stopping:
            raise Unavailable("the gateway is shutting down")

    async def _produce(
        self,
        command: Command,
        command_id: str,
        headers: dict[str, str | None],
        expected_version: int | None,
        deadline: float,
    ) -> bool:
        """Produce; True once acknowledged, False if the deadline came first."""
        assert self._producer is not None and self._loop is not None
        loop = self._loop
        delivered: asyncio.Future[KafkaError | None] = loop.create_future()

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            loop.call_soon_threadsafe(_settle, delivered, error)

        try:
            self._producer.send(
                command,
                command_id=command_id,
                expected_version=expected_version,
                on_delivery=on_delivery,
                **headers,
            )
        except EncodeError as exc:
            raise Unencodable(str(exc)) from exc
        try:
            error = await asyncio.wait_for(delivered, max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            return False  # queued, maybe sent later: the caller gets 202
        if error is not None:
            raise Unavailable(f"Kafka did not take the command: {error.str()}", 2)
        return True


def _settle(future: asyncio.Future[KafkaError | None], error: KafkaError | None) -> None:
    if not future.done():
        future.set_result(error)
