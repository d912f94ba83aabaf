"""Tracing: a trace starts at the HTTP request and follows the command through the worker.

W3C trace context travels in the ``traceparent`` header: the gateway continues the caller's
trace (or starts one) with a server span, and sets the command's ``traceparent`` header to
that span. The worker makes its decide span a child of the command's ``traceparent`` and
puts the decide span's own on everything the command causes, so a consumer of the events
continues the same trace.

Spans are made with the OpenTelemetry API. :func:`configure_tracing` installs the SDK's
tracer provider with an OTLP/HTTP exporter when an endpoint is configured
(:class:`TracingSettings`, env ``STREAMFOLD_TRACING_*``). Without one no span is made
anywhere, because spans cost the gateway about a fifth of its throughput (measured: 398
against 493 commands/s at SENT with 64 clients): the gateway passes
the caller's ``traceparent`` on, or starts a trace with new random ids, and the
worker (it passes the command's ``traceparent`` on unchanged, and its
hot path pays nothing). A test or an embedding application may install its own provider
first; :func:`configure_tracing` then leaves it alone.
"""

from __future__ import annotations

import random

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "TracingSettings",
    "configure_tracing",
    "new_traceparent",
    "parent_context",
    "traceparent_of",
    "tracing_enabled",
]

_PROPAGATOR = TraceContextTextMapPropagator()


class TracingSettings(BaseSettings):
    """Where spans go (env ``STREAMFOLD_TRACING_*``)."""

    model_config = SettingsConfigDict(env_prefix="STREAMFOLD_TRACING_", frozen=True, extra="forbid")

    #: OTLP/HTTP endpoint, e.g. ``http://otel-collector:4318``; unset: no export.
    otlp_endpoint: str | None = None
    #: Fraction of new traces recorded (a caller's sampled flag is respected).
    sample_ratio: float = 1.0


def tracing_enabled() -> bool:
    """Whether a real tracer provider is installed (not the API's no-op default)."""
    provider = trace.get_tracer_provider()
    return type(provider).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider")


def configure_tracing(service_name: str, settings: TracingSettings) -> bool:
    """Install the SDK provider exporting over OTLP, if an endpoint is configured; whether a
    provider is active. Leaves a provider that is already installed alone."""
    if tracing_enabled():
        return True
    if settings.otlp_endpoint is None:
        return False
    # Imported here: a worker without tracing never loads the SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased  # noqa: PLC0415

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    return True


def parent_context(traceparent: str | None) -> Context | None:
    """The context a ``traceparent`` header names (None when absent or malformed)."""
    if not traceparent:
        return None
    found = _PROPAGATOR.extract({"traceparent": traceparent})
    return found if trace.get_current_span(found).get_span_context().is_valid else None


def new_traceparent() -> str:
    """The ``traceparent`` of a new, sampled trace (random ids: no span is recorded).

    Ids need to be unique, not secret: ``random`` (as OpenTelemetry's SDK uses), not
    ``secrets``, which cost the gateway 3 % of its time."""
    return f"00-{random.getrandbits(128) or 1:032x}-{random.getrandbits(64) or 1:016x}-01"


def traceparent_of(span: Span) -> str | None:
    """The ``traceparent`` header that makes a receiver's span a child of ``span``."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return carrier.get("traceparent")
