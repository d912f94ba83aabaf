"""Producers that do not know streamfold's partitioning: the edges of the write path.

:class:`MixedSender` sends each retail command one of five ways, chosen by a seeded draw:

- ``murmur2``: streamfold's own producer (the aggregate's partition);
- ``default``: confluent-kafka with librdkafka's default partitioner (``consistent_random``,
  CRC32 of the key: usually another partition);
- ``keyless``: no key at all (a random partition);
- ``wrong_partition``: an explicit partition that is not the aggregate's;
- ``kcat``: Debian's kcat without murmur2 (``-X partitioner=consistent_random``).

Every command carries a ``command_id`` header, so the test knows what it sent.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from topologies.retail.domain import retail

from streamfold.contracts.codec import AvroCodec, RecordWriter
from streamfold.domain.messages import Command
from streamfold.domain.naming import aggregate_topics
from streamfold.transport.commands import CommandProducer
from streamfold.transport.partitioning import partition_for
from streamfold.transport.settings import KafkaSettings

WAYS = ("murmur2", "default", "keyless", "wrong_partition", "kcat")


class MixedSender:
    """Send retail commands through producers that ignore the aggregate's partition."""

    def __init__(
        self,
        settings: KafkaSettings,
        codec: AvroCodec,
        murmur2: CommandProducer,
        prefix: str,
        partitions: int,
        *,
        seed: int = 1,
        kcat_share: float = 0.02,
    ) -> None:
        self.settings = settings
        self.codec = codec
        self.murmur2 = murmur2
        self.prefix = prefix
        self.partitions = partitions
        self.kcat_share = kcat_share
        self.counts: Counter[str] = Counter()
        self.misplaced = 0  # keyed commands that landed off their aggregate's partition
        self._rng = random.Random(seed)
        # librdkafka's defaults: no partitioner setting at all (consistent_random).
        self._plain = Producer(
            {"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 5, "acks": "all"}
        )
        self._writers: dict[type[Command], tuple[str, RecordWriter[Any]]] = {}
        self._failures: list[str] = []
        self._kcat = shutil.which("kcat")
        self._files = Path(tempfile.mkdtemp(prefix="kcat-"))

    def send(self, command: Command) -> str:
        """Send ``command`` one of the five ways; return its command id."""
        way = self._rng.choice(WAYS[:-1])
        if self._rng.random() < self.kcat_share:
            way = "kcat"
        self.counts[way] += 1
        if way == "murmur2":
            return self.murmur2.send(command)
        topic, writer = self._writer(type(command))
        key = retail.aggregate_for(type(command)).aggregate_id(command)
        value = writer.encode(command)
        command_id = str(uuid.uuid4())
        headers = [("command_id", command_id.encode())]
        home = partition_for(key, self.partitions)
        if way == "default":
            self._produce(topic, value, key.encode(), headers)
        elif way == "keyless":
            self._produce(topic, value, None, headers)
        elif way == "wrong_partition":
            wrong = (home + self._rng.randrange(1, self.partitions)) % self.partitions
            self._produce(topic, value, key.encode(), headers, partition=wrong)
        else:
            self._kcat_send(topic, key, value, command_id)
        return command_id

    def flush(self) -> None:
        self.murmur2.flush()
        left = self._plain.flush(60)
        assert left == 0, f"{left} records not delivered"
        assert not self._failures, self._failures[:3]

    def close(self) -> None:
        self._plain.flush(10)
        shutil.rmtree(self._files, ignore_errors=True)

    def _produce(
        self, topic: str, value: bytes, key: bytes | None, headers: list[Any], **kwargs: Any
    ) -> None:
        while True:
            try:
                self._plain.produce(
                    topic, value, key, headers=headers, on_delivery=self._delivered, **kwargs
                )
                self._plain.poll(0)
                return
            except BufferError:
                self._plain.poll(0.05)

    def _kcat_send(self, topic: str, key: str, value: bytes, command_id: str) -> None:
        assert self._kcat is not None, "kcat is needed (scripts/setup installs it)"
        path = self._files / f"{command_id}.bin"
        path.write_bytes(value)  # kcat sends a file given as an argument as one message
        subprocess.run(
            [
                self._kcat,
                "-P",
                "-b",
                self.settings.bootstrap_servers,
                "-t",
                topic,
                "-k",
                key,
                "-H",
                f"command_id={command_id}",
                "-X",
                "partitioner=consistent_random",
                str(path),
            ],
            check=True,
            timeout=60,
            capture_output=True,
        )

    def _writer(self, command: type[Command]) -> tuple[str, RecordWriter[Any]]:
        found = self._writers.get(command)
        if found is None:
            aggregate = retail.aggregate_for(command)
            topic = aggregate_topics("retail", aggregate.name, self.prefix).commands
            found = self._writers[command] = (
                topic,
                self.codec.writer(topic, command, retail.namespace),
            )
        return found

    def _delivered(self, err: KafkaError | None, message: Message) -> None:
        if err is not None:
            self._failures.append(str(err))
        elif message.key() is not None:
            home = partition_for(message.key() or b"", self.partitions)
            if message.partition() != home:
                self.misplaced += 1
