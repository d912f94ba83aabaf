"""A wrong password, an untrusted certificate, a wrong host name and a missing client
certificate each stop a process at once with one clear error line, never a hang."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamfold.embedded.ports import free_ports
from streamfold.errors import SecurityError
from streamfold.runtime.process import WorkerProcess
from streamfold.testing.pytest_plugin import SecuredKafka
from streamfold.transport.admin import KafkaAdmin, TopicSpec
from streamfold.transport.connect import verify_kafka_access

from .conftest import ERROR_WITHIN_S, ROOT, clean_env, run_cli

pytestmark = pytest.mark.integration


def refusal_env(secured: SecuredKafka, case: str) -> tuple[dict[str, str], str]:
    """The environment of one refusal case and the words its error must say."""
    if case == "wrong password":
        env = secured.env(sasl_password="not-the-password")
        return env, f"refused the SASL credentials of user {secured.USER}"
    if case == "untrusted CA":
        env = secured.env(ssl_ca_location=str(secured.pki.untrusted_ca))
        return env, f"is not trusted by ssl_ca_location={secured.pki.untrusted_ca}"
    if case == "wrong host name":
        return secured.env("MISNAMED"), "does not match host 127.0.0.1"
    assert case == "no client certificate"
    return secured.env("MTLS"), "requires a client certificate (mTLS)"


CASES = ["wrong password", "untrusted CA", "wrong host name", "no client certificate"]


@pytest.mark.parametrize("case", CASES)
def test_the_cli_prints_one_error_line_within_15_s(secured_kafka: SecuredKafka, case: str) -> None:
    env, expected = refusal_env(secured_kafka, case)
    run = run_cli("topics", "list", env=clean_env(**env))
    lines = run.stderr_lines()
    print(f"{case}: {run.seconds:.2f}s: {lines}")  # the measured time, in the report
    assert run.returncode == 1, run.stderr
    assert run.seconds < ERROR_WITHIN_S
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    assert expected in lines[0], lines
    assert secured_kafka.password not in run.stderr + run.stdout


def test_a_worker_with_a_wrong_password_exits_non_zero_with_a_clear_line(
    secured_kafka: SecuredKafka, tmp_path: Path
) -> None:
    env, expected = refusal_env(secured_kafka, "wrong password")
    (port,) = free_ports(1)
    log = tmp_path / "worker.log"
    worker = WorkerProcess(
        ROOT / "topologies" / "retail" / "stock-only.yaml",
        bootstrap_servers=env["STREAMFOLD_KAFKA_BOOTSTRAP_SERVERS"],
        registry_url="http://127.0.0.1:1",  # not reached: Kafka refuses first
        instance_id="refused",
        state_dir=tmp_path / "state",
        health_port=port,
        log_file=log,
        extra_env=env,
    )
    started = time.monotonic()
    worker.spawn()
    try:
        assert worker.process is not None
        code = worker.process.wait(timeout=ERROR_WITHIN_S)
    finally:
        worker.stop()
    seconds = time.monotonic() - started
    print(f"worker, wrong password: exit {code} after {seconds:.2f}s")
    errors = [line for line in log.read_text().splitlines() if line.startswith("error: ")]
    assert code == 1
    assert len(errors) == 1, log.read_text()[-2000:]
    assert expected in errors[0]


def test_mtls_connects_with_the_client_certificate_and_not_without(
    secured_kafka: SecuredKafka,
) -> None:
    with_certificate = secured_kafka.settings("MTLS", client_certificate=True)
    verify_kafka_access(with_certificate, timeout_s=10)
    admin = KafkaAdmin(with_certificate)
    topic = f"mtls-{time.time_ns()}"
    assert admin.create_topics([TopicSpec(topic)]) == [topic]
    assert topic in admin.list_topics()

    started = time.monotonic()
    with pytest.raises(SecurityError, match=r"requires a client certificate \(mTLS\)"):
        verify_kafka_access(secured_kafka.settings("MTLS"), timeout_s=10)
    assert time.monotonic() - started < ERROR_WITHIN_S


def test_the_cli_lists_topics_over_mtls(secured_kafka: SecuredKafka) -> None:
    topic = f"mtls-cli-{time.time_ns()}"
    KafkaAdmin(secured_kafka.settings()).create_topics([TopicSpec(topic)])
    env = clean_env(**secured_kafka.env("MTLS", client_certificate=True))
    run = run_cli("topics", "list", env=env)
    assert run.returncode == 0, run.stderr
    assert topic in run.stdout.split()
