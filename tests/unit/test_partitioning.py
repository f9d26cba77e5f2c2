"""Our murmur2 and partitioners agree with aiokafka's DefaultPartitioner."""

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from stream.partitioning import KEYS, murmur2, partition_for, partition_of

pytestmark = pytest.mark.unit


def test_murmur2_matches_aiokafka_on_every_length() -> None:
    rnd = random.Random(15)
    for length in range(0, 300):
        for _ in range(10):
            data = bytes(rnd.randrange(256) for _ in range(length))
            assert murmur2(data) == aiokafka_murmur2(data), data


@pytest.mark.parametrize("key", ["", "a", "visitor-12345", "é" * 33, "cl-" + "f" * 32])
def test_partition_matches_default_partitioner(key: str) -> None:
    data = key.encode()
    for count in (1, 3, 4, 12):
        partitions = tuple(range(count))
        expected = DefaultPartitioner()(data, list(partitions), list(partitions))
        assert partition_for(data, partitions) == expected
        assert partition_of(data, count) == expected
        assert KEYS(data, list(partitions), []) == expected
