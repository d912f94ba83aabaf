"""Schema evolution against a Confluent-compatible registry: plan, check, register, diff.

The workflow behind ``streamfold schemas check | register | diff | list``:

1. :func:`planned_schemas` lists every command, event and state of the bounded contexts with
   the subject it is registered under and its canonical schema text (the text
   ``schemas/`` holds). Subjects follow TopicRecordNameStrategy, ``{topic}-{record full name}``,
   because several record types share one topic (all commands of an aggregate, all its
   events).
2. :func:`check_plan` asks the registry about each subject: ``new``, ``unchanged``,
   ``compatible`` or ``incompatible``. The registry's own compatibility test is the verdict;
   the local Avro check (:mod:`streamfold.contracts.compatibility`) explains it per field,
   rule and version.
3. :func:`register_plan` registers the new and compatible subjects, and nothing at all when
   any subject is incompatible.

Every registry call goes through :func:`~streamfold.contracts.registry.translate_registry_errors`,
so callers see only the streamfold error tree.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamfold.contracts.avro import avro_schema, canonical_json
from streamfold.contracts.compatibility import (
    CompatibilityLevel,
    Incompatibility,
    check_compatibility,
    parse_schema,
)
from streamfold.contracts.registry import (
    SchemaNotFoundError,
    SchemaRejectedError,
    translate_registry_errors,
)
from streamfold.domain.context import BoundedContext
from streamfold.domain.messages import Message
from streamfold.domain.naming import subject_name
from streamfold.errors import ConfigurationError

__all__ = [
    "CheckStatus",
    "FieldChanges",
    "PlannedSchema",
    "Registration",
    "RegistryClientSettings",
    "SubjectCheck",
    "SubjectDiff",
    "SubjectInfo",
    "check_plan",
    "compatibility_level",
    "connect",
    "diff_plan",
    "field_changes",
    "list_subjects",
    "planned_schemas",
    "register_plan",
    "schema_diff",
]

MessageKind = Literal["command", "event", "state"]
_SUBJECT_NOT_FOUND = 40401  # Confluent's error code; 40403 means the subject lacks the schema


class RegistryClientSettings(BaseSettings):
    """How to reach the schema registry (env ``STREAMFOLD_REGISTRY_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMFOLD_REGISTRY_", frozen=True, extra="forbid"
    )

    url: str = "http://localhost:8081"
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = 10.0
    #: CA bundle (PEM) that verifies an HTTPS registry (default: the system's).
    ssl_ca_location: Path | None = None

    def client_config(self) -> dict[str, Any]:
        """Render the ``SchemaRegistryClient`` configuration (basic auth when a user is set)."""
        conf: dict[str, Any] = {"url": self.url, "timeout": self.timeout_s}
        if self.username is not None:
            secret = self.password.get_secret_value() if self.password is not None else ""
            conf["basic.auth.user.info"] = f"{self.username}:{secret}"
        if self.ssl_ca_location is not None:
            conf["ssl.ca.location"] = str(self.ssl_ca_location)
        return conf


def connect(settings: RegistryClientSettings) -> SchemaRegistryClient:
    """Build a client for the registry ``settings`` describe; nothing is sent yet."""
    try:
        return SchemaRegistryClient(settings.client_config())
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"schema registry {settings.url!r}: {exc}") from exc


# --- the plan ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedSchema:
    """One record type of the working tree and the subject it belongs under."""

    subject: str
    topic: str
    record: str  # Avro full name
    kind: MessageKind
    context: str
    aggregate: str
    schema: str  # canonical JSON, as in schemas/


def planned_schemas(contexts: Iterable[BoundedContext]) -> list[PlannedSchema]:
    """List the subject and schema of every command, event and state, sorted by subject.

    Each aggregate puts its commands on ``{ctx}.{agg}.commands``, the events it evolves with
    (the only ones its decide functions may emit) on ``.events`` and its state on ``.state``.
    An event type evolved by two aggregates appears under both of their event topics.
    """
    planned: dict[str, PlannedSchema] = {}
    for context in contexts:
        for aggregate in context.aggregates:
            by_topic: list[tuple[str, MessageKind, tuple[type[Message], ...]]] = [
                (aggregate.topics.commands, "command", aggregate.commands),
                (aggregate.topics.events, "event", aggregate.events),
                (aggregate.topics.state, "state", (aggregate.state_type,)),
            ]
            for topic, kind, models in by_topic:
                for model in models:
                    record = context.full_name(model)
                    subject = subject_name(topic, record)
                    text = canonical_json(avro_schema(model, context.namespace))
                    planned[subject] = PlannedSchema(
                        subject, topic, record, kind, context.name, aggregate.name, text
                    )
    return [planned[s] for s in sorted(planned)]


# --- check ------------------------------------------------------------------------------


class CheckStatus(StrEnum):
    """How a planned schema stands against its subject in the registry."""

    NEW = "new"  # the subject does not exist
    UNCHANGED = "unchanged"  # this exact schema is already registered under it
    COMPATIBLE = "compatible"  # registering it would add a version
    INCOMPATIBLE = "incompatible"  # the registry would refuse it


@dataclass(frozen=True, slots=True)
class SubjectCheck:
    """The verdict for one subject; ``incompatibilities`` explain an incompatible one."""

    planned: PlannedSchema
    status: CheckStatus
    level: CompatibilityLevel | None = None
    version: int | None = None  # the matching version if unchanged, else the latest
    schema_id: int | None = None  # set when unchanged
    incompatibilities: tuple[Incompatibility, ...] = field(default=())

    @property
    def subject(self) -> str:
        """The registry subject."""
        return self.planned.subject

    def describe(self) -> list[str]:
        """One line for a passing subject; one line per broken rule for a failing one."""
        if self.status is CheckStatus.NEW:
            return [f"{self.subject}: new"]
        if self.status is CheckStatus.UNCHANGED:
            return [f"{self.subject}: unchanged (version {self.version}, id {self.schema_id})"]
        if self.status is CheckStatus.COMPATIBLE:
            return [f"{self.subject}: compatible with version {self.version} ({self.level})"]
        lines = []
        for problem in self.incompatibilities:
            where = f"field {problem.field!r}" if problem.field else "the root schema"
            lines.append(
                f"{self.subject}: {where} breaks {problem.error_type} against version "
                f"{problem.version}: {problem.description}"
            )
        return lines


def compatibility_level(client: SchemaRegistryClient, subject: str | None) -> CompatibilityLevel:
    """The level the registry applies to ``subject``: its own, else the global one."""
    if subject is not None:
        try:
            with translate_registry_errors(f"compatibility level of {subject!r}"):
                return _level(client.get_config(subject))
        except SchemaNotFoundError:  # 40408: no subject-level configuration
            pass
    with translate_registry_errors("global compatibility level"):
        return _level(client.get_config())


def _level(config: Any) -> CompatibilityLevel:
    value = config.compatibility_level or config.compatibility
    return CompatibilityLevel(getattr(value, "value", value) or "BACKWARD")


def check_plan(
    client: SchemaRegistryClient, planned: Iterable[PlannedSchema]
) -> list[SubjectCheck]:
    """Check every planned schema against its subject; the registry's answer is the verdict."""
    return [_check(client, item) for item in planned]


def _check(client: SchemaRegistryClient, item: PlannedSchema) -> SubjectCheck:
    subject, schema = item.subject, Schema(item.schema, "AVRO")
    try:
        with translate_registry_errors(f"look up the schema under {subject!r}"):
            found = client.lookup_schema(subject, schema)
        return SubjectCheck(
            item, CheckStatus.UNCHANGED, version=found.version, schema_id=found.schema_id
        )
    except SchemaNotFoundError as exc:
        if getattr(exc.__cause__, "error_code", None) == _SUBJECT_NOT_FOUND:
            return SubjectCheck(item, CheckStatus.NEW)
    # The check a registration would face: every version the subject's level asks for
    # (the latest one, or all of them under a _TRANSITIVE level).
    with translate_registry_errors(f"test compatibility with {subject!r}"):
        compatible = bool(client.test_compatibility_all_versions(subject, schema))
    level = compatibility_level(client, subject)
    with translate_registry_errors(f"versions of {subject!r}"):
        latest = max(client.get_versions(subject), default=None)
    if compatible:
        return SubjectCheck(item, CheckStatus.COMPATIBLE, level=level, version=latest)
    existing = [(v, parse_schema(text, refs)) for v, text, refs in _history(client, subject)]
    problems = check_compatibility(level, parse_schema(item.schema), existing)
    if not problems:
        problems = [
            Incompatibility(
                error_type="INCOMPATIBLE",
                field="",
                location="/",
                description=f"the registry refuses it under {level}; "
                "the local Avro check names no rule",
                version=latest or 0,
                direction=str(level),
            )
        ]
    return SubjectCheck(
        item, CheckStatus.INCOMPATIBLE, level, latest, incompatibilities=tuple(problems)
    )


def _history(client: SchemaRegistryClient, subject: str) -> list[tuple[int, str, list[str]]]:
    """Every live (version, schema text, referenced texts) of ``subject``, oldest first."""
    with translate_registry_errors(f"versions of {subject!r}"):
        versions = sorted(client.get_versions(subject))
        history = []
        for version in versions:
            found = client.get_version(subject, version)
            schema = found.schema
            assert schema is not None and schema.schema_str is not None
            history.append((version, schema.schema_str, _references(client, schema)))
    return history


def _references(client: SchemaRegistryClient, schema: Schema) -> list[str]:
    """The texts of the schemas ``schema`` references, dependencies first."""
    texts: list[str] = []
    for reference in schema.references or []:
        assert reference.subject is not None and reference.version is not None
        found = client.get_version(reference.subject, reference.version).schema
        assert found is not None and found.schema_str is not None
        texts.extend(_references(client, found))
        texts.append(found.schema_str)
    return texts


# --- register ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registration:
    """A schema the registry accepted: its subject, version and global id."""

    subject: str
    version: int
    schema_id: int


def register_plan(
    client: SchemaRegistryClient, checks: Iterable[SubjectCheck], *, force: Collection[str] = ()
) -> list[Registration]:
    """Register the new and compatible subjects; refuse all when any is incompatible.

    An incompatible subject named in ``force`` is sent anyway (the registry still decides,
    under its compatibility level) and does not block the others. Raises
    :class:`SchemaRejectedError` naming the blocking subjects before anything is registered.
    """
    checks = list(checks)
    blocking = [
        c.subject for c in checks if c.status is CheckStatus.INCOMPATIBLE and c.subject not in force
    ]
    if blocking:
        raise SchemaRejectedError(
            f"nothing registered: {len(blocking)} incompatible subject(s): {', '.join(blocking)}"
        )
    registered = []
    for check in checks:
        if check.status is CheckStatus.UNCHANGED:
            continue
        with translate_registry_errors(f"register under {check.subject!r}"):
            schema = Schema(check.planned.schema, "AVRO")
            found = client.register_schema_full_response(check.subject, schema)
            if found.version is None:  # answered from the client's cache
                found = client.lookup_schema(check.subject, schema)
        assert found.version is not None and found.schema_id is not None
        registered.append(Registration(check.subject, found.version, found.schema_id))
    return registered


# --- diff -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldChanges:
    """How the top-level fields of a record changed between two schemas."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    type_changed: tuple[tuple[str, str, str], ...] = ()  # (field, old type, new type)
    default_added: tuple[str, ...] = ()
    default_removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return any(
            (self.added, self.removed, self.type_changed, self.default_added, self.default_removed)
        )

    def describe(self) -> list[str]:
        """One line per change, e.g. ``+ currency`` or ``~ price: long -> string``."""
        lines = [f"+ {name}" for name in self.added]
        lines += [f"- {name}" for name in self.removed]
        lines += [f"~ {name}: {old} -> {new}" for name, old, new in self.type_changed]
        lines += [f"+ default of {name}" for name in self.default_added]
        lines += [f"- default of {name}" for name in self.default_removed]
        return lines


@dataclass(frozen=True, slots=True)
class SubjectDiff:
    """The registered latest schema of a subject against the working tree's."""

    subject: str
    version: int | None  # the registered latest version; None when the subject is new
    diff: str  # unified diff, "" when identical
    changes: FieldChanges


def field_changes(old: str | None, new: str) -> FieldChanges:
    """Compare the top-level record fields of two schema texts (``old`` None: all added)."""
    old_fields = _fields(old) if old is not None else {}
    new_fields = _fields(new)
    common = [name for name in new_fields if name in old_fields]

    def type_of(spec: dict[str, Any]) -> str:
        avro_type = spec.get("type")
        if isinstance(avro_type, str):
            return avro_type
        return json.dumps(avro_type, sort_keys=True, separators=(",", ":"))

    return FieldChanges(
        added=tuple(n for n in new_fields if n not in old_fields),
        removed=tuple(n for n in old_fields if n not in new_fields),
        type_changed=tuple(
            (n, type_of(old_fields[n]), type_of(new_fields[n]))
            for n in common
            if type_of(old_fields[n]) != type_of(new_fields[n])
        ),
        default_added=tuple(
            n for n in common if "default" in new_fields[n] and "default" not in old_fields[n]
        ),
        default_removed=tuple(
            n for n in common if "default" in old_fields[n] and "default" not in new_fields[n]
        ),
    )


def _fields(text: str) -> dict[str, dict[str, Any]]:
    data = json.loads(text)
    fields = data.get("fields", []) if isinstance(data, dict) else []
    return {spec["name"]: spec for spec in fields}


def schema_diff(subject: str, old: str | None, new: str, *, version: int | None = None) -> str:
    """Unified diff of two schema texts, each pretty-printed with sorted keys."""
    before = _pretty(old).splitlines(keepends=True) if old is not None else []
    label = f"{subject} (registered version {version})" if version is not None else "/dev/null"
    return "".join(
        difflib.unified_diff(
            before, _pretty(new).splitlines(keepends=True), label, f"{subject} (working tree)"
        )
    )


def _pretty(text: str) -> str:
    return json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def diff_plan(client: SchemaRegistryClient, planned: Iterable[PlannedSchema]) -> list[SubjectDiff]:
    """Diff every planned schema against the latest version registered under its subject."""
    diffs = []
    for item in planned:
        old: str | None = None
        version: int | None = None
        try:
            with translate_registry_errors(f"latest of {item.subject!r}"):
                latest = client.get_latest_version(item.subject)
            old, version = latest.schema.schema_str if latest.schema else None, latest.version
        except SchemaNotFoundError:
            pass
        diff = schema_diff(item.subject, old, item.schema, version=version)
        diffs.append(SubjectDiff(item.subject, version, diff, field_changes(old, item.schema)))
    return diffs


# --- list -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubjectInfo:
    """A subject in the registry: its latest version, that version's id and its level."""

    subject: str
    version: int
    schema_id: int
    level: CompatibilityLevel
    deleted: bool = False


def list_subjects(client: SchemaRegistryClient, *, deleted: bool = False) -> list[SubjectInfo]:
    """Every subject, sorted; with ``deleted``, soft-deleted ones too (marked as such)."""
    with translate_registry_errors("list subjects"):
        live = set(client.get_subjects())
        names = set(client.get_subjects(deleted=True)) if deleted else live
    infos = []
    for subject in sorted(names):
        gone = subject not in live
        with translate_registry_errors(f"latest of {subject!r}"):
            version = max(client.get_versions(subject, deleted=gone))
            found = client.get_version(subject, version, deleted=gone)
        assert found.schema_id is not None
        level = compatibility_level(client, subject)
        infos.append(SubjectInfo(subject, version, found.schema_id, level, deleted=gone))
    return infos
