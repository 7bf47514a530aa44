"""The load rule: how much CPU other processes used while a round was timed.

On a shared 2-core machine the work of other processes changes every time: while
they used about one core, bn3d and PyTorch (OpenMP over both cores) ran 20x to 90x
slower and single-threaded libraries 1.7x. So ``bench.py`` reads the machine's CPU
time before and after each round and sets aside a round during which other
processes used more than ``LOAD_LIMIT`` of a core.

The arithmetic, on two snapshots taken ``wall`` seconds apart:

- ``busy``: the aggregate ``cpu`` line of ``/proc/stat``, ``user + nice + system +
  irq + softirq + steal`` (``steal``: time the hypervisor gave to other machines),
  in ``USER_HZ`` ticks, summed over every CPU;
- ``own``: this process's ``utime + stime`` from ``/proc/self/stat`` in the same
  ticks; it includes every thread of the process (OpenMP teams, XLA's and
  onnxruntime's pools), so a library's helper threads are never counted as load;
- others' load, in cores: ``(delta busy - delta own) / USER_HZ / wall``.

Resolution: the counters move in whole ticks (10 ms at ``USER_HZ = 100``), so the
load of a window of ``w`` seconds is known to about ``(cpus + 1) * tick / w``
cores: 0.08 core for a 0.4 s window on 2 cores. Rounds are stretched to at least
``bench.py``'s ``--min-round-seconds`` for that reason. The result can be slightly
negative when nothing else ran; it is recorded as measured.

The functions that parse and compute are pure; :func:`read_snapshot` is the only
one that reads the system.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

# Other processes may use at most this much CPU, in cores, while a round is timed.
LOAD_LIMIT = 0.25
# The fields of the ``cpu`` line of /proc/stat, in order (see proc(5)).
PROC_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
                    "guest", "guest_nice")
# Fields that are time a CPU spent running something. ``guest`` and ``guest_nice``
# are already included in ``user`` and ``nice``; ``idle`` and ``iowait`` are idle time.
BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal")


@dataclass(frozen=True)
class CpuSnapshot:
    """The CPU counters at one moment.

    Attributes
    ----------
    wall : float
        A monotonic clock, in seconds.
    busy_ticks : int
        Busy time of all CPUs of the machine, in ``USER_HZ`` ticks.
    own_ticks : int
        CPU time of this process (all its threads), in ``USER_HZ`` ticks.
    """

    wall: float
    busy_ticks: int
    own_ticks: int


def busy_ticks(proc_stat: str) -> int:
    """Busy ticks of all CPUs from the text of ``/proc/stat``.

    Parameters
    ----------
    proc_stat : str
        The file's text; only its aggregate ``cpu`` line is read.

    Returns
    -------
    int
        ``user + nice + system + irq + softirq + steal``; fields a kernel does not
        report count as 0.

    Examples
    --------
    >>> busy_ticks("cpu  100 5 20 900 3 1 2 7 0 0\\ncpu0 50 2 10 450 1 0 1 3 0 0\\n")
    135
    """
    for line in proc_stat.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = dict(zip(PROC_STAT_FIELDS, map(int, parts[1:])))
            return sum(values.get(field, 0) for field in BUSY_FIELDS)
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def own_ticks(proc_self_stat: str) -> int:
    """A process's ``utime + stime`` from the text of ``/proc/<pid>/stat``.

    Parameters
    ----------
    proc_self_stat : str
        The file's single line. The command name (field 2) is in parentheses and may
        itself hold spaces and parentheses, so the fields are counted after its last
        ``)``.

    Returns
    -------
    int
        Fields 14 (``utime``) and 15 (``stime``) added, in ``USER_HZ`` ticks.

    Examples
    --------
    >>> own_ticks("4242 (py thon) R 1 2 3 4 5 6 7 8 9 10 31 12 0 0 20 0 3 0")
    43
    """
    after_name = proc_self_stat[proc_self_stat.rindex(")") + 1:].split()
    # after_name[0] is field 3 (state), so field k is after_name[k - 3].
    return int(after_name[14 - 3]) + int(after_name[15 - 3])


def others_load(before: CpuSnapshot, after: CpuSnapshot, ticks_per_second: float) -> float:
    """The CPU other processes used between two snapshots, in cores.

    Parameters
    ----------
    before, after : CpuSnapshot
        Taken at the start and at the end of a window.
    ticks_per_second : float
        ``USER_HZ`` (``os.sysconf("SC_CLK_TCK")``, 100 on Linux).

    Returns
    -------
    float
        ``(delta busy - delta own) / ticks_per_second / delta wall``; 1.0 means one
        core kept busy all the time by other processes.

    Examples
    --------
    Two CPUs over 0.5 s: 80 ticks busy, 30 of them this process's.

    >>> others_load(CpuSnapshot(10.0, 1000, 200), CpuSnapshot(10.5, 1080, 230), 100)
    1.0
    """
    wall = after.wall - before.wall
    if wall <= 0:
        raise ValueError(f"the window must have a positive length, got {wall} s")
    others = (after.busy_ticks - before.busy_ticks) - (after.own_ticks - before.own_ticks)
    return others / ticks_per_second / wall


def is_loaded(load: float, limit: float = LOAD_LIMIT) -> bool:
    """Whether a round with other processes' ``load`` (cores) is set aside.

    Examples
    --------
    >>> is_loaded(0.25), is_loaded(0.26)
    (False, True)
    """
    return load > limit


def read_snapshot() -> CpuSnapshot:
    """The counters now: ``/proc/stat``, ``/proc/self/stat`` and a monotonic clock."""
    with open("/proc/self/stat") as own, open("/proc/stat") as machine:
        own_text, machine_text = own.read(), machine.read()
    return CpuSnapshot(time.perf_counter(), busy_ticks(machine_text), own_ticks(own_text))


def ticks_per_second() -> int:
    """``USER_HZ``, the unit of ``/proc/stat`` and ``/proc/self/stat``."""
    return os.sysconf("SC_CLK_TCK")


def load_rule_available() -> bool:
    """Whether this system has the files the rule reads (Linux)."""
    return os.path.isfile("/proc/stat") and os.path.isfile("/proc/self/stat")
