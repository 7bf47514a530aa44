"""The output pool: freed blocks of bn3d's large outputs are reused, never while an array
still holds them; the pool is bounded, can be emptied, and is safe across threads."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import bn3d

SHAPE = (2, 4, 16, 64, 64)  # 2 MiB of float32: above the pool's smallest block


@pytest.fixture(autouse=True)
def fresh_pool():
    bn3d.set_output_pool_limit(0)
    bn3d.set_output_pool_limit(256 * 2**20)
    yield
    bn3d.set_output_pool_limit(256 * 2**20)


def data(seed=0):
    return np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)


def test_a_freed_output_block_serves_the_next_output():
    x = data()
    y = bn3d.batch_norm(x, None, None, training=True)
    address = y.__array_interface__["data"][0]
    del y
    assert bn3d.output_pool_stats()["kept_blocks"] == 1
    z = bn3d.batch_norm(x, None, None, training=True)
    assert z.__array_interface__["data"][0] == address
    assert bn3d.output_pool_stats()["reused"] >= 1


def test_live_outputs_never_share_memory():
    x = data()
    outputs = [bn3d.batch_norm(x * (k + 1), None, None, training=True) for k in range(6)]
    for i, a in enumerate(outputs):
        for b in outputs[i + 1:]:
            assert not np.shares_memory(a, b)
    expected = bn3d.batch_norm(x, None, None, training=True)
    for output in outputs:  # the same normalised data, each in its own memory
        np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)


def test_the_pool_keeps_at_most_its_limit():
    bn3d.set_output_pool_limit(3 * 2**20)
    x = data()
    outputs = [bn3d.batch_norm(x, None, None, training=True) for _ in range(4)]
    del outputs
    stats = bn3d.output_pool_stats()
    assert stats["kept_bytes"] <= 3 * 2**20 and stats["kept_blocks"] == 1


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc")
def test_a_limit_of_zero_returns_the_memory_to_the_system():
    # Blocks above 32 MiB, which the C library maps and unmaps (never from its heap).
    x = np.ones((2, 5, 16, 256, 256), np.float32)
    outputs = [bn3d.batch_norm(x, None, None, training=True) for _ in range(4)]
    del outputs
    assert bn3d.output_pool_stats()["kept_bytes"] >= 4 * x.nbytes
    before = resident_bytes()
    bn3d.set_output_pool_limit(0)
    assert bn3d.output_pool_stats()["kept_bytes"] == 0
    assert before - resident_bytes() >= 3 * x.nbytes


def test_threads_allocating_and_freeing_at_once_get_their_own_correct_outputs(
        frequent_thread_switches):
    x = data()
    expected = bn3d.batch_norm(x, None, None, training=True)
    failures = []

    def work():
        for _ in range(20):
            kept = [bn3d.batch_norm(x, None, None, training=True) for _ in range(3)]
            for i, a in enumerate(kept):
                if not np.array_equal(a, expected) or any(np.shares_memory(a, b)
                                                          for b in kept[i + 1:]):
                    failures.append("wrong or shared output")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_the_pool_serves_only_bn3d_s_allocations():
    bn3d.batch_norm(data(), None, None, training=True)
    kept = bn3d.output_pool_stats()["kept_blocks"]
    other = np.empty(SHAPE, np.float32)
    del other
    assert bn3d.output_pool_stats()["kept_blocks"] == kept


@pytest.mark.parametrize("limit", [-1, 1.5, True])
def test_a_limit_that_is_not_a_non_negative_int_is_refused(limit):
    with pytest.raises((TypeError, ValueError)):
        bn3d.set_output_pool_limit(limit)
