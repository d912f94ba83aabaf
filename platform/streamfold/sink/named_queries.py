"""Named, parameterised SQL queries kept beside a connector spec: the BI reports and the API.

A query is ``connectors/<context>/queries/[<n>_]<name>.sql`` (the optional number orders
them), one ``SELECT``::

    -- Low-stock items: fewer than `threshold` units on hand.      <- the title (first line)
    -- @param threshold = 5          a default makes a parameter optional
    -- @param store_id = ''          (a JSON or bare literal, parsed by its type)
    -- @max_rows 1000                lower than the gateway's limit, never higher
    -- @max_execution_s 5
    SELECT ... FROM {database}.retail_store_stock_state_last FINAL
    WHERE tenant = {tenant:String} AND on_hand < {threshold:UInt32}

Parameters are ClickHouse's own ``{name:Type}`` placeholders, bound by the server (never
formatted into the SQL); each one's type is the one written in it, and must be the same
wherever the name appears. ``{database}`` is the only text substitution, with a checked
identifier. ``tenant`` is reserved: the gateway binds it from the caller's credential (the
empty string when auth is off) and never from the request; with auth on, a query without a
``{tenant:String}`` filter is refused, because it would read every tenant's rows.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from streamfold.errors import ConfigurationError
from streamfold.sink.types import is_identifier

__all__ = ["TENANT_PARAMETER", "NamedQuery", "QueryParameter", "load_named_queries"]

TENANT_PARAMETER = "tenant"

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):([^{}]+)\}")
_PARAM_LINE = re.compile(r"^--\s*@param\s+([A-Za-z_][A-Za-z0-9_]*)\s*(?:=\s*(.*?))?\s*$")
_LIMIT_LINE = re.compile(r"^--\s*@(max_rows|max_execution_s)\s+([0-9.]+)\s*$")
_NAME = re.compile(r"^(?:\d+_)?([a-z][a-z0-9_]*)$")

_INTEGER = re.compile(r"^U?Int(8|16|32|64|128|256)$")
_FLOAT = re.compile(r"^Float(32|64)$")
_DECIMAL = re.compile(r"^Decimal(\d*)?\(.*\)$")
_DATETIME = re.compile(r"^DateTime(64)?(\(.*\))?$")
_UNSET = object()


@dataclass(frozen=True, slots=True)
class QueryParameter:
    """One ``{name:Type}`` parameter of a query."""

    name: str
    clickhouse_type: str
    default: Any = _UNSET

    @property
    def required(self) -> bool:
        return self.default is _UNSET

    @property
    def nullable(self) -> bool:
        return self.clickhouse_type.startswith("Nullable(")

    @property
    def python_type(self) -> type[Any]:
        """The Python type a request's value is parsed as (and OpenAPI shows)."""
        base = self.clickhouse_type
        if base.startswith("Nullable("):
            base = base[len("Nullable(") : -1]
        if base.startswith("LowCardinality("):
            base = base[len("LowCardinality(") : -1]
        if _INTEGER.match(base):
            return int
        if _FLOAT.match(base):
            return float
        if _DECIMAL.match(base):
            return Decimal
        if base in ("Date", "Date32"):
            return dt.date
        if _DATETIME.match(base):
            return dt.datetime
        if base == "Bool":
            return bool
        return str


@dataclass(frozen=True, slots=True)
class NamedQuery:
    """A query file: its name, title, SQL (database filled in), parameters and limits."""

    name: str
    title: str
    sql: str
    parameters: tuple[QueryParameter, ...]
    max_rows: int | None = None
    max_execution_s: float | None = None

    @property
    def tenant_bound(self) -> bool:
        """Whether the query filters by the reserved ``{tenant:String}`` parameter."""
        return any(p.name == TENANT_PARAMETER for p in self.parameters)

    def bind(self, values: dict[str, Any], tenant: str | None) -> dict[str, Any]:
        """The parameters to send: ``values`` over the defaults, the tenant ('' if none)."""
        bound = {p.name: p.default for p in self.request_parameters if not p.required}
        bound.update(values)
        missing = [p.name for p in self.request_parameters if p.name not in bound]
        if missing:
            raise ConfigurationError(f"query {self.name} needs {', '.join(missing)}")
        if self.tenant_bound:
            bound[TENANT_PARAMETER] = tenant or ""
        return bound

    @property
    def request_parameters(self) -> tuple[QueryParameter, ...]:
        """The parameters a request may give (all but the tenant)."""
        return tuple(p for p in self.parameters if p.name != TENANT_PARAMETER)


def load_named_queries(directory: Path, database: str) -> list[NamedQuery]:
    """The queries of ``directory``, in file-name order, for ``database``."""
    if not is_identifier(database):
        raise ConfigurationError(f"database must be an identifier, not {database!r}")
    queries = [_load(path, database) for path in sorted(directory.glob("*.sql"))]
    names = [q.name for q in queries]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ConfigurationError(f"{directory}: two queries named {sorted(duplicates)}")
    return queries


def _load(path: Path, database: str) -> NamedQuery:
    found = _NAME.match(path.stem)
    if found is None:
        raise ConfigurationError(f"{path}: a query's file name must be [<n>_]<snake_case>.sql")
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    first = lines[0] if lines else ""
    title = first[2:].strip() if first.startswith("--") else found.group(1)
    types: dict[str, str] = {}
    for name, clickhouse_type in _PLACEHOLDER.findall(text):
        if types.setdefault(name, clickhouse_type.strip()) != clickhouse_type.strip():
            raise ConfigurationError(f"{path}: parameter {name!r} has two types")
    if TENANT_PARAMETER in types and types[TENANT_PARAMETER] != "String":
        raise ConfigurationError(f"{path}: the tenant parameter must be {{tenant:String}}")
    defaults: dict[str, Any] = {}
    limits: dict[str, float] = {}
    for line in lines:
        param = _PARAM_LINE.match(line)
        if param is not None:
            name, raw = param.group(1), param.group(2)
            if name not in types:
                raise ConfigurationError(f"{path}: @param {name} is not used in the query")
            if name == TENANT_PARAMETER:
                raise ConfigurationError(f"{path}: the tenant parameter cannot have a default")
            if raw is not None and raw != "":
                defaults[name] = _literal(raw)
            elif types[name].startswith("Nullable("):
                defaults[name] = None
        limit = _LIMIT_LINE.match(line)
        if limit is not None:
            limits[limit.group(1)] = float(limit.group(2))
    parameters = tuple(
        QueryParameter(name, clickhouse_type, defaults.get(name, _UNSET))
        for name, clickhouse_type in types.items()
    )
    max_rows = limits.get("max_rows")
    return NamedQuery(
        name=found.group(1),
        title=title,
        sql=text.replace("{database}", f"`{database}`"),
        parameters=parameters,
        max_rows=int(max_rows) if max_rows is not None else None,
        max_execution_s=limits.get("max_execution_s"),
    )


def _literal(raw: str) -> Any:
    """A default as written: JSON (``5``, ``''`` or ``""``, ``null``), else the bare text."""
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1]
    try:
        return json.loads(raw)
    except ValueError:
        return raw
