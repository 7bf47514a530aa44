"""Thread counts are validated, and a process forked after bn3d's threads started works."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest

import bn3d
from bn3d._threads import MAX_THREADS


@pytest.mark.parametrize("count", [0, -1, MAX_THREADS + 1, 2**31 - 1])
def test_thread_counts_outside_the_range_are_refused(count):
    with pytest.raises(ValueError, match=f"from 1 to {MAX_THREADS}"):
        bn3d.set_num_threads(count)


@pytest.mark.parametrize("count", [1.5, True, "2"])
def test_thread_counts_that_are_not_ints_are_refused(count):
    with pytest.raises(TypeError):
        bn3d.set_num_threads(count)


FORK_AFTER_PARALLEL_CALL = textwrap.dedent("""
    import os, warnings
    import numpy as np
    import bn3d
    bn3d.set_num_threads(2)
    x = np.random.default_rng(0).standard_normal((4, 8, 64, 64)).astype(np.float32)
    expected = bn3d.batch_norm(x, None, None, training=True)   # starts the OpenMP team
    pid = os.fork()
    if pid == 0:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bn3d.set_num_threads(2)
        ok = (bn3d.get_num_threads() == 1 and len(caught) == 1
              and (bn3d.batch_norm(x, None, None, training=True) == expected).all())
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status))
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_child_forked_after_a_parallel_call_runs_on_one_thread_and_does_not_hang(tmp_path):
    # From an empty directory, so the installed bn3d is imported, not the source tree.
    result = subprocess.run([sys.executable, "-c", FORK_AFTER_PARALLEL_CALL],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0", result.stderr


def test_a_thread_in_serial_mode_runs_its_calls_alone_and_others_are_unaffected():
    from bn3d import _threads

    bn3d.set_num_threads(2)
    try:
        seen = {}
        with _threads.serial_in_this_thread():
            seen["inside"] = _threads.threads_for(1 << 24)
            other = threading.Thread(
                target=lambda: seen.setdefault("other", _threads.threads_for(1 << 24)))
            other.start()
            other.join()
        seen["after"] = _threads.threads_for(1 << 24)
    finally:
        bn3d.set_num_threads(None)
    expected = 2 if bn3d.openmp_enabled() else 1
    assert seen == {"inside": 1, "other": expected, "after": expected}
