from __future__ import annotations

from pathlib import Path

import pytest
from topologies.retail.domain import retail

from streamfold.sink.ddl import projection_ddl
from streamfold.sink.reports import load_reports

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def test_the_checked_in_retail_ddl_is_what_the_models_generate() -> None:
    checked_in = (ROOT / "connectors" / "retail" / "retail.sql").read_text(encoding="utf-8")
    assert checked_in == projection_ddl(retail, "retail"), "run `streamfold projections ddl`"


def test_reports_fill_only_a_checked_database_name() -> None:
    reports = load_reports(ROOT / "connectors" / "retail" / "reports", "retail")
    assert [r.name for r in reports] == [
        "supplier_daily_supply",
        "store_daily_sales",
        "current_stock",
        "low_stock",
        "rejected_sales",
    ]
    assert all("{database}" not in r.sql and "`retail`." in r.sql for r in reports)
    with pytest.raises(Exception, match="identifier"):
        load_reports(ROOT / "connectors" / "retail" / "reports", "x; DROP TABLE y")
