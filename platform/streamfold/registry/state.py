"""The registry's state: a deterministic state machine over the intent log.

Every write to the registry (register a schema, delete, set a level or a mode) is an *intent*
appended to one single-partition Kafka topic. Every registry process applies the whole log in
offset order with :meth:`RegistryState.apply`, which decides each intent from the state so far
alone: it allocates ids and versions, re-checks compatibility, and either records the change
or records why it was refused. Because every replica applies the same intents in the same
order with the same code, every replica reaches the same state and the same outcome for each
intent; the replica that appended an intent answers its caller with that outcome. That gives,
with no leader and no lock:

- never two different schemas with one id (ids are allocated by the log order);
- never an incompatible version through a race (the check runs at apply time, against the
  versions that really precede it);
- never a lost registration (an intent is answered only once it is in the log and applied).

Reads are served from the local state; a read that finds nothing first catches up with the
log (see :mod:`streamfold.registry.log`), so a caller never misses its own earlier write.

Identity: two schema texts are the same schema when their JSON is equal ignoring whitespace
and the order of object keys, with the same type, references, metadata and rule set. The
same schema under another subject reuses its id.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import avro.schema

from streamfold.contracts.compatibility import (
    CompatibilityLevel,
    Incompatibility,
    InvalidSchemaError,
    check_compatibility,
    parse_schema,
)
from streamfold.registry import errors
from streamfold.registry.errors import RegistryApiError

__all__ = [
    "Candidate",
    "Mode",
    "Reference",
    "RegistryState",
    "SchemaEntry",
    "SubjectVersion",
]

_GUID_NAMESPACE = uuid.UUID("5d6c2f0e-3a51-4f7e-9a43-2b1f0c8e7d10")


class Mode(StrEnum):
    """The registry's modes (global or per subject)."""

    READWRITE = "READWRITE"
    READONLY = "READONLY"
    READONLY_OVERRIDE = "READONLY_OVERRIDE"
    IMPORT = "IMPORT"


@dataclass(frozen=True, slots=True)
class Reference:
    """A schema reference: the named type ``name`` is defined by ``subject`` at ``version``."""

    name: str
    subject: str
    version: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "subject": self.subject, "version": self.version}


@dataclass(slots=True)
class SchemaEntry:
    """A distinct schema and the id it has everywhere."""

    schema_id: int
    key: str  # see :func:`identity`
    guid: str
    schema_type: str
    text: str
    references: tuple[Reference, ...]
    metadata: dict[str, Any] | None
    rule_set: dict[str, Any] | None
    parsed: avro.schema.Schema

    def to_dict(self) -> dict[str, Any]:
        """The schema fields of a Confluent answer (``schemaType`` omitted for Avro)."""
        body: dict[str, Any] = {"schema": self.text}
        if self.schema_type != "AVRO":
            body["schemaType"] = self.schema_type
        if self.references:
            body["references"] = [r.to_dict() for r in self.references]
        if self.metadata is not None:
            body["metadata"] = self.metadata
        if self.rule_set is not None:
            body["ruleSet"] = self.rule_set
        return body


@dataclass(slots=True)
class SubjectVersion:
    """One version of a subject."""

    subject: str
    version: int
    schema_id: int
    deleted: bool = False


@dataclass(slots=True)
class _Subject:
    versions: dict[int, SubjectVersion] = field(default_factory=dict)  # in version order
    config: dict[str, Any] | None = None
    mode: Mode | None = None

    def live(self) -> list[SubjectVersion]:
        return [v for v in self.versions.values() if not v.deleted]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A validated schema payload, parsed, with its identity key."""

    schema_type: str
    schema: Any  # the schema's JSON value
    references: tuple[Reference, ...]
    metadata: Any
    rule_set: Any
    parsed: avro.schema.Schema
    key: str


def identity(
    schema_type: str,
    schema: Any,
    references: Iterable[Reference],
    metadata: Any,
    rule_set: Any,
) -> str:
    """The key two equal schemas share (whitespace and object key order do not matter)."""
    return json.dumps(
        [schema_type, schema, [r.to_dict() for r in references], metadata, rule_set],
        sort_keys=True,
        separators=(",", ":"),
    )


class RegistryState:
    """Subjects, versions, schemas, levels and modes, changed only by :meth:`apply`."""

    def __init__(self, default_level: CompatibilityLevel = CompatibilityLevel.BACKWARD) -> None:
        self.default_config: dict[str, Any] = {"compatibilityLevel": default_level.value}
        self.config: dict[str, Any] = dict(self.default_config)
        self.mode = Mode.READWRITE
        self.schemas: dict[int, SchemaEntry] = {}
        self.ids: dict[str, int] = {}  # identity -> id
        self.guids: dict[str, int] = {}
        self.subjects: dict[str, _Subject] = {}
        self.next_id = 1
        self.applied = 0  # number of intents applied

    # ---------------------------------------------------------------- applying the log

    def apply(self, intent: dict[str, Any]) -> dict[str, Any]:
        """Apply one intent and return its outcome: ``{"ok": ...}`` or ``{"error": ...}``.

        Deterministic: the outcome depends only on the state and the intent.
        """
        self.applied += 1
        handler = _HANDLERS.get(str(intent.get("op")))
        try:
            if handler is None:
                raise errors.bad_request(f"unknown operation {intent.get('op')!r}")
            return {"ok": handler(self, intent)}
        except RegistryApiError as exc:
            return {"error": {"status": exc.status, **exc.body()}}

    def _register(self, intent: dict[str, Any]) -> dict[str, Any]:
        subject = str(intent["subject"])
        entry_subject = self.subjects.get(subject)
        mode = self.effective_mode(subject)
        if mode in (Mode.READONLY, Mode.READONLY_OVERRIDE):
            raise errors.not_permitted(f"Subject {subject} is in read-only mode")
        wanted_id = intent.get("id")
        wanted_version = intent.get("version")
        if (wanted_id is not None or wanted_version is not None) and mode is not Mode.IMPORT:
            raise errors.not_permitted(
                "Overriding the schema id or version is only permitted in IMPORT mode"
            )
        candidate = self.prepare(intent)
        key = candidate.key
        for existing in entry_subject.live() if entry_subject else ():
            if self._key(existing) == key:
                return self._answer(existing)
        if mode is not Mode.IMPORT:
            problems = self.incompatibilities(subject, candidate)
            if problems:
                raise _incompatible(problems, self.level(subject))
        schema_id = self.ids.get(key)
        if wanted_id is not None:
            if not isinstance(wanted_id, int) or wanted_id < 1:
                raise errors.not_permitted(f"invalid schema id {wanted_id!r}")
            if schema_id is not None and schema_id != wanted_id:
                raise errors.not_permitted(
                    f"Schema already registered with id {schema_id} instead of input id {wanted_id}"
                )
            taken = self.schemas.get(wanted_id)
            if taken is not None and taken.key != key:
                raise errors.not_permitted(
                    f"Overwrite new schema with id {wanted_id} is not permitted."
                )
            schema_id = wanted_id
        held = entry_subject.versions if entry_subject else {}
        if wanted_version is not None:
            if not isinstance(wanted_version, int) or wanted_version < 1:
                raise errors.invalid_version(wanted_version)
            if wanted_version in held:
                raise errors.not_permitted(
                    f"Version {wanted_version} of subject {subject} already exists"
                )
            version = wanted_version
        else:
            version = max(held, default=0) + 1
        # Every check has passed: from here on the intent changes the state.
        if schema_id is None:
            schema_id = self.next_id
        if schema_id not in self.schemas:
            self._store(schema_id, candidate)
        self.next_id = max(self.next_id, schema_id + 1)
        self.ids.setdefault(key, schema_id)
        target = self.subjects.setdefault(subject, _Subject())
        created = SubjectVersion(subject, version, schema_id)
        target.versions[version] = created
        target.versions = dict(sorted(target.versions.items()))
        return self._answer(created)

    def _delete_subject(self, intent: dict[str, Any]) -> list[int]:
        subject = str(intent["subject"])
        entry = self._subject(subject, deleted=True)
        permanent = bool(intent.get("permanent"))
        if self.effective_mode(subject) is Mode.READONLY:
            raise errors.not_permitted(f"Subject {subject} is in read-only mode")
        if permanent:
            if entry.live():
                raise RegistryApiError(
                    404,
                    40405,
                    f"Subject '{subject}' was not deleted first before being permanently deleted",
                )
            removed = list(entry.versions)
            del self.subjects[subject]
            return removed
        live = entry.live()
        if not live:
            raise RegistryApiError(
                404,
                40404,
                f"Subject '{subject}' was soft deleted.Set permanent=true to delete permanently",
            )
        for version in live:
            self._refuse_if_referenced(version)
        for version in live:
            version.deleted = True
        return [v.version for v in live]

    def _delete_version(self, intent: dict[str, Any]) -> int:
        subject = str(intent["subject"])
        permanent = bool(intent.get("permanent"))
        found = self.version(subject, intent["version"], deleted=True)
        if self.effective_mode(subject) is Mode.READONLY:
            raise errors.not_permitted(f"Subject {subject} is in read-only mode")
        if permanent:
            if not found.deleted:
                raise RegistryApiError(
                    404,
                    40407,
                    f"Subject '{subject}' Version {found.version} was not deleted first before "
                    "being permanently deleted",
                )
            entry = self.subjects[subject]
            del entry.versions[found.version]
            if not entry.versions and entry.config is None and entry.mode is None:
                del self.subjects[subject]
            return found.version
        if found.deleted:
            raise RegistryApiError(
                404,
                40406,
                f"Subject '{subject}' Version {found.version} was soft deleted.Set "
                "permanent=true to delete permanently",
            )
        self._refuse_if_referenced(found)
        found.deleted = True
        return found.version

    def _set_config(self, intent: dict[str, Any]) -> dict[str, Any]:
        update = dict(intent["config"])
        level = update.pop("compatibility", None) or update.pop("compatibilityLevel", None)
        if level is not None:
            update["compatibilityLevel"] = _level(level).value
        subject = intent.get("subject")
        if subject is None:
            self.config = {**self.config, **update}
        else:
            entry = self.subjects.setdefault(str(subject), _Subject())
            entry.config = {**(entry.config or {}), **update}
        answer = {k: v for k, v in update.items() if k != "compatibilityLevel"}
        if "compatibilityLevel" in update:
            answer["compatibility"] = update["compatibilityLevel"]
        return answer

    def _delete_config(self, intent: dict[str, Any]) -> dict[str, Any]:
        subject = intent.get("subject")
        if subject is None:
            previous = self.config
            self.config = dict(self.default_config)
            return previous
        entry = self.subjects.get(str(subject))
        if entry is None or entry.config is None:
            raise errors.subject_not_found(str(subject))
        previous = entry.config
        entry.config = None
        return previous

    def _set_mode(self, intent: dict[str, Any]) -> dict[str, Any]:
        mode = _mode(intent["mode"])
        subject = intent.get("subject")
        force = bool(intent.get("force"))
        if mode is Mode.IMPORT and not force:
            populated = (
                [self.subjects.get(str(subject))] if subject is not None else self.subjects.values()
            )
            if any(entry is not None and entry.versions for entry in populated):
                raise errors.not_permitted(
                    "Cannot import since found existing subjects; use force=true to override"
                )
        if subject is None:
            self.mode = mode
        else:
            self.subjects.setdefault(str(subject), _Subject()).mode = mode
        return {"mode": mode.value}

    def _delete_mode(self, intent: dict[str, Any]) -> dict[str, Any]:
        subject = str(intent["subject"])
        entry = self.subjects.get(subject)
        if entry is None or entry.mode is None:
            raise errors.subject_not_found(subject)
        previous = entry.mode
        entry.mode = None
        return {"mode": previous.value}

    # ---------------------------------------------------------------- queries

    def prepare(self, intent: dict[str, Any]) -> Candidate:
        """Validate and parse the schema payload of a register, lookup or check request."""
        schema_type = str(intent.get("schemaType") or "AVRO").upper()
        if schema_type != "AVRO":
            raise errors.invalid_schema(
                f"schema type {schema_type} is not supported by this registry (AVRO only)"
            )
        text = intent.get("schema")
        if not isinstance(text, str) or not text.strip():
            raise errors.invalid_schema("the request has no schema (a JSON string)")
        references = tuple(self._reference(raw) for raw in intent.get("references") or ())
        try:
            parsed_json = json.loads(text)
        except json.JSONDecodeError as exc:
            raise errors.invalid_schema(f"schema is not valid JSON: {exc}") from exc
        metadata, rule_set = intent.get("metadata"), intent.get("ruleSet")
        key = identity(schema_type, parsed_json, references, metadata, rule_set)
        known = self.ids.get(key)
        parsed = self.schemas[known].parsed if known else self._parse(text, references)
        return Candidate(schema_type, parsed_json, references, metadata, rule_set, parsed, key)

    def incompatibilities(
        self, subject: str, candidate: Candidate, only: SubjectVersion | None = None
    ) -> list[Incompatibility]:
        """What ``candidate`` breaks under the subject's level (against ``only`` if given)."""
        level = self.level(subject)
        entry = self.subjects.get(subject)
        existing = [only] if only is not None else (entry.live() if entry else [])
        if not existing:
            return []
        pairs = [(v.version, self.schemas[v.schema_id].parsed) for v in existing]
        if only is not None and level.transitive:
            level = CompatibilityLevel(level.value.removesuffix("_TRANSITIVE"))
        return check_compatibility(level, candidate.parsed, pairs)

    def level(self, subject: str | None) -> CompatibilityLevel:
        """The compatibility level in force for ``subject`` (its own, else the global one)."""
        entry = self.subjects.get(subject) if subject is not None else None
        if entry is not None and entry.config and "compatibilityLevel" in entry.config:
            return CompatibilityLevel(entry.config["compatibilityLevel"])
        return CompatibilityLevel(self.config["compatibilityLevel"])

    def effective_mode(self, subject: str) -> Mode:
        entry = self.subjects.get(subject)
        if entry is not None and entry.mode is not None:
            return entry.mode
        return self.mode

    def subject_config(self, subject: str) -> dict[str, Any] | None:
        entry = self.subjects.get(subject)
        return None if entry is None else entry.config

    def subject_mode(self, subject: str) -> Mode | None:
        entry = self.subjects.get(subject)
        return None if entry is None else entry.mode

    def subject_names(self, *, deleted: bool = False, deleted_only: bool = False) -> list[str]:
        """Subjects with a live version (``deleted``: or only soft-deleted ones)."""
        names = []
        for name, entry in self.subjects.items():
            if not entry.versions:
                continue
            has_live = bool(entry.live())
            if deleted_only:
                if not has_live:
                    names.append(name)
            elif has_live or deleted:
                names.append(name)
        return sorted(names)

    def versions(
        self, subject: str, *, deleted: bool = False, deleted_only: bool = False
    ) -> list[SubjectVersion]:
        entry = self._subject(subject, deleted=deleted or deleted_only)
        if deleted_only:
            return [v for v in entry.versions.values() if v.deleted]
        return list(entry.versions.values()) if deleted else entry.live()

    def version(self, subject: str, version: Any, *, deleted: bool = False) -> SubjectVersion:
        """Version ``version`` (an int; ``latest`` or ``-1`` for the latest live one)."""
        entry = self._subject(subject, deleted=deleted)
        if version in ("latest", -1):
            live = entry.live() or (list(entry.versions.values()) if deleted else [])
            if not live:
                raise errors.version_not_found(subject, "latest")
            return live[-1]
        found = entry.versions.get(int(version))
        if found is None or (found.deleted and not deleted):
            raise errors.version_not_found(subject, version)
        return found

    def lookup(self, subject: str, intent: dict[str, Any], *, deleted: bool) -> SubjectVersion:
        """The version of ``subject`` holding this schema (``POST /subjects/{subject}``)."""
        entry = self._subject(subject, deleted=deleted)
        key = self.prepare(intent).key
        candidates = entry.versions.values() if deleted else entry.live()
        for candidate in reversed(list(candidates)):
            if self._key(candidate) == key:
                return candidate
        raise errors.schema_not_found()

    def schema(self, schema_id: int) -> SchemaEntry:
        entry = self.schemas.get(schema_id)
        if entry is None:
            raise errors.schema_not_found(f"Schema {schema_id} not found")
        return entry

    def schema_by_guid(self, guid: str) -> SchemaEntry:
        schema_id = self.guids.get(guid)
        if schema_id is None:
            raise errors.schema_not_found(f"Schema {guid} not found")
        return self.schemas[schema_id]

    def usages(self, schema_id: int, *, deleted: bool = False) -> list[SubjectVersion]:
        """Every subject version holding schema ``schema_id``."""
        self.schema(schema_id)
        return [
            v
            for entry in self.subjects.values()
            for v in entry.versions.values()
            if v.schema_id == schema_id and (deleted or not v.deleted)
        ]

    def referenced_by(self, subject: str, version: int) -> list[int]:
        """Ids of live schemas whose references point at ``subject`` ``version``."""
        ids = set()
        for entry in self.subjects.values():
            for held in entry.live():
                schema = self.schemas[held.schema_id]
                if any(r.subject == subject and r.version == version for r in schema.references):
                    ids.add(schema.schema_id)
        return sorted(ids)

    def answer(self, found: SubjectVersion) -> dict[str, Any]:
        """The Confluent body of a subject version."""
        return self._answer(found)

    # ---------------------------------------------------------------- internals

    def _answer(self, found: SubjectVersion) -> dict[str, Any]:
        entry = self.schemas[found.schema_id]
        return {
            "subject": found.subject,
            "version": found.version,
            "id": found.schema_id,
            "guid": entry.guid,
            **entry.to_dict(),
        }

    def _subject(self, subject: str, *, deleted: bool) -> _Subject:
        entry = self.subjects.get(subject)
        if entry is None or not entry.versions or (not deleted and not entry.live()):
            raise errors.subject_not_found(subject)
        return entry

    def _reference(self, raw: Any) -> Reference:
        if not isinstance(raw, dict):
            raise errors.invalid_schema(f"a reference must be an object, not {raw!r}")
        try:
            reference = Reference(str(raw["name"]), str(raw["subject"]), int(raw["version"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.invalid_schema(
                f"a reference needs name, subject and version: {raw!r}"
            ) from exc
        entry = self.subjects.get(reference.subject)
        held = entry.versions.get(reference.version) if entry else None
        if held is None or held.deleted:
            raise errors.invalid_schema(
                f"reference {reference.name!r} to subject {reference.subject!r} version "
                f"{reference.version} does not exist"
            )
        return reference

    def _reference_texts(self, references: Iterable[Reference]) -> list[str]:
        """Texts of the references and of their own references, dependencies first."""
        texts: list[str] = []
        for reference in references:
            held = self.subjects[reference.subject].versions[reference.version]
            entry = self.schemas[held.schema_id]
            texts.extend(self._reference_texts(entry.references))
            texts.append(entry.text)
        return list(dict.fromkeys(texts))

    def _parse(self, text: str, references: tuple[Reference, ...]) -> avro.schema.Schema:
        try:
            return parse_schema(text, self._reference_texts(references))
        except InvalidSchemaError as exc:
            raise errors.invalid_schema(str(exc)) from exc

    def _store(self, schema_id: int, candidate: Candidate) -> None:
        key = candidate.key
        guid = str(uuid.uuid5(_GUID_NAMESPACE, key))
        self.schemas[schema_id] = SchemaEntry(
            schema_id=schema_id,
            key=key,
            guid=guid,
            schema_type=candidate.schema_type,
            text=json.dumps(candidate.schema, separators=(",", ":")),
            references=candidate.references,
            metadata=candidate.metadata,
            rule_set=candidate.rule_set,
            parsed=candidate.parsed,
        )
        self.guids[guid] = schema_id

    def _key(self, held: SubjectVersion) -> str:
        return self.schemas[held.schema_id].key

    def _refuse_if_referenced(self, held: SubjectVersion) -> None:
        if self.referenced_by(held.subject, held.version):
            raise RegistryApiError(
                422,
                42206,
                f"One or more references exist to the schema {{subject={held.subject}, "
                f"version={held.version}}}",
            )


def _incompatible(problems: list[Incompatibility], level: CompatibilityLevel) -> RegistryApiError:
    details = "; ".join(p.confluent_message() for p in problems)
    return RegistryApiError(
        409,
        409,
        f"Schema being registered is incompatible with an earlier schema for subject "
        f"(compatibility {level.value}): {details}",
    )


def _level(value: Any) -> CompatibilityLevel:
    try:
        return CompatibilityLevel(str(value).upper())
    except ValueError:
        raise RegistryApiError(
            422,
            42203,
            f"Invalid compatibility level. Valid values are none, backward, "
            f"forward, full, backward_transitive, forward_transitive, and full_transitive: "
            f"{value!r}",
        ) from None


def _mode(value: Any) -> Mode:
    try:
        return Mode(str(value).upper())
    except ValueError:
        raise RegistryApiError(
            422,
            42204,
            f"Invalid mode. Valid values are READWRITE, READONLY, "
            f"READONLY_OVERRIDE and IMPORT: {value!r}",
        ) from None


def validate_level(value: Any) -> CompatibilityLevel:
    """Parse a compatibility level or raise the Confluent 42203 error."""
    return _level(value)


def validate_mode(value: Any) -> Mode:
    """Parse a mode or raise the Confluent 42204 error."""
    return _mode(value)


_HANDLERS: dict[str, Any] = {
    "register": RegistryState._register,
    "delete_subject": RegistryState._delete_subject,
    "delete_version": RegistryState._delete_version,
    "set_config": RegistryState._set_config,
    "delete_config": RegistryState._delete_config,
    "set_mode": RegistryState._set_mode,
    "delete_mode": RegistryState._delete_mode,
}
