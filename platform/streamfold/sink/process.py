"""``streamfold sink`` as a child process, for the demo, tests and benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

from streamfold.embedded.children import ChildProcess

__all__ = ["SinkProcess"]


class SinkProcess(ChildProcess):
    """One sink connector; ready when its ``/readyz`` answers 200 (or, with
    ``ready_when="alive"``, as soon as it serves ``/healthz``: while its target is down it is
    alive but not ready)."""

    def __init__(
        self,
        spec: str | Path,
        *,
        bootstrap_servers: str,
        registry_url: str,
        health_port: int,
        target: str | None = None,
        topic_prefix: str | None = None,
        log_file: Path | None = None,
        ready_when: str = "ready",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.health_url = f"http://127.0.0.1:{health_port}"
        args = ["sink", str(spec), "--health-port", str(health_port)]
        if target is not None:
            args += ["--target", target]
        if topic_prefix is not None:
            args += ["--topic-prefix", topic_prefix]
        env = {
            **os.environ,
            "STREAMFOLD_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "STREAMFOLD_REGISTRY_URL": registry_url,
            "STREAMFOLD_LOG_FORMAT": "json",
            **(extra_env or {}),
        }
        probe = "readyz" if ready_when == "ready" else "healthz"
        super().__init__(
            args, env=env, ready_url=f"{self.health_url}/{probe}", log_file=log_file, name="sink"
        )
