"""Registrations and lookups per second of one ``streamfold registry serve`` process.

Run: ``python benchmarks/registry_bench.py [--registrations N] [--lookups N] [--clients C]``.

It starts its own single-node Kafka (the fetched jars) and one registry process, then measures,
over keep-alive HTTP connections:

- registrations/s of distinct schemas, by one client and by ``C`` concurrent clients (each
  registration is an intent appended to Kafka and applied before the answer);
- lookups/s: schema by id, latest version of a subject, and schema-to-id lookup
  (``POST /subjects/{s}``), by ``C`` clients;
- the HTTP floor in the same run: ``GET /`` (no state touched), as the ratio's baseline.

The report goes to ``benchmarks/reports/registry.md``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from streamfold.cli.edge import default_cache_dir
from streamfold.embedded.kafka import LocalKafkaCluster
from streamfold.embedded.ports import free_ports
from streamfold.registry.server import RegistryProcess

REPORT = Path(__file__).resolve().parent / "reports" / "registry.md"


def schema(n: int) -> str:
    """Distinct schemas of one record, each BACKWARD-compatible with any other."""
    fields = [{"name": "id", "type": "string"}, {"name": f"f{n}", "type": "string", "default": ""}]
    return json.dumps({"type": "record", "name": "Bench", "fields": fields})


def run(
    clients: int, total: int, make: Callable[[int], tuple[str, str, str | None]], port: int
) -> float:
    """Issue ``total`` requests from ``clients`` threads; return requests per second."""
    counter = iter(range(total))
    lock = threading.Lock()
    failures: list[str] = []

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": "application/vnd.schemaregistry.v1+json"}
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                break
            method, path, body = make(n)
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                failures.append(f"{method} {path}: {response.status} {payload[:200]!r}")
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} failed requests, first: {failures[0]}")
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--registrations", type=int, default=2000)
    parser.add_argument("--lookups", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    rows: list[tuple[str, int, float]] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalKafkaCluster(Path(tmp) / "kafka", default_cache_dir()) as kafka,
    ):
        (port,) = free_ports(1)
        with RegistryProcess(kafka.bootstrap_servers, port, log_file=Path(tmp) / "r.log"):
            # Warm up: the producer's idempotence id, the connections.
            run(
                1,
                20,
                lambda n: (
                    "POST",
                    f"/subjects/warm-{n}/versions",
                    json.dumps({"schema": schema(10**6 + n)}),
                ),
                port,
            )
            floor = run(args.clients, args.lookups, lambda n: ("GET", "/", None), port)
            rows.append(("HTTP floor: GET / (baseline)", args.clients, floor))
            half = args.registrations // 4
            offset = 0

            def register(base: int) -> Callable[[int], tuple[str, str, str | None]]:
                return lambda n: (
                    "POST",
                    f"/subjects/bench-{(base + n) % 50}-value/versions",
                    json.dumps({"schema": schema(base + n)}),
                )

            for clients, count in ((1, half), (args.clients, args.registrations)):
                rate = run(clients, count, register(offset), port)
                rows.append(("register a new schema", clients, rate))
                offset += count
            ids = max(1, offset)
            rows.append(
                (
                    "GET /schemas/ids/{id}",
                    args.clients,
                    run(
                        args.clients,
                        args.lookups,
                        lambda n: ("GET", f"/schemas/ids/{n % ids + 1}", None),
                        port,
                    ),
                )
            )
            rows.append(
                (
                    "GET /subjects/{s}/versions/latest",
                    args.clients,
                    run(
                        args.clients,
                        args.lookups,
                        lambda n: ("GET", f"/subjects/bench-{n % 50}-value/versions/latest", None),
                        port,
                    ),
                )
            )
            rows.append(
                (
                    "POST /subjects/{s} (schema → id)",
                    args.clients,
                    run(
                        args.clients,
                        args.lookups,
                        lambda n: (
                            "POST",
                            f"/subjects/bench-{n % 50}-value",
                            json.dumps({"schema": schema(n % 50)}),
                        ),
                        port,
                    ),
                )
            )
    lines = [
        "# Registry throughput (one process)",
        "",
        f"`python benchmarks/registry_bench.py --registrations {args.registrations} "
        f"--lookups {args.lookups} --clients {args.clients}`, {time.strftime('%Y-%m-%d %H:%M')} "
        "UTC; single-node local Kafka on the same 2-core machine.",
        "",
        "| operation | clients | per second | vs HTTP floor |",
        "|---|---:|---:|---:|",
    ]
    for name, clients, rate in rows:
        lines.append(f"| {name} | {clients} | {rate:,.0f} | {rate / floor:.0%} |")
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
