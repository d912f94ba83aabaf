"""Child processes that cannot outlive the process that started them.

:class:`ChildProcess` runs a streamfold command (``python -m streamfold ...``) as a child
with ``PR_SET_PDEATHSIG``, waits until an HTTP readiness URL answers 200, and stops it with
SIGTERM (SIGKILL after a timeout). The dev stack, the test fixtures and the benchmarks run
the registry and the workers through it, so they run exactly what a user runs.
"""

from __future__ import annotations

import ctypes
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

import structlog

from streamfold.errors import HostEnvironmentError

log = structlog.get_logger(__name__)

__all__ = ["ChildProcess", "die_with_parent", "start_all", "stop_all"]

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None


def die_with_parent() -> None:
    """Run in the child between fork and exec: SIGKILL it when the parent dies (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def start_all(children: Sequence[ChildProcess], timeout: float = 60.0) -> None:
    """Start ``children`` together (their start-ups overlap) and wait until all are ready."""
    for child in children:
        child.spawn()
    for child in children:
        child.wait_ready(timeout)


def stop_all(children: Sequence[ChildProcess], timeout: float = 30.0) -> None:
    """SIGTERM ``children`` together, in order, then wait for each (their stops overlap)."""
    for child in children:
        if child.process is not None and child.process.poll() is None:
            child.process.terminate()
    for child in children:
        child.stop(timeout)


class ChildProcess:
    """``python -m streamfold <args>`` as a child, ready when ``ready_url`` answers 200."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        ready_url: str,
        log_file: Path | None = None,
        name: str = "child",
        ready_ca: Path | None = None,
    ) -> None:
        self.args = list(args)
        # An HTTPS readiness URL is verified against this CA (PEM); None: the system's.
        self._ready_context = (
            ssl.create_default_context(cafile=str(ready_ca))
            if ready_url.startswith("https:")
            else None
        )
        self.env = dict(env)
        self.ready_url = ready_url
        self.log_file = log_file
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = 60.0) -> None:
        """Start the child and wait until it is ready; raise naming its log if it dies."""
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the child without waiting (:meth:`wait_ready` waits)."""
        output = self.log_file.open("ab") if self.log_file is not None else None
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamfold", *self.args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output if output is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - sets PDEATHSIG only
            )
        finally:
            if output is not None:
                output.close()  # the child holds its own descriptor

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the spawned child is ready; raise naming its log if it dies."""
        assert self.process is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HostEnvironmentError(
                    f"{self.name} exited with code {self.process.returncode} (log: {self.log_file})"
                )
            if self.answers():
                return
            time.sleep(0.1)
        self.stop()
        raise HostEnvironmentError(
            f"{self.name} was not ready in {timeout}s (log: {self.log_file})"
        )

    def answers(self) -> bool:
        """Whether the readiness URL answers 200."""
        try:
            with urllib.request.urlopen(
                self.ready_url, timeout=1, context=self._ready_context
            ) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the child and wait; if it does not stop in ``timeout``, SIGUSR1 it (its
        threads' stacks go to its log: where it hung) and SIGKILL it a second later."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGUSR1)
                time.sleep(1.0)
                self.process.kill()
                self.process.wait()
                log.warning(
                    "a child did not stop after SIGTERM; killed it (its stacks are in its log)",
                    child=self.name,
                    timeout_s=timeout,
                    log_file=str(self.log_file),
                )
        return self.process.returncode

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def kill(self) -> None:
        """SIGKILL the child (a crash, for fault tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP the child (a zombie-to-be, for fault tests)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
