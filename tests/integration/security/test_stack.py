"""Every streamfold process over SASL_SSL (SCRAM-SHA-512) with only ``STREAMFOLD_*``
settings, and the registry and the gateway serving HTTPS.

One stack on the module's secured broker: an HTTPS registry keeping its store topic over
SASL_SSL, a worker of the retail write path, a chDB sink, an HTTPS gateway, the SDK's
``CommandProducer`` and ``streamfold topics list``.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from topologies.retail.domain import ReceiveSupply, RegisterSupplier, retail

from streamfold.client import Client
from streamfold.contracts.codec import AvroCodec
from streamfold.contracts.registry import ConfluentSchemaRegistry
from streamfold.domain.naming import aggregate_topics
from streamfold.embedded.children import ChildProcess, start_all, stop_all
from streamfold.embedded.ports import free_ports
from streamfold.gateway.server import GatewayProcess
from streamfold.http.server import ServerTls
from streamfold.registry.server import RegistryProcess
from streamfold.runtime.process import WorkerProcess
from streamfold.sink.process import SinkProcess
from streamfold.testing.pytest_plugin import SecuredKafka
from streamfold.transport.commands import CommandProducer

from .conftest import ROOT, clean_env, run_cli

pytestmark = pytest.mark.integration

TOPOLOGY = ROOT / "topologies" / "retail" / "stock-only.yaml"
CONNECTOR = ROOT / "connectors" / "retail"
#: The stack's other secrets (the SASL password is the secured broker's): none may reach a log.
REGISTRY_USER, REGISTRY_PASSWORD = "ops", "registry-Pässword-9f3"
API_KEY = "gateway-key-5b1e0c"
TENANT = "t1"


@dataclass
class SecuredStack:
    secured: SecuredKafka
    directory: Path
    prefix: str
    registry: RegistryProcess
    worker: WorkerProcess
    sink: SinkProcess
    gateway: GatewayProcess

    @property
    def children(self) -> list[ChildProcess]:
        return [self.registry, self.worker, self.sink, self.gateway]

    @property
    def ca(self) -> Path:
        return self.secured.pki.ca


@pytest.fixture(scope="module")
def stack(
    secured_kafka: SecuredKafka, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecuredStack]:
    directory = tmp_path_factory.mktemp("secured-stack")
    pki = secured_kafka.pki
    tls = ServerTls(pki.server_certificate, pki.server_key)
    kafka_env = clean_env(**secured_kafka.env())
    prefix = f"s{uuid.uuid4().hex[:8]}."
    registry_port, worker_port, sink_port, gateway_port = free_ports(4)
    registry = RegistryProcess(
        secured_kafka.bootstrap(),
        registry_port,
        topic=f"_schemas-{prefix}",
        log_file=directory / "registry.log",
        extra_env=kafka_env,
        tls=tls,
        ca=pki.ca,
        basic_auth=f"{REGISTRY_USER}:{REGISTRY_PASSWORD}",
    )
    registry.start(timeout=120)
    # What every client of the registry needs besides its URL: the CA of its certificate,
    # and its credentials.
    clients_env = {
        **kafka_env,
        "STREAMFOLD_REGISTRY_SSL_CA_LOCATION": str(pki.ca),
        "STREAMFOLD_REGISTRY_USERNAME": REGISTRY_USER,
        "STREAMFOLD_REGISTRY_PASSWORD": REGISTRY_PASSWORD,
    }
    worker = WorkerProcess(
        TOPOLOGY,
        bootstrap_servers=secured_kafka.bootstrap(),
        registry_url=registry.url,
        instance_id="secured-1",
        state_dir=directory / "state",
        health_port=worker_port,
        log_file=directory / "worker.log",
        extra_env={**clients_env, "STREAMFOLD_WORKER_TOPIC_PREFIX": prefix},
    )
    target = f"chdb:{directory / 'clickhouse'}"
    sink = SinkProcess(
        CONNECTOR,
        bootstrap_servers=secured_kafka.bootstrap(),
        registry_url=registry.url,
        health_port=sink_port,
        target=target,
        topic_prefix=prefix,
        log_file=directory / "sink.log",
        extra_env=clients_env,
    )
    gateway = GatewayProcess(
        TOPOLOGY,
        bootstrap_servers=secured_kafka.bootstrap(),
        registry_url=registry.url,
        port=gateway_port,
        connectors_dir=CONNECTOR,
        clickhouse_target=target,
        log_file=directory / "gateway.log",
        extra_env={
            **clients_env,
            "STREAMFOLD_GATEWAY_TOPIC_PREFIX": prefix,
            "STREAMFOLD_GATEWAY_AUTH": "api_key",
            "STREAMFOLD_GATEWAY_API_KEYS": f"{API_KEY}={TENANT}:ops",
        },
        tls=tls,
        ca=pki.ca,
    )
    children = [registry, worker, sink, gateway]
    try:
        start_all([worker, sink], timeout=180)  # their start-ups overlap
        gateway.start(timeout=180)
        yield SecuredStack(secured_kafka, directory, prefix, registry, worker, sink, gateway)
    finally:
        stop_all(list(reversed(children)))


def test_every_process_works_over_sasl_ssl_and_https(stack: SecuredStack) -> None:
    assert stack.registry.url.startswith("https://")
    assert stack.gateway.url.startswith("https://")
    # The SDK's direct Kafka use: the command producer, its codec on the HTTPS registry.
    registry = SchemaRegistryClient(
        {
            "url": stack.registry.url,
            "ssl.ca.location": str(stack.ca),
            "basic.auth.user.info": f"{REGISTRY_USER}:{REGISTRY_PASSWORD}",
        }
    )
    codec = AvroCodec(ConfluentSchemaRegistry(registry))
    settings = stack.secured.settings()
    producer = CommandProducer(settings, codec, retail, topic_prefix=stack.prefix)
    store, item = f"store-{uuid.uuid4().hex[:6]}", f"item-{uuid.uuid4().hex[:6]}"
    try:
        sent = producer.send(
            ReceiveSupply(store_id=store, item_id=item, supplier_id="sup-1", quantity=3),
            tenant=TENANT,
        )
        producer.flush(30)
    finally:
        producer.close()
    with Client(stack.gateway.url, context=retail, api_key=API_KEY, ca_location=stack.ca) as client:
        # The worker processed it and the sink projected it: the gateway says PROJECTED.
        produced = client.wait(sent, wait="projected", timeout=60)
        assert produced.outcome == "accepted"
        assert produced.stage == "projected"
        supplier = f"sup-{uuid.uuid4().hex[:6]}"
        through_gateway = client.send(
            RegisterSupplier(supplier_id=supplier, name="Acme"), wait="projected", timeout=60
        )
        assert through_gateway.outcome == "accepted"
        assert through_gateway.event_types == ["SupplierRegistered"]
        state = client.state("supplier", supplier, min_version=1)
        assert state.version == 1
    # The schemas the worker registered are in the registry's SASL_SSL-backed store.
    commands = aggregate_topics("retail", "store_stock", stack.prefix).commands
    subjects = registry.get_subjects()
    assert any(s.startswith(f"{commands}-") for s in subjects), subjects
    # The CLI with only the documented STREAMFOLD_KAFKA_* variables.
    run = run_cli("topics", "list", env=clean_env(**stack.secured.env()))
    assert run.returncode == 0, run.stderr
    assert commands in run.stdout.split()
    # `streamfold send` to the HTTPS gateway, trusting its CA.
    body = json.dumps({"supplier_id": f"sup-{uuid.uuid4().hex[:6]}", "name": "Beta"})
    env = clean_env(STREAMFOLD_GATEWAY_SSL_CA_LOCATION=str(stack.ca), STREAMFOLD_API_KEY=API_KEY)
    sent_by_cli = run_cli(
        "send", "retail.RegisterSupplier", body, "--url", stack.gateway.url, env=env
    )
    assert sent_by_cli.returncode == 0, sent_by_cli.stderr
    assert json.loads(sent_by_cli.stdout)["outcome"] == "accepted"
    # The sink's query port token, which only its discovery file holds.
    (discovery,) = stack.directory.glob("*.sink.json")
    token = json.loads(discovery.read_text())["token"]
    # No process wrote a secret into its log, as it is or as the JSON lines escape it.
    logs = {c.name: c.log_file.read_text() for c in stack.children if c.log_file is not None}
    assert len(logs) == 4
    secrets = [stack.secured.password, REGISTRY_PASSWORD, API_KEY, token]
    found = [
        (name, secret)
        for name, text in logs.items()
        for secret in secrets
        if secret in text or json.dumps(secret)[1:-1] in text
    ]
    assert found == []


def test_the_https_registry_and_gateway_are_verified_with_the_ca_only(
    stack: SecuredStack,
) -> None:
    with httpx.Client(verify=ssl.create_default_context(cafile=str(stack.ca))) as http:
        assert http.get(f"{stack.gateway.url}/readyz").status_code == 200
        assert http.get(f"{stack.registry.url}/healthz").status_code == 200
    untrusted = ssl.create_default_context(cafile=str(stack.secured.pki.untrusted_ca))
    for url in (f"{stack.gateway.url}/readyz", f"{stack.registry.url}/healthz"):
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(url, timeout=10, context=untrusted)
    plain = stack.gateway.url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{plain}/readyz", timeout=10)
