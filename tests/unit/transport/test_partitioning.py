from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamfold.transport.partitioning import murmur2, partition_for

pytestmark = pytest.mark.unit

# Vectors from Kafka's own UtilsTest.testMurmur2.
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "expected"), KAFKA_VECTORS.items())
def test_murmur2_matches_kafka(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


@given(st.binary(min_size=1), st.integers(min_value=1, max_value=1000))
def test_partition_is_in_range(key: bytes, partitions: int) -> None:
    assert 0 <= partition_for(key, partitions) < partitions


def test_str_and_bytes_keys_agree() -> None:
    assert partition_for("store-7/item-3", 6) == partition_for(b"store-7/item-3", 6)
