"""Topic administration over confluent-kafka's AdminClient.

Errors from librdkafka are translated here into streamfold's tree: a timeout or a broker
that cannot be reached is a :class:`~streamfold.errors.RetryableError`; an invalid topic
configuration is a :class:`~streamfold.errors.PermanentError`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from streamfold.errors import PermanentError, RetryableError
from streamfold.observability.logging import get_logger
from streamfold.transport.settings import KafkaSettings

__all__ = [
    "COORDINATOR_MOVING",
    "KafkaAdmin",
    "PartitionInfo",
    "TopicInfo",
    "TopicSpec",
    "coordinator_moving",
    "translate_kafka_error",
]

log = get_logger(__name__)
#: How long a topic that is unknown or has no leader is asked about again (KafkaAdmin.describe).
_SETTLE_S = 5.0


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic to create: name, partitions, replication and topic-level configs."""

    name: str
    partitions: int = 1
    replication_factor: int = 1
    config: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def compacted(cls, name: str, partitions: int = 1, replication_factor: int = 1) -> TopicSpec:
        """A log-compacted topic, as changelogs and the registry's store use."""
        return cls(name, partitions, replication_factor, {"cleanup.policy": "compact"})


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One partition of a topic as the cluster reports it."""

    id: int
    leader: int
    replicas: tuple[int, ...]
    isrs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic's partitions and non-default configuration."""

    name: str
    partitions: tuple[PartitionInfo, ...]
    config: Mapping[str, str]


#: Refusals of a group request (an offset commit, a group description) that only mean the
#: group's coordinator is moving with a lost broker: worth asking again. (_WAIT_COORD: the
#: client is still looking for the new coordinator; _TRANSPORT: the connection to the old
#: one died with the request in flight.)
COORDINATOR_MOVING = frozenset(
    {
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._WAIT_COORD,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
    }
)


def coordinator_moving(exc: KafkaException) -> bool:
    """Whether ``exc`` is one of :data:`COORDINATOR_MOVING`."""
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and error.code() in COORDINATOR_MOVING


def translate_kafka_error(exc: KafkaException, doing: str) -> RetryableError | PermanentError:
    """Map a librdkafka error onto the retryable/permanent split."""
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError):
        message = f"{doing}: {err.str()} ({err.name()})"
        if err.retriable() or err.code() in {KafkaError._TIMED_OUT, KafkaError._TRANSPORT}:
            return RetryableError(message)
        return PermanentError(message)
    return PermanentError(f"{doing}: {exc}")


class KafkaAdmin:
    """Create, list and describe topics."""

    def __init__(self, settings: KafkaSettings, timeout: float = 30.0) -> None:
        self._client = AdminClient(settings.admin_config())
        self._timeout = timeout

    def list_topics(self, include_internal: bool = False) -> list[str]:
        """Names of the topics in the cluster, sorted."""
        try:
            metadata = self._client.list_topics(timeout=self._timeout)
        except KafkaException as exc:
            raise translate_kafka_error(exc, "listing topics") from exc
        names = sorted(metadata.topics)
        return names if include_internal else [n for n in names if not n.startswith("__")]

    def broker_count(self) -> int:
        """How many brokers the cluster has."""
        try:
            return len(self._client.list_topics(timeout=self._timeout).brokers)
        except KafkaException as exc:
            raise translate_kafka_error(exc, "listing brokers") from exc

    def default_replication(self) -> int:
        """The replication factor of a topic the platform creates when none is configured:
        three where the cluster has three brokers or more, else as many as it has."""
        return min(3, max(1, self.broker_count()))

    def create_topics(self, specs: Iterable[TopicSpec], exist_ok: bool = True) -> list[str]:
        """Create topics; with ``exist_ok`` an existing topic is left as it is. Returns created."""
        new = [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=s.replication_factor,
                config=dict(s.config),
            )
            for s in specs
        ]
        if not new:
            return []
        created: list[str] = []
        futures = self._client.create_topics(
            new, operation_timeout=self._timeout, request_timeout=self._timeout
        )
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                err = exc.args[0]
                if (
                    exist_ok
                    and isinstance(err, KafkaError)
                    and (err.code() == KafkaError.TOPIC_ALREADY_EXISTS)
                ):
                    continue
                raise translate_kafka_error(exc, f"creating topic {name}") from exc
            created.append(name)
            log.info("topic created", topic=name)
        self._await_metadata(created)
        return created

    def _await_metadata(self, names: list[str]) -> None:
        """Wait until the created topics show in metadata with a leader for each partition."""
        deadline = time.monotonic() + self._timeout
        pending = set(names)
        while pending:
            try:
                topics = self._client.list_topics(timeout=self._timeout).topics
            except KafkaException as exc:
                raise translate_kafka_error(exc, "waiting for new topics") from exc
            pending = {
                n
                for n in pending
                if n not in topics
                or topics[n].error is not None
                or not topics[n].partitions
                or any(p.leader < 0 for p in topics[n].partitions.values())
            }
            if pending and time.monotonic() > deadline:
                raise RetryableError(f"new topics not visible in time: {sorted(pending)}")
            if pending:
                time.sleep(0.1)

    def delete_topics(self, names: Iterable[str]) -> None:
        """Delete topics (missing ones are an error)."""
        futures = self._client.delete_topics(list(names), operation_timeout=self._timeout)
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                raise translate_kafka_error(exc, f"deleting topic {name}") from exc

    def topic_ids(self, names: Iterable[str]) -> dict[str, str]:
        """Each topic's id (a topic deleted and created again gets a new one)."""
        wanted = list(names)
        try:
            futures = self._client.describe_topics(TopicCollection(wanted))
            return {name: str(future.result().topic_id) for name, future in futures.items()}
        except KafkaException as exc:
            raise translate_kafka_error(exc, f"describing topics {wanted}") from exc

    def describe(self, name: str) -> TopicInfo:
        """Partitions, leaders, replicas and non-default configuration of one topic.

        A topic that is unknown or has no leader is asked about again for up to
        ``_SETTLE_S``, and so are its configs: a topic just created shows in one broker's
        metadata before another's (a worker started on three brokers was refused its own new
        topic this way, by the metadata and, another time, by the configs)."""
        deadline = time.monotonic() + _SETTLE_S
        while True:
            try:
                metadata = self._client.list_topics(topic=name, timeout=self._timeout)
            except KafkaException as exc:
                raise translate_kafka_error(exc, f"describing topic {name}") from exc
            topic = metadata.topics.get(name)
            settling = (
                topic is not None
                and topic.error is not None
                and topic.error.code()
                in (
                    KafkaError.UNKNOWN_TOPIC_OR_PART,
                    KafkaError.LEADER_NOT_AVAILABLE,
                )
            )
            if not settling or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if topic is None or topic.error is not None:
            reason = topic.error.str() if topic is not None and topic.error else "not found"
            raise PermanentError(f"topic {name}: {reason}")
        partitions = tuple(
            PartitionInfo(p.id, p.leader, tuple(p.replicas), tuple(p.isrs))
            for p in sorted(topic.partitions.values(), key=lambda p: p.id)
        )
        resource = ConfigResource(ResourceType.TOPIC, name)
        while True:  # the broker asked may not know the new topic yet either
            try:
                configs = self._client.describe_configs([resource])[resource].result(
                    timeout=self._timeout
                )
                break
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                unknown = (
                    isinstance(error, KafkaError)
                    and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
                )
                if not unknown or time.monotonic() > deadline:
                    raise translate_kafka_error(exc, f"describing configs of {name}") from exc
            time.sleep(0.2)
        overrides = {k: str(v.value) for k, v in sorted(configs.items()) if not v.is_default}
        return TopicInfo(name, partitions, overrides)
