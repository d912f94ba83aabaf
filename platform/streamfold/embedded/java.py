"""Locate a Java 17+ runtime and Maven, with errors a person can act on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from streamfold.errors import HostEnvironmentError

__all__ = ["MIN_JAVA", "find_java", "find_maven", "java_major_version", "run_tool"]

MIN_JAVA = 17
_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


def find_java(java_home: str | None = None) -> Path:
    """Return the ``java`` executable (``java_home`` first, then PATH); it must be 17+."""
    candidates: list[Path] = []
    if java_home:
        candidates.append(Path(java_home) / "bin" / "java")
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(on_path))
    for java in candidates:
        if java.is_file() and os.access(java, os.X_OK):
            major = java_major_version(java)
            if major >= MIN_JAVA:
                return java
            raise HostEnvironmentError(
                f"Java {MIN_JAVA} or newer not found: {java} is Java {major}; "
                f"install a JDK {MIN_JAVA}+ or set JAVA_HOME to one"
            )
    raise HostEnvironmentError(
        f"Java {MIN_JAVA} or newer not found: install a JDK (e.g. openjdk-17)"
    )


def java_major_version(java: Path) -> int:
    """The major version of a ``java`` executable (``1.8`` counts as 8)."""
    out = subprocess.run(
        [str(java), "-version"], capture_output=True, text=True, check=False, timeout=30
    )
    match = _VERSION.search(out.stderr + out.stdout)
    if match is None:
        raise HostEnvironmentError(f"cannot tell the version of {java}: {out.stderr.strip()!r}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def run_tool(argv: list[str], failure: str, timeout: float) -> None:
    """Run a host tool to completion; on a non-zero exit raise naming ``failure`` and its output."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()[-2000:]
        raise HostEnvironmentError(f"{failure} (exit {proc.returncode}): {output}")


def find_maven() -> Path:
    """Return the ``mvn`` executable from PATH."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise HostEnvironmentError(
            "Maven (mvn) not found: install Maven 3.6+ (it fetches the Kafka jars once)"
        )
    return Path(mvn)
