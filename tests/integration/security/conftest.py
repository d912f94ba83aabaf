"""Helpers of the security tests: run the CLI with only ``STREAMFOLD_*`` settings, timed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STREAMFOLD = Path(sys.executable).parent / "streamfold"
ROOT = Path(__file__).resolve().parents[3]
#: The deadline for a refused credential or certificate to become an error.
ERROR_WITHIN_S = 15.0


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any ``STREAMFOLD_KAFKA_*``, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFOLD_KAFKA_")}
    return {**env, **settings}


@dataclass(frozen=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(*args: str, env: dict[str, str], timeout: float = 60.0) -> CliRun:
    """Run ``streamfold <args>`` and time it (a hang fails at ``timeout``)."""
    started = time.monotonic()
    done = subprocess.run(
        [str(STREAMFOLD), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
    return CliRun(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
