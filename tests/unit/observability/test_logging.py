from __future__ import annotations

import faulthandler
import io
import json
import logging
import os
import signal
import time

import pytest

from streamfold.cli.edge import setup_logging
from streamfold.observability.logging import (
    MessageCorrelation,
    bind_correlation,
    configure_logging,
    end_message_correlation,
    get_logger,
    message_correlation,
)

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


def test_the_message_in_hand_correlates_every_line_until_it_ends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "INFO")
    log = get_logger("streamfold.test")
    token = message_correlation(
        MessageCorrelation("c-1", "r-1", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    )
    log.info("handled")
    logging.getLogger("foreign").warning("from the standard library")
    end_message_correlation(token)
    log.info("after")
    handled, foreign, after = (json.loads(x) for x in capsys.readouterr().err.splitlines())
    assert handled["command_id"] == "c-1"
    assert handled["request_id"] == "r-1"
    assert handled["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert foreign["command_id"] == "c-1"
    assert "command_id" not in after


def test_third_party_libraries_log_at_warning(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "INFO")
    logging.getLogger("httpx2").info('HTTP Request: POST http://registry/subjects "200 OK"')
    logging.getLogger("httpx2").warning("a retry")
    get_logger("streamfold.registry").info("schema registered")
    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert events == ["a retry", "schema registered"]


def test_sigusr1_writes_every_threads_stack(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that went quiet can be asked where it waits (the children's stop asks
    before its SIGKILL)."""
    monkeypatch.setenv("STREAMFOLD_LOG_FORMAT", "json")
    _set_up_then_sigusr1()
    err = capfd.readouterr().err
    assert "Current thread" in err and "test_sigusr1_writes_every_threads_stack" in err


def test_a_cli_run_with_a_replaced_stderr_still_sets_up_and_dumps_to_fd_2(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """click's CliRunner replaces ``sys.stderr`` with a stream that has no file descriptor:
    every command run through it must still start, and SIGUSR1 still writes to fd 2."""
    monkeypatch.setattr("sys.stderr", io.StringIO())
    _set_up_then_sigusr1()
    assert "test_a_cli_run_with_a_replaced_stderr" in capfd.readouterr().err


def _set_up_then_sigusr1() -> None:
    """``setup_logging()``, then a SIGUSR1 to this process; the handlers put back after."""
    previous = signal.getsignal(signal.SIGUSR1)
    setup_logging()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.1)
    finally:
        faulthandler.unregister(signal.SIGUSR1)
        signal.signal(signal.SIGUSR1, previous)
