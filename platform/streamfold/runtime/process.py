"""``streamfold worker`` as a child process, for the dev stack, tests and benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

from streamfold.embedded.children import ChildProcess

__all__ = ["WorkerProcess"]


class WorkerProcess(ChildProcess):
    """One worker instance of a topology, ready when its ``/readyz`` answers 200."""

    def __init__(
        self,
        topology: str | Path,
        *,
        bootstrap_servers: str,
        registry_url: str,
        instance_id: str,
        state_dir: Path,
        health_port: int,
        log_file: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.state_dir = state_dir
        self.health_url = f"http://127.0.0.1:{health_port}"
        env = {
            **os.environ,
            "STREAMFOLD_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "STREAMFOLD_REGISTRY_URL": registry_url,
            "STREAMFOLD_WORKER_INSTANCE_ID": instance_id,
            "STREAMFOLD_WORKER_STATE_DIR": str(state_dir),
            "STREAMFOLD_WORKER_HEALTH_PORT": str(health_port),
            "STREAMFOLD_LOG_FORMAT": "json",
            **(extra_env or {}),
        }
        super().__init__(
            ["worker", str(topology)],
            env=env,
            ready_url=f"{self.health_url}/readyz",
            log_file=log_file,
            name=f"worker {instance_id}",
        )
