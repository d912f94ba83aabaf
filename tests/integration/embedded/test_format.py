"""KRaft storage formatting copes with every cluster id base64 can produce."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamfold.embedded.kafka import LocalKafkaCluster

pytestmark = pytest.mark.integration


def test_cluster_id_starting_with_a_dash_formats_and_starts(
    tmp_path: Path, streamfold_cache_dir: Path
) -> None:
    (tmp_path / "cluster.id").write_text("-AbCdEfGhIjKlMnOpQrStU\n")
    with LocalKafkaCluster(tmp_path, streamfold_cache_dir) as cluster:
        meta = (cluster.nodes[0].directory / "data" / "meta.properties").read_text()
    assert "cluster.id=-AbCdEfGhIjKlMnOpQrStU" in meta
