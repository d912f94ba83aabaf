"""The README's "Your first domain" section runs as it is written.

Its Python blocks become the module ``topologies.library.domain`` (as the section says the
file is), its tests run, the context loads the way a topology names it, the schemas and the
tables come from the models, and its SQL is a named query that runs against those tables on
the real engine (chDB).
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streamfold.contracts.avro import avro_schema
from streamfold.domain.context import BoundedContext
from streamfold.runtime.topology import TopologySpec
from streamfold.sink.ddl import aggregate_tables, context_tables
from streamfold.sink.named_queries import load_named_queries
from streamfold.sink.target import ClickHouseTarget

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[3] / "README.md"
SECTION = "## Your first domain: an aggregate, a saga and a query"
MODULE = "topologies.library.domain"


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return text[start:end]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(), flags=re.DOTALL)


@pytest.fixture(scope="module")
def domain() -> Iterator[types.ModuleType]:
    module = types.ModuleType(MODULE)
    module.__file__ = str(README)
    package = types.ModuleType("topologies.library")
    package.__path__ = []
    sys.modules["topologies.library"] = package
    sys.modules[MODULE] = module
    try:
        exec(compile("\n".join(_blocks("python")), str(README), "exec"), module.__dict__)
        yield module
    finally:
        del sys.modules[MODULE], sys.modules["topologies.library"]


def test_the_section_has_the_code_it_speaks_of() -> None:
    assert len(_blocks("python")) == 3
    assert len(_blocks("sql")) == 1


def test_the_section_s_own_tests_pass(domain: types.ModuleType) -> None:
    tests = [f for name, f in vars(domain).items() if name.startswith("test_")]
    assert len(tests) == 4
    for test in tests:
        test()


def test_a_test_of_the_section_can_fail(domain: types.ModuleType) -> None:
    given, books = domain.given, domain.books
    with pytest.raises(AssertionError, match="on_loan"):
        given(books, domain.DUNE).when(
            domain.LendBook(book_id="b1", member_id="m2")
        ).expect_rejected("on_loan")


def test_the_context_loads_as_a_topology_names_it(domain: types.ModuleType) -> None:
    spec = TopologySpec.model_validate(
        {"name": "library", "context": f"{MODULE}:library", "source": README}
    )
    context = spec.load_context()
    assert isinstance(context, BoundedContext)
    assert [a.name for a in spec.select(context)] == ["book"]
    assert [s.name for s in context.sagas] == ["loans"]
    schema = avro_schema(domain.Book, context.namespace)
    assert [f["name"] for f in schema["fields"]] == ["book_id", "title", "member_id", "overdue"]


def test_the_query_runs_against_the_tables_made_from_the_models(
    domain: types.ModuleType, tmp_path: Path
) -> None:
    queries = tmp_path / "queries"
    queries.mkdir()
    (queries / "overdue_books.sql").write_text(_blocks("sql")[0], encoding="utf-8")
    (query,) = load_named_queries(queries, "library")
    assert query.title == "Books on loan past their due date."
    context = domain.library
    target = ClickHouseTarget(f"chdb:{tmp_path / 'ch'}", "library")
    try:
        tables = aggregate_tables(context, "book")
        target.ensure([*tables, *context_tables(context)])
        state_last = tables[0]
        books = [
            ("b1", "Dune", "m1", True),
            ("b2", "Emma", "m2", False),
            ("b3", "Ulysses", None, False),
        ]
        rows = []
        for offset, (book_id, title, member_id, overdue) in enumerate(books):
            values = {
                "tenant": "",
                "aggregate_id": book_id,
                "version": 2,
                "deleted": 0,
                "updated_at": datetime(2026, 12, 4, tzinfo=UTC),
                "command_id": f"c{offset}",
                "book_id": book_id,
                "title": title,
                "member_id": member_id,
                "overdue": overdue,
                "_topic": "library.book.state",
                "_partition": 0,
                "_offset": offset,
            }
            rows.append([values[c.name] for c in state_last.columns])
        target.insert(state_last, rows, "t1")
        names, found = target.query(query.sql, query.bind({}, tenant=None))
    finally:
        target.close()
    assert (names, found) == (["book_id", "title", "member_id"], [("b1", "Dune", "m1")])
