"""Gateway settings: typed, documented, read from the environment at the process edge.

Every field maps to ``STREAMFOLD_GATEWAY_<FIELD>`` and to a Helm value (``gateway.config``;
the auth secrets come from ``gateway.auth.existingSecret`` as files).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["AuthMode", "GatewaySettings"]


class AuthMode(StrEnum):
    """How the gateway verifies a caller."""

    OFF = "off"  # the embedded default: no credential, no tenant
    API_KEY = "api_key"  # ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``
    JWT = "jwt"  # ``Authorization: Bearer <jwt>``, verified with pyjwt


class GatewaySettings(BaseSettings):
    """How one gateway replica serves."""

    model_config = SettingsConfigDict(env_prefix="STREAMFOLD_GATEWAY_", frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    #: Prepended to every topic, as the workers' ``topic_prefix``.
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    #: How long a request waits for its stage when it sends no ``Wait-Timeout-Ms``.
    default_wait_ms: int = Field(default=10_000, ge=0)
    #: The longest ``Wait-Timeout-Ms`` honoured; a longer one is cut to this.
    max_wait_ms: int = Field(default=60_000, ge=0)
    #: Most waits open at once; beyond it a request answers 503 (Retry-After) before sending.
    max_open_waits: int = Field(default=50_000, ge=1)
    #: Outcomes (results and PROJECTED acks) kept in memory for waits and lookups, about
    #: 400 bytes each: the default takes about 80 MB when full.
    recent_outcomes: int = Field(default=200_000, ge=1000)
    #: At start, read the outcomes of this many seconds back, so a lookup of a command sent
    #: just before this replica started finds it.
    lookback_s: float = Field(default=300.0, ge=0)
    #: How long the producer tries to deliver a command before the request answers 503.
    send_timeout_ms: int = Field(default=15_000, ge=1000)
    #: Where state and named queries are read: ``chdb:path`` (through the running sink's
    #: query port) or ``http(s)://host:8123``. Default: the connector spec's target.
    clickhouse_target: str | None = None
    clickhouse_username: str | None = None
    clickhouse_password: SecretStr | None = None
    #: The connector directory (spec, ``queries/*.sql``); default ``connectors/<context>``.
    connectors_dir: Path | None = None
    #: Row and time limits of every query (ClickHouse ``max_result_rows``,
    #: ``max_execution_time``); a query file may lower them.
    query_max_rows: int = Field(default=10_000, ge=1)
    query_max_execution_s: float = Field(default=10.0, gt=0)
    auth: AuthMode = AuthMode.OFF
    #: API keys as ``key=tenant:principal`` entries separated by commas.
    api_keys: SecretStr | None = None
    #: A file of API keys, one ``key=tenant:principal`` per line (a mounted Secret).
    api_keys_file: Path | None = None
    #: The HMAC secret of HS256 JWTs.
    jwt_secret: SecretStr | None = None
    #: A PEM public key file for RS256/ES256 JWTs (a mounted Secret).
    jwt_public_key_file: Path | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256", "RS256", "ES256")
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    #: The claim that names the tenant; the principal is ``sub``.
    jwt_tenant_claim: str = "tenant"
    #: Serve HTTPS with this PEM certificate (chain) and key (a mounted Secret); both
    #: unset: plain HTTP (TLS ends at an ingress).
    tls_certificate: Path | None = None
    tls_key: Path | None = None
