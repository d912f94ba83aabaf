"""Typed Kafka connection settings, rendered into librdkafka configuration in one place.

Environment variables (read only at the process edge, by the CLI and the worker entry
points; each maps one to one to a Helm value):

=====================================  ============================================
``STREAMFOLD_KAFKA_BOOTSTRAP_SERVERS``   comma-separated ``host:port`` list
``STREAMFOLD_KAFKA_SECURITY_PROTOCOL``   PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
``STREAMFOLD_KAFKA_SASL_MECHANISM``      PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
``STREAMFOLD_KAFKA_SASL_USERNAME``       SASL user
``STREAMFOLD_KAFKA_SASL_PASSWORD``       SASL password (secret)
``STREAMFOLD_KAFKA_SSL_CA_LOCATION``     CA bundle (PEM) to verify the brokers
``STREAMFOLD_KAFKA_SSL_CERTIFICATE_LOCATION``  client certificate (PEM), for mTLS
``STREAMFOLD_KAFKA_SSL_KEY_LOCATION``    client private key (PEM), for mTLS
``STREAMFOLD_KAFKA_SSL_KEY_PASSWORD``    password of the client key (secret)
``STREAMFOLD_KAFKA_CLIENT_ID``           client.id prefix seen by the brokers
=====================================  ============================================

Every producer streamfold builds uses the Java-compatible ``murmur2_random`` partitioner,
so a Java client, kcat with ``-X partitioner=murmur2_random`` and streamfold put the same
key on the same partition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PARTITIONER", "KafkaSettings"]

PARTITIONER = "murmur2_random"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(BaseSettings):
    """How to reach the Kafka cluster."""

    model_config = SettingsConfigDict(env_prefix="STREAMFOLD_KAFKA_", frozen=True, extra="forbid")

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    client_id: str = "streamfold"

    @model_validator(mode="after")
    def _check_security(self) -> Self:
        if self.security_protocol.startswith("SASL_"):
            missing = [
                name
                for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(
                    f"security_protocol {self.security_protocol} needs {', '.join(missing)}"
                )
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError("ssl_certificate_location and ssl_key_location go together")
        return self

    def common_config(self) -> dict[str, Any]:
        """Render the connection part of a librdkafka configuration."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        if self.sasl_mechanism is not None:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        optional_paths = {
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        conf.update({k: str(v) for k, v in optional_paths.items() if v is not None})
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return conf

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        """Producer configuration: idempotent, acks=all, murmur2 partitioner."""
        conf = self.common_config()
        conf.update(
            {
                "partitioner": PARTITIONER,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
            }
        )
        conf.update(overrides)
        return conf

    def transactional_producer_config(
        self, transactional_id: str, **overrides: Any
    ) -> dict[str, Any]:
        """Producer configuration for exactly-once processing under ``transactional_id``."""
        return self.producer_config(**{"transactional.id": transactional_id, **overrides})

    def consumer_config(self, group_id: str, **overrides: Any) -> dict[str, Any]:
        """Consumer configuration: read_committed, manual commits, start at the earliest offset."""
        conf = self.common_config()
        conf.update(
            {
                "group.id": group_id,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
            }
        )
        conf.update(overrides)
        return conf

    def admin_config(self, **overrides: Any) -> dict[str, Any]:
        """Admin client configuration."""
        conf = self.common_config()
        conf.update(overrides)
        return conf
