from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from streamfold.embedded.java import find_java
from streamfold.embedded.ports import ensure_port_free, free_ports
from streamfold.errors import HostEnvironmentError

pytestmark = pytest.mark.unit


def test_taken_port_names_the_owner_pid() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(
            HostEnvironmentError, match=rf"port {port} is in use by pid {os.getpid()}"
        ):
            ensure_port_free(port)


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(4)
    assert len(set(ports)) == 4
    for port in ports:
        ensure_port_free(port)


def test_old_java_is_refused_with_an_actionable_message(tmp_path: Path) -> None:
    fake_home = tmp_path / "jdk8"
    (fake_home / "bin").mkdir(parents=True)
    java = fake_home / "bin" / "java"
    java.write_text("#!/bin/sh\necho 'openjdk version \"1.8.0_392\"' >&2\n")
    java.chmod(0o755)
    with pytest.raises(HostEnvironmentError, match=r"Java 17 or newer not found: .* is Java 8"):
        find_java(str(fake_home))


def test_missing_java_says_install_a_jdk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HostEnvironmentError, match="install a JDK"):
        find_java(None)
