"""The gateway's read side: state by id and named queries, from ClickHouse.

State is read from the projections, not from the workers' stores: ``<ctx>_<agg>_state_last``
(``FINAL``) for the latest version, ``<ctx>_<agg>_state`` for ``?version=N``. The projection
trails the write side by the sink's batch interval; a caller that has just written version
N asks ``?min_version=N`` and gets either a state at least that new or a 409 that says which
version the projection holds (send with ``Wait-Stage: projected`` to never see that). The
stores stay private to the workers that own their partitions, so reads never load them.

A ``chdb:`` target belongs to the process of the sink that writes it: reads go through that
sink's query port (:mod:`streamfold.sink.queries`). A server target is queried directly
with one client. Every query runs read-only, with the row and time limits of the settings
(a query file may lower them), parameters bound server-side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from streamfold.observability.logging import get_logger
from streamfold.sink.ddl import qualified_table
from streamfold.sink.named_queries import NamedQuery
from streamfold.sink.queries import run_sql
from streamfold.sink.target import ClickHouseTarget, TargetError, TargetUnavailableError

__all__ = ["ClickHouseReader", "QueryFailed", "StateRow"]

log = get_logger(__name__)

StateRow = dict[str, Any]


class QueryFailed(TargetError):
    """ClickHouse refused a query (a limit it hit, a bad parameter)."""


class ClickHouseReader:
    """Run read-only queries on the projections' target (see the module docstring)."""

    def __init__(
        self,
        target: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        max_rows: int = 10_000,
        max_execution_s: float = 10.0,
    ) -> None:
        self.target = target
        self.database = database
        self.max_rows = max_rows
        self.max_execution_s = max_execution_s
        self._client = (
            None
            if target.startswith("chdb:")
            else ClickHouseTarget(target, database, username=username, password=password)
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def settings(self, max_rows: int | None = None, max_s: float | None = None) -> dict[str, Any]:
        rows = min(self.max_rows, max_rows) if max_rows else self.max_rows
        seconds = min(self.max_execution_s, max_s) if max_s else self.max_execution_s
        return {
            "readonly": 2,  # reads only; per-query settings (the limits) still apply
            "max_result_rows": rows + 1,  # one more than served: "truncated" is known
            "result_overflow_mode": "break",
            "max_execution_time": seconds,
        }

    async def query(
        self, sql: str, parameters: dict[str, Any], settings: dict[str, Any]
    ) -> tuple[list[str], list[Sequence[Any]]]:
        """Run ``sql`` off the event loop; ClickHouse's refusals raise :class:`QueryFailed`."""
        return await asyncio.to_thread(self._query, sql, parameters, settings)

    def _query(
        self, sql: str, parameters: dict[str, Any], settings: dict[str, Any]
    ) -> tuple[list[str], list[Sequence[Any]]]:
        try:
            if self._client is not None:
                return self._client.query(sql, parameters, settings)
            return run_sql(
                self.target, self.database, sql, parameters=parameters, settings=settings
            )
        except TargetUnavailableError:
            raise
        except TargetError as exc:
            raise QueryFailed(str(exc)) from exc

    # ------------------------------------------------------------------ state

    async def state(
        self, table: str, aggregate_id: str, tenant: str | None, version: int | None
    ) -> StateRow | None:
        """The row of one aggregate (latest, or at ``version``); None if there is none.

        ``table`` is ``<ctx>_<agg>``: with the database, a checked identifier, backquoted
        (a :class:`~streamfold.sink.types.ProjectionSchemaError` otherwise, never SQL)."""
        where = "aggregate_id = {id:String}"
        parameters: dict[str, Any] = {"id": aggregate_id}
        if tenant is not None:
            where += " AND tenant = {tenant:String}"
            parameters["tenant"] = tenant
        if version is None:
            source = f"{qualified_table(self.database, f'{table}_state_last')} FINAL"
        else:
            source = qualified_table(self.database, f"{table}_state")
            where += " AND version = {version:UInt64}"
            parameters["version"] = version
        sql = f"SELECT * FROM {source} WHERE {where} ORDER BY version DESC LIMIT 1"
        columns, rows = await self.query(sql, parameters, self.settings(max_rows=1))
        if not rows:
            return None
        return dict(zip(columns, rows[0], strict=True))

    async def run(
        self, query: NamedQuery, values: dict[str, Any], tenant: str | None
    ) -> tuple[list[str], list[Sequence[Any]], bool]:
        """Run a named query; its columns, rows (at most its row limit) and whether cut."""
        parameters = query.bind(values, tenant)
        settings = self.settings(query.max_rows, query.max_execution_s)
        columns, rows = await self.query(query.sql, parameters, settings)
        if not rows and not columns:  # chDB names no columns of an empty result
            _, described = await self.query(f"DESCRIBE ({query.sql})", parameters, settings)
            columns = [str(row[0]) for row in described]
        limit = settings["max_result_rows"] - 1
        return columns, rows[:limit], len(rows) > limit


def state_fields(row: StateRow, model: type[BaseModel]) -> dict[str, Any]:
    """The model's fields of a state row (a nested record's JSON text parsed back)."""
    fields = {}
    for name, info in model.model_fields.items():
        if name not in row:
            continue
        value = row[name]
        if isinstance(value, str) and info.annotation is not str and value[:1] in "{[":
            # Not JSON after all: the model's validation says what is wrong.
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        fields[name] = value
    return fields
