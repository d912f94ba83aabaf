"""Check once, at start-up, that the Kafka brokers accept this process's credentials.

librdkafka never fails a call for a refused credential or a failed TLS handshake: it
reports the failure through its error callback and keeps reconnecting, so a process with a
wrong password would otherwise retry forever. :func:`verify_kafka_access` fetches metadata
once with an admin client and watches that callback:

1. metadata arrives: the brokers accept us; return;
2. ``_AUTHENTICATION``: raise :class:`~streamfold.errors.SecurityError` naming the user;
3. ``_SSL`` (the broker's certificate failed verification): ask Python's ``ssl`` module, on
   the same address with the same CA, which check failed, and raise naming it (an untrusted
   certificate, or one for another host name: librdkafka says "certificate verify failed"
   for both);
4. ``_TRANSPORT`` with a TLS alert about our certificate: the broker demands a client
   certificate (mTLS) it did not get or does not trust; raise saying so;
5. anything else (a broker not up yet, a refused connection) or ``timeout_s`` passing: log
   it and return, leaving the caller to retry as it always does: only a security failure is
   certain not to heal by waiting.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from streamfold.errors import SecurityError
from streamfold.observability.logging import get_logger
from streamfold.transport.settings import KafkaSettings

__all__ = ["verify_kafka_access"]

log = get_logger(__name__)

#: TLS alerts a broker sends when it refuses (or never got) the client's certificate.
_CLIENT_CERTIFICATE_ALERTS = ("alert bad certificate", "certificate required", "alert unknown ca")


def verify_kafka_access(settings: KafkaSettings, timeout_s: float = 10.0) -> None:
    """Fetch metadata once; raise :class:`SecurityError` if credentials or TLS fail."""
    errors: list[KafkaError] = []
    # log_level 0: the failure is reported once, by the caller, not as librdkafka's FAIL lines.
    admin = AdminClient(settings.admin_config(error_cb=errors.append, log_level=0))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=0.5)
        except KafkaException:  # the cause comes through the error callback
            admin.poll(0)
        else:
            log.debug("kafka accepts this client", bootstrap=settings.bootstrap_servers)
            return
        for error in errors:
            _raise_if_security(settings, error)
        others = [e for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
        if others:
            log.warning(
                "kafka not reachable yet",
                bootstrap=settings.bootstrap_servers,
                error=others[0].str(),
            )
            return
        errors.clear()
    log.warning("kafka did not answer the start-up check", bootstrap=settings.bootstrap_servers)


def _raise_if_security(settings: KafkaSettings, error: KafkaError) -> None:
    text = error.str()
    where = f"Kafka at {settings.bootstrap_servers}"
    if error.code() == KafkaError._AUTHENTICATION:
        raise SecurityError(
            f"{where} refused the SASL credentials of user {settings.sasl_username} "
            f"({settings.sasl_mechanism}): check STREAMFOLD_KAFKA_SASL_USERNAME and _PASSWORD"
        )
    if error.code() == KafkaError._SSL:
        raise SecurityError(_diagnose_certificate(settings))
    if error.code() == KafkaError._TRANSPORT and any(a in text for a in _CLIENT_CERTIFICATE_ALERTS):
        if settings.ssl_certificate_location is None:
            raise SecurityError(
                f"{where} requires a client certificate (mTLS) and none is configured: set "
                "STREAMFOLD_KAFKA_SSL_CERTIFICATE_LOCATION and STREAMFOLD_KAFKA_SSL_KEY_LOCATION"
            )
        raise SecurityError(
            f"{where} refused the client certificate "
            f"ssl_certificate_location={settings.ssl_certificate_location} (not signed by a CA "
            "the broker trusts)"
        )


def _diagnose_certificate(settings: KafkaSettings) -> str:
    """Why the first broker's certificate fails verification, as one sentence."""
    host, _, port = settings.bootstrap_servers.split(",")[0].strip().rpartition(":")
    trust = (
        f"ssl_ca_location={settings.ssl_ca_location}"
        if settings.ssl_ca_location is not None
        else "the system's CA certificates (set STREAMFOLD_KAFKA_SSL_CA_LOCATION)"
    )
    context = _verifying_context(settings.ssl_ca_location)
    try:
        with (
            socket.create_connection((host, int(port)), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            pass
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or str(exc)
        if exc.verify_code in _HOSTNAME_MISMATCH:
            return (
                f"the certificate of Kafka at {host}:{port} does not match host {host} ({reason})"
            )
        return f"the certificate of Kafka at {host}:{port} is not trusted by {trust} ({reason})"
    except (OSError, ValueError) as exc:
        return f"the TLS handshake with Kafka at {host}:{port} failed: {exc}"
    return (
        f"the certificate of Kafka at {host}:{port} failed librdkafka's verification against "
        f"{trust}"
    )


#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_HOSTNAME_MISMATCH = (62, 64)


def _verifying_context(ca: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    context.check_hostname = True
    return context
