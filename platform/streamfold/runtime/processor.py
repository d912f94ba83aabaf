"""The seam between a worker and what it runs: processors, and the outbox they write to.

A worker's loop reads records from the input topics of its processors and hands each record
to the processor of its topic, with the record partition's store and the outbox. Everything
the processor causes goes through the :class:`Outbox`, which is the open transaction of the
worker's :class:`~streamfold.runtime.checkpoint.Checkpoint`: records it sends and store
writes it stages become visible together, when that transaction commits, or not at all.

Aggregates are one kind of processor (:class:`~streamfold.runtime.command_processor.
CommandProcessor`); a new kind implements :class:`Processor` and needs no change to the
checkpoint or the worker's loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import Message

from streamfold.contracts.headers import DeadLetterReason, Headers
from streamfold.errors import PermanentError
from streamfold.state.rocksdb import PartitionStore

__all__ = ["Outbox", "Processor", "Quarantined", "UnproducibleRecordError"]


@dataclass(frozen=True, slots=True)
class Quarantined:
    """An input whose outputs could not be produced: dead-letter it when it is read again."""

    reason: DeadLetterReason
    error: str


class UnproducibleRecordError(PermanentError):
    """A record caused by one input cannot be produced (too large, unencodable).

    The whole input is dead-lettered: the worker aborts the transaction (none of the input's
    records is committed), quarantines its ``input_id`` and processes the batch again.
    """

    def __init__(self, input_id: str, reason: DeadLetterReason, error: str) -> None:
        super().__init__(f"{reason.value}: {error}")
        self.input_id = input_id
        self.reason = reason
        self.error = error


class Outbox(Protocol):
    """Where a processor's outputs go: the worker's open transaction."""

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        partition: int | None = None,
    ) -> None:
        """Produce a record in the transaction (murmur2 of the key unless ``partition``).

        Raises :class:`UnproducibleRecordError` for a record the producer refuses."""
        ...

    def quarantined(self, input_id: str) -> Quarantined | None:
        """Why the input ``input_id`` must be dead-lettered this time, if it must."""
        ...

    @property
    def max_record_bytes(self) -> int:
        """The largest record the producer accepts (key and value)."""
        ...


class Processor(Protocol):
    """Processes the records of one input topic, one partition's store at a time."""

    @property
    def name(self) -> str: ...

    @property
    def input_topic(self) -> str:
        """The topic it consumes (and whose partitions its stores follow)."""
        ...

    @property
    def changelog_topic(self) -> str:
        """The compacted topic its stores are mirrored to, partition for partition."""
        ...

    def process(self, message: Message, store: PartitionStore, outbox: Outbox) -> str:
        """Process one record; return what became of it (an outcome name, for metrics)."""
        ...
