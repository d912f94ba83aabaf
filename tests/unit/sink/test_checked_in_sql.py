from __future__ import annotations

from pathlib import Path

import pytest
from topologies.retail.domain import retail

from streamfold.sink.ddl import projection_ddl
from streamfold.sink.named_queries import load_named_queries

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def test_the_checked_in_retail_ddl_is_what_the_models_generate() -> None:
    checked_in = (ROOT / "connectors" / "retail" / "retail.sql").read_text(encoding="utf-8")
    assert checked_in == projection_ddl(retail, "retail"), "run `streamfold projections ddl`"


def test_queries_fill_only_a_checked_database_name() -> None:
    reports = load_named_queries(ROOT / "connectors" / "retail" / "queries", "retail")
    assert [r.name for r in reports] == [
        "supplier_daily_supply",
        "store_daily_sales",
        "current_stock",
        "low_stock",
        "rejected_sales",
        "purchase_orders",
        "purchases",
    ]
    assert all("{database}" not in r.sql and "`retail`." in r.sql for r in reports)
    with pytest.raises(Exception, match="identifier"):
        load_named_queries(ROOT / "connectors" / "retail" / "queries", "x; DROP TABLE y")


def test_every_retail_query_is_bound_to_the_tenant_and_declares_typed_parameters() -> None:
    queries = {
        q.name: q for q in load_named_queries(ROOT / "connectors" / "retail" / "queries", "r")
    }
    assert all(q.tenant_bound for q in queries.values())
    low = {p.name: p for p in queries["low_stock"].request_parameters}
    assert (low["threshold"].python_type, low["threshold"].default) == (int, 5)
    daily = {p.name: p for p in queries["store_daily_sales"].request_parameters}
    assert daily["day_from"].clickhouse_type == "Date" and not daily["day_from"].required
    assert queries["low_stock"].bind({"threshold": 2}, None) == {"threshold": 2, "tenant": ""}
