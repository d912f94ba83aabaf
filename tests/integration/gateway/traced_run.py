"""One command through an in-process gateway and worker, traced into memory (a child process).

``python -m tests.integration.gateway.traced_run <bootstrap> <registry url> <dir>`` installs
an SDK tracer provider with an in-memory exporter (process-wide, which is why this runs in a
process of its own), serves the retail gateway and runs a retail worker on threads, sends
one command with a caller's ``traceparent``, and prints JSON: every finished span (name,
trace id, span id, parent span id) and the ``traceparent`` headers of the command and of
the event it caused.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.evolution import RegistryClientSettings
from streamfold.contracts.headers import header_map
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.domain.naming import aggregate_topics
from streamfold.gateway.server import assemble
from streamfold.gateway.settings import GatewaySettings
from streamfold.http.server import HttpServer
from streamfold.observability.metrics import WorkerMetrics
from streamfold.runtime.settings import WorkerSettings
from streamfold.runtime.topology import load_topology
from streamfold.runtime.worker import AggregateWorker
from streamfold.transport.reading import read_to_end
from streamfold.transport.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[3]
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def main(bootstrap: str, registry_url: str, directory: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    prefix = f"tr{uuid.uuid4().hex[:8]}."
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    topology = load_topology(ROOT / "topologies" / "retail" / "topology.yaml")
    context = topology.load_context()
    worker = AggregateWorker(
        topology,
        context,
        WorkerSettings(
            instance_id="traced", state_dir=directory / "state", topic_prefix=prefix, health_port=-1
        ),
        kafka,
        AvroCodec(ConfluentSchemaRegistry.from_url(registry_url)),
        WorkerMetrics(),
    )
    running = threading.Thread(target=worker.run, daemon=True)
    running.start()
    settings = GatewaySettings(port=0, topic_prefix=prefix, connectors_dir=directory / "none")
    app = assemble(topology, settings, kafka, RegistryClientSettings(url=registry_url))
    server = HttpServer(app, "127.0.0.1", 0, name="gateway")
    server.start()
    try:
        deadline = time.monotonic() + 120
        while not (worker.ready and httpx.get(f"{server.url}/readyz").status_code == 200):
            gateway = httpx.get(f"{server.url}/readyz").text
            assert time.monotonic() < deadline, f"not ready: worker {worker.ready}, {gateway}"
            time.sleep(0.2)
        answer = httpx.post(
            f"{server.url}/retail/supplier/register_supplier",
            json={"supplier_id": "traced", "name": "Traced"},
            headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
    finally:
        server.stop()
        worker.stop()
        running.join(30)
    topics = aggregate_topics("retail", "supplier", prefix)
    command = next(iter(read_to_end(kafka, topics.commands)))
    event = next(iter(read_to_end(kafka, topics.events)))
    spans = [
        {
            "name": span.name,
            "trace_id": f"{span.context.trace_id:032x}",
            "span_id": f"{span.context.span_id:016x}",
            "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        }
        for span in exporter.get_finished_spans()
    ]
    print(
        json.dumps(
            {
                "spans": spans,
                "command": header_map(command.headers()).get("traceparent"),
                "event": header_map(event.headers()).get("traceparent"),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
