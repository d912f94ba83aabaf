"""Check the write side's promises on what a topology left in Kafka.

:func:`check_aggregate` reads, with ``read_committed``, the results, events and changelog of
one aggregate type and checks:

1. every command sent has exactly one result that is not a duplicate, and a duplicate
   answer only for a command id that was sent more than once (``resent``): a duplicate
   answer to a command sent once means its first result was committed without its offset;
2. per aggregate, the events' versions run 1, 2, 3, ... in offset order, no gap, no duplicate;
3. every aggregate's stored state (the changelog's last entry) is the fold of its events,
   at the version of its last event;
4. so is the state topic's last record of every aggregate.

It returns a :class:`Report` with the counts; each broken promise is listed in
``problems``. Tests assert ``report.problems == []``; benchmarks use the counts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from streamfold.contracts import headers as h
from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.results import RESULT_NAMESPACE, CommandResult
from streamfold.domain.aggregate import Aggregate
from streamfold.domain.messages import Event
from streamfold.domain.naming import AggregateTopics
from streamfold.state.entry import AggregateEntry
from streamfold.transport.reading import read_to_end
from streamfold.transport.settings import KafkaSettings

__all__ = ["Report", "check_aggregate"]


@dataclass(slots=True)
class Report:
    """What :func:`check_aggregate` found."""

    results: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    events: int = 0
    aggregates: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str, limit: int = 50) -> None:
        if len(self.problems) < limit:
            self.problems.append(text)


def locate(
    settings: KafkaSettings, topic: str, command_ids: set[str], *, timeout: float = 300.0
) -> list[str]:
    """Where in ``topic`` the commands ``command_ids`` were read from: one line per partition,
    with the offsets, so a command without a result can be looked for in the workers' logs."""
    where: dict[int, list[int]] = defaultdict(list)
    for message in read_to_end(settings, topic, timeout=timeout):
        if h.header_map(message.headers()).get(h.COMMAND_ID) in command_ids:
            where[message.partition() or 0].append(message.offset() or 0)
    lines = [
        f"  {topic}[{partition}]: {len(offsets)} at offsets {_ranges(offsets)}"
        for partition, offsets in sorted(where.items())
    ]
    found = sum(len(offsets) for offsets in where.values())
    if found < len(command_ids):
        lines.append(f"  {len(command_ids) - found} of them are not in {topic} at all")
    return lines


def _ranges(offsets: list[int]) -> str:
    """``[3, 4, 5, 9]`` as ``"3-5, 9"``."""
    spans: list[list[int]] = []
    for offset in sorted(offsets):
        if spans and offset == spans[-1][1] + 1:
            spans[-1][1] = offset
        else:
            spans.append([offset, offset])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def check_aggregate(
    settings: KafkaSettings,
    aggregate: Aggregate[Any],
    topics: AggregateTopics,
    namespace: str,
    codec: AvroCodec,
    sent: set[str] | None = None,
    resent: set[str] | None = None,
    *,
    timeout: float = 300.0,
) -> Report:
    """Check promises 1-4 for ``aggregate`` (``sent``: the command ids produced, if known;
    ``resent``: those of them sent more than once on purpose)."""
    report = Report()
    # 1. one result per command
    results = codec.reader(CommandResult, namespace=RESULT_NAMESPACE)
    seen: Counter[str] = Counter()
    answered_twice: set[str] = set()
    for message in read_to_end(settings, topics.results, timeout=timeout):
        _, record = results.decode_dict(message.value() or b"")
        report.results += 1
        if record["duplicate"]:
            report.duplicates += 1
            answered_twice.add(record["command_id"])
            continue
        seen[record["command_id"]] += 1
        report.outcomes[record["outcome"]] += 1
    for command_id, count in seen.items():
        if count > 1:
            report.problem(f"command {command_id} has {count} results")
    if sent is not None:
        missing = sent - set(seen)
        if missing:
            report.problem(f"{len(missing)} commands have no result, e.g. {sorted(missing)[:3]}")
            for line in locate(settings, topics.commands, missing, timeout=timeout):
                report.problem(line)
        extra = set(seen) - sent
        if extra:
            report.problem(f"{len(extra)} results for commands never sent: {sorted(extra)[:3]}")
        unexpected = answered_twice - (resent or set())
        if unexpected:
            report.problem(
                f"{len(unexpected)} commands sent once got a duplicate answer (reprocessed "
                f"after their result was committed), e.g. {sorted(unexpected)[:3]}"
            )
    # 2. versions 1..n per aggregate
    events_reader = codec.reader(*aggregate.events, namespace=namespace)
    history: dict[bytes, list[Event]] = defaultdict(list)
    for message in read_to_end(settings, topics.events, timeout=timeout):
        key = message.key() or b""
        version = int(h.header_map(message.headers()).get(h.AGGREGATE_VERSION, "0"))
        expected = len(history[key]) + 1
        if version != expected:
            report.problem(f"{key!r}: event version {version} where {expected} was due")
        event = events_reader.decode(message.value() or b"")
        assert isinstance(event, Event)
        history[key].append(event)
        report.events += 1
    # 3. stored state == fold of events
    states = codec.reader(aggregate.state_type, namespace=namespace)
    latest: dict[bytes, bytes] = {}
    for message in read_to_end(settings, topics.changelog, timeout=timeout):
        latest[message.key() or b""] = message.value() or b""
    report.aggregates = len(latest)
    for key, raw in latest.items():
        entry = AggregateEntry.decode(raw)
        events = history.get(key, [])
        if entry.version != len(events):
            report.problem(f"{key!r}: stored version {entry.version}, {len(events)} events")
            continue
        folded = aggregate.fold(events)
        stored = (
            states.decode_as(entry.state, aggregate.state_type) if entry.state is not None else None
        )
        if stored != folded.state or entry.deleted != folded.deleted:
            report.problem(f"{key!r}: stored state {stored!r} is not the fold {folded.state!r}")
    for key in history.keys() - latest.keys():
        report.problem(f"{key!r}: {len(history[key])} events but no stored state")
    # 4. the state topic's last record == fold of events
    published: dict[bytes, tuple[int, bytes]] = {}
    for message in read_to_end(settings, topics.state, timeout=timeout):
        version = int(h.header_map(message.headers()).get(h.AGGREGATE_VERSION, "0"))
        published[message.key() or b""] = (version, message.value() or b"")
    for key, events in history.items():
        folded = aggregate.fold(events)
        if folded.state is None:
            continue
        last = published.get(key)
        if last is None:
            report.problem(f"{key!r}: {len(events)} events but no state record")
            continue
        version, raw = last
        state = states.decode_as(raw, aggregate.state_type)
        if version != len(events) or state != folded.state:
            report.problem(
                f"{key!r}: state record v{version} {state!r} is not the fold "
                f"v{len(events)} {folded.state!r}"
            )
    return report
