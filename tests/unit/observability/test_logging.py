from __future__ import annotations

import json
import logging

import pytest

from streamfold.observability.logging import bind_correlation, configure_logging, get_logger

pytestmark = pytest.mark.unit


def test_json_lines_carry_bound_correlation_ids(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "INFO")
    log = get_logger("streamfold.test", worker="w-1")
    with bind_correlation(command_id="c-42", request_id="r-7", trace_id=None):
        log.info("command handled", version=3)
        logging.getLogger("foreign").warning("from the standard library")
    log.info("outside")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    handled, foreign, outside = lines
    assert handled["event"] == "command handled"
    assert handled["command_id"] == "c-42"
    assert handled["request_id"] == "r-7"
    assert "trace_id" not in handled  # None values are not bound
    assert handled["worker"] == "w-1"
    assert handled["level"] == "info"
    assert foreign["command_id"] == "c-42"
    assert "command_id" not in outside


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("console", "LOUD")
