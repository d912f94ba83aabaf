"""Taking over from a worker that died inside a transaction: fence it, do not wait it out.

A worker SIGKILLed inside a transaction leaves that transaction open at the broker, and on
its own the broker ends it only after ``transaction.timeout.ms`` and its abort check
interval (10 s by default): up to 40 s with the defaults. Meanwhile its records block every
``read_committed`` reader of the partitions it wrote, even once a successor has written its
own after them (the sinks, the gateway's waits, the sagas), and the successor cannot read
the committed offsets of the partitions it takes over (it asks for stable offsets).

So each worker writes its transactional id into the metadata of every offset it commits
(:func:`owner_metadata`), and its consumer's ``client.id`` carries the same id. A worker
assigned partitions (:meth:`Successor.take_over`):

1. reads the last committed offsets of those partitions and their metadata: the
   transactional ids of their last owners. They are read with a consumer of the group that
   never joins it (``read_uncommitted``, so an open transaction's pending offsets do not
   hold the answer up), not with the admin client's ``list_consumer_group_offsets``:
   librdkafka crashes the process (a segfault in its main thread) when that call's answer
   is ``NOT_COORDINATOR``, which is what a coordinator that moves with a lost broker
   answers. Its handler asks the client's consumer group for a new coordinator, and an
   admin client has none (confluentinc/librdkafka#5040, still open in 2.16);
2. asks the group who is in it now;
3. for each last owner that is neither this worker nor a member of the group, initialises a
   producer with that transactional id and closes it: the broker aborts the open
   transaction, if there is one, and bumps the id's epoch, so a zombie of that worker can
   never commit.

A worker that is a member is never fenced: a partition moves from a live member only after
that member has committed in its revoke callback. The group's description is trusted only
when the group is stable and lists the asking worker itself; otherwise (a coordinator that
moved with a lost broker) nothing is fenced and the successor waits, as it would without.
A worker that is not a member yet has no transactions: it initialises its producer only
once it has joined (in its first assignment), so a fence before then costs it nothing. A
worker that left cleanly costs its successors one fence each (a few tens of milliseconds).

A worker that is fenced while it lives (it was out of the group for longer than its session
timeout: paused, or cut off from the coordinator while a broker was lost) is not a zombie
to be stopped: it rejoins (runtime/worker.py). Only when another member holds its own
transactional id (:meth:`Successor.rival`: a second process started with the same instance
id) does it stop, since the two would fence each other for ever.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streamfold.observability.logging import get_logger
from streamfold.transport.admin import coordinator_moving, translate_kafka_error
from streamfold.transport.settings import KafkaSettings

__all__ = ["Successor", "member_client_id", "owner_metadata"]

log = get_logger(__name__)

_TIMEOUT = 30.0
#: The bound of each question asked for a take-over (the partitions' last owners, the
#: group's members). An answer that does not come within it (a coordinator that moved and is
#: still loading the group) is no view to trust: nothing is fenced, and the successor waits
#: as without a fence. A slow answer must not hold a take-over, and a SIGTERM behind it, for
#: the client's 30 s.
_LOOKUP_TIMEOUT = 5.0


def owner_metadata(transactional_id: str) -> str:
    """The offset-commit metadata naming the worker that committed it."""
    return f"owner={transactional_id}"


def member_client_id(client_id: str, transactional_id: str) -> str:
    """A worker consumer's ``client.id``: the prefix, then its transactional id."""
    return f"{client_id}/{transactional_id}"


def _owner_of(metadata: str | None) -> str | None:
    if metadata is None or not metadata.startswith("owner="):
        return None
    return metadata[len("owner=") :] or None


class Successor:
    """Fences the departed last owners of partitions a worker is taking over."""

    def __init__(self, settings: KafkaSettings, group_id: str, transactional_id: str) -> None:
        self._settings = settings
        self._group_id = group_id
        self._transactional_id = transactional_id
        self._admin = AdminClient(settings.admin_config())
        self._offsets = Consumer(
            settings.consumer_config(
                group_id,
                **{
                    "isolation.level": "read_uncommitted",
                    "client.id": f"{settings.client_id}.successor",
                },
            )
        )
        #: Transactional ids fenced so far, for the log and the tests' record.
        self.fenced: list[str] = []

    def close(self) -> None:
        """Close the offsets reader (it never joined the group: nothing to leave)."""
        self._offsets.close()

    def take_over(self, partitions: Sequence[TopicPartition]) -> list[str]:
        """Fence the last owners of ``partitions`` that have left the group; return them."""
        if not partitions:
            return []
        try:
            owners = self._last_owners(partitions)
            owners.discard(self._transactional_id)
            if not owners:
                return []
            members = self._members()
            if members is None:
                return []  # no trustworthy view of the group: wait, as without a fence
            departed = owners - members
        except KafkaException as exc:
            if coordinator_moving(exc):
                # The group's coordinator moves with a lost broker: no view of the group to
                # trust, so wait for the previous owner's transaction, as without a fence.
                log.warning("the group's coordinator is moving; not fencing", error=str(exc))
                return []
            raise translate_kafka_error(exc, "looking up the partitions' last owners") from exc
        for owner in sorted(departed):
            self._fence(owner)
        return sorted(departed)

    def _last_owners(self, partitions: Sequence[TopicPartition]) -> set[str]:
        asked = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        answer = self._offsets.committed(asked, timeout=_LOOKUP_TIMEOUT)
        return {owner for tp in answer if (owner := _owner_of(tp.metadata)) is not None}

    def _members(self) -> set[str] | None:
        """The transactional ids of the group's members, or None when the description cannot
        be trusted to be complete: the group is not stable (a coordinator that moved with a
        lost broker, a rebalance under way) or does not list this worker itself."""
        future = self._admin.describe_consumer_groups(
            [self._group_id], request_timeout=_LOOKUP_TIMEOUT
        )
        description: Any = future[self._group_id].result()
        prefix = f"{self._settings.client_id}/"
        members = {
            member.client_id[len(prefix) :]
            for member in description.members
            if member.client_id.startswith(prefix)
        }
        stable = description.state == ConsumerGroupState.STABLE
        if not stable or self._transactional_id not in members:
            log.info(
                "no fence: the group's view is not settled",
                state=str(description.state),
                members=len(members),
            )
            return None
        return members

    def rival(self, member_id: str | None) -> str | None:
        """The member id of another member of the group with this worker's transactional id
        (not ``member_id``, this worker's own, last known), or None when there is none.

        While the group's coordinator moves with a lost broker the question is asked again,
        for up to ``_TIMEOUT``; then None: a rival, if there is one, fences this worker
        again, and the worker's cap on rejoining stops it."""
        deadline = time.monotonic() + _TIMEOUT
        while True:
            try:
                future = self._admin.describe_consumer_groups(
                    [self._group_id], request_timeout=_TIMEOUT
                )
                description: Any = future[self._group_id].result()
                break
            except KafkaException as exc:
                if not coordinator_moving(exc):
                    doing = f"describing the group {self._group_id}"
                    raise translate_kafka_error(exc, doing) from exc
                if time.monotonic() > deadline:
                    log.warning("the group's coordinator is still moving", error=str(exc))
                    return None
                time.sleep(1.0)
        mine = member_client_id(self._settings.client_id, self._transactional_id)
        for member in description.members:
            if member.client_id == mine and member.member_id != member_id:
                return str(member.member_id)
        return None

    def _fence(self, owner: str) -> None:
        """Abort ``owner``'s open transaction and fence its id (see the module docstring)."""
        producer = Producer(self._settings.transactional_producer_config(owner))
        try:
            producer.init_transactions(_TIMEOUT)
        except KafkaException as exc:
            raise translate_kafka_error(exc, f"fencing the departed worker {owner}") from exc
        finally:
            producer.flush(0)
        self.fenced.append(owner)
        log.warning("fenced a departed worker's transaction", owner=owner)
