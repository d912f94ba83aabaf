"""A ClickHouse password written into the sink's target URL never reaches its log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tests.integration.runtime.conftest import RetailRun
from tests.integration.sink.test_sink import _sink_process, _spec

from streamfold.embedded.ports import free_ports
from streamfold.sink.target import redacted

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-Pässword"


def test_a_password_in_the_target_url_is_not_logged(retail_run: RetailRun, tmp_path: Path) -> None:
    (closed,) = free_ports(1)  # nothing listens there: the sink keeps retrying, and says so
    target = f"http://streamfold:{PASSWORD}@127.0.0.1:{closed}"
    process = _sink_process(retail_run, _spec(retail_run, target=target), tmp_path, "alive")
    log = tmp_path / "sink.log"
    try:
        deadline = time.monotonic() + 60
        while f"127.0.0.1:{closed}" not in log.read_text(encoding="utf-8"):
            assert time.monotonic() < deadline, "the sink never logged its target"
            time.sleep(0.5)
    finally:
        process.stop()
    text = log.read_text(encoding="utf-8")
    assert PASSWORD not in text
    assert json.dumps(PASSWORD)[1:-1] not in text  # nor as the JSON log lines escape it
    assert "streamfold:***@127.0.0.1" in text


def test_redacted_hides_the_password_and_keeps_the_rest() -> None:
    assert redacted("http://u:p%40ss@h:8123/db?database=x") == "http://u:***@h:8123/db?database=x"
    assert (
        redacted("https://h:8443/?password=x&database=d")
        == "https://h:8443/?password=***&database=d"
    )
    assert redacted("chdb:///var/lib/ch") == "chdb:///var/lib/ch"
    assert redacted("http://h:8123") == "http://h:8123"
