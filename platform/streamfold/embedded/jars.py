"""Fetch the Apache Kafka jars with Maven into a cache directory outside the repository.

The pom beside this module names ``org.apache.kafka:kafka_2.13`` and ``kafka-tools``; Maven
resolves them with their runtime dependencies (about 90 jars) once, and later calls find
them in the cache. The cache key is a digest of the pom, so changing the Kafka version in
the pom fetches anew and leaves older caches alone.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from importlib.resources import files
from pathlib import Path

from streamfold.embedded.java import find_maven, run_tool
from streamfold.errors import HostEnvironmentError
from streamfold.observability.logging import get_logger

__all__ = ["KafkaDistribution", "ensure_kafka_jars", "kafka_version"]

log = get_logger(__name__)
_COMPLETE = ".complete"


def _pom_text() -> str:
    return files("streamfold.embedded").joinpath("pom.xml").read_text(encoding="utf-8")


def kafka_version() -> str:
    """The Kafka version the pom pins."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", _pom_text())
    if match is None:  # pragma: no cover - the pom ships with the package
        raise HostEnvironmentError("streamfold's Kafka pom names no kafka.version")
    return match.group(1)


class KafkaDistribution:
    """A directory of Kafka jars ready to put on a classpath."""

    def __init__(self, libs: Path, version: str) -> None:
        self.libs = libs
        self.version = version

    @property
    def classpath(self) -> str:
        """A JVM classpath covering every jar of the distribution."""
        return str(self.libs / "*")


def ensure_kafka_jars(cache_dir: Path) -> KafkaDistribution:
    """Return the cached Kafka jars, fetching them with Maven on first use."""
    pom = _pom_text()
    version = kafka_version()
    digest = hashlib.sha256(pom.encode()).hexdigest()[:12]
    target = cache_dir / f"kafka-{version}-{digest}"
    libs = target / "libs"
    if (target / _COMPLETE).exists():
        return KafkaDistribution(libs, version)
    mvn = find_maven()
    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("fetching Kafka jars with Maven", version=version, cache=str(target))
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".fetch-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "pom.xml").write_text(pom, encoding="utf-8")
        staged = tmp_path / "libs"
        run_tool(
            [
                str(mvn),
                "-q",
                "-B",
                "-f",
                str(tmp_path / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staged}",
                "-DincludeScope=runtime",
            ],
            f"Maven could not fetch Kafka {version}",
            timeout=900,
        )
        jars = sorted(staged.glob("*.jar"))
        if not any(j.name.startswith("kafka_2.13-") for j in jars):
            raise HostEnvironmentError(f"Maven ran but fetched no kafka_2.13 jar into {staged}")
        staging_target = tmp_path / "dist"
        staging_target.mkdir()
        shutil.move(str(staged), staging_target / "libs")
        (staging_target / _COMPLETE).write_text(f"{len(jars)} jars\n", encoding="utf-8")
        try:
            staging_target.rename(target)
        except OSError:
            # Another process finished the same fetch first; its copy is as good as ours.
            if not (target / _COMPLETE).exists():
                raise
    log.info("Kafka jars ready", version=version, jars=len(list(libs.glob("*.jar"))))
    return KafkaDistribution(libs, version)
