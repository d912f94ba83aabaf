from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from streamfold.transport.settings import PARTITIONER, KafkaSettings

pytestmark = pytest.mark.unit


def test_producer_config_uses_the_java_compatible_partitioner() -> None:
    conf = KafkaSettings(bootstrap_servers="b:9092").producer_config()
    assert conf["partitioner"] == PARTITIONER == "murmur2_random"
    assert conf["enable.idempotence"] is True
    assert conf["acks"] == "all"
    assert conf["bootstrap.servers"] == "b:9092"


def test_transactional_config_carries_the_id() -> None:
    conf = KafkaSettings().transactional_producer_config("worker-0", **{"linger.ms": 1})
    assert conf["transactional.id"] == "worker-0"
    assert conf["linger.ms"] == 1


def test_consumer_config_reads_committed_only() -> None:
    conf = KafkaSettings().consumer_config("g1")
    assert conf["isolation.level"] == "read_committed"
    assert conf["enable.auto.commit"] is False
    assert conf["group.id"] == "g1"


def test_sasl_renders_secret_and_hides_it_in_repr() -> None:
    settings = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=SecretStr("s3cret"),
    )
    conf = settings.common_config()
    assert conf["sasl.password"] == "s3cret"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert "s3cret" not in repr(settings)


def test_sasl_without_credentials_names_what_is_missing() -> None:
    with pytest.raises(ValidationError, match="sasl_mechanism, sasl_username, sasl_password"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT")


def test_client_certificate_needs_its_key(tmp_path: object) -> None:
    with pytest.raises(ValidationError, match="go together"):
        KafkaSettings(ssl_certificate_location="/tmp/cert.pem")


def test_environment_is_read_by_the_settings_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMFOLD_KAFKA_BOOTSTRAP_SERVERS", "env-host:1234")
    monkeypatch.setenv("STREAMFOLD_KAFKA_SSL_CA_LOCATION", "/etc/ca.pem")
    conf = KafkaSettings().common_config()
    assert conf["bootstrap.servers"] == "env-host:1234"
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
