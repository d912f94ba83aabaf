"""A successor looks up the last owners of its partitions without crashing the process.

librdkafka's admin ``list_consumer_group_offsets`` segfaults the process when its answer is
``NOT_COORDINATOR``: its handler asks the client's consumer group, which an admin client
does not have, for a new coordinator (confluentinc/librdkafka#5040). A coordinator that
moves with a lost broker answers exactly that, and so does a fresh broker asked about a
group it has never seen: both workers of a broker-loss run died of it. The take-over runs
in a child process, so a crash is an exit status, not the end of the test run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamfold.embedded.kafka import LocalKafkaCluster

pytestmark = pytest.mark.integration

PROBE = Path(__file__).with_name("successor_probe.py")


def test_a_take_over_on_a_fresh_broker_does_not_crash_the_worker(
    tmp_path: Path, streamfold_cache_dir: Path
) -> None:
    with LocalKafkaCluster(tmp_path / "kafka", streamfold_cache_dir) as cluster:
        done = subprocess.run(
            [sys.executable, str(PROBE), cluster.bootstrap_servers, "10"],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    lines = done.stdout.splitlines()
    assert lines[-1] == "survived"
    assert lines[:-1] == ["[]"] * 10  # nobody committed: no owner to fence
