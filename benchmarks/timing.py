"""How ``bench.py`` times: libraries taking turns in rounds, under the load rule.

The runs of one case are made in rounds. In each round every function in turn is
called untimed for a warm-up (to bring its data and code back into cache and its
threads awake), then timed for its share of the runs. A slow spell of the machine
(a virtual one shares its memory bandwidth with its neighbours) thus falls on all
of them alike.

The load rule (:mod:`load_rule`) applies to a round as a whole: the CPU counters
are read before its first warm-up and after its last timed call, and if other
processes used more than the limit in between, every function's runs of that round
are set aside and the round is run again, up to ``max_retries`` times; a round
still loaded after that is kept and recorded as kept under load. Whole rounds,
rather than each function's share, so that the libraries keep taking turns on the
same conditions, and so that the window is long enough for the counters' 10 ms
ticks (the warm-ups are stretched until a round lasts ``min_round_seconds``).
"""

from __future__ import annotations

import os
import resource
import time
import tracemalloc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from load_rule import (
    LOAD_LIMIT,
    CpuSnapshot,
    is_loaded,
    load_rule_available,
    others_load,
    read_snapshot,
    ticks_per_second,
)

# glibc's malloc, as a process settles after allocating and freeing arrays of a size:
# blocks up to 32 MiB (the most its moving threshold reaches on 64-bit) from the
# heap, larger ones with fresh pages of the system; the heap kept, not given back.
# Measured on 2026-12-02 with the defaults, in one process taking turns with bn3d:
# torch's backward of (32,128,4,7,7) went from 0.16-0.2 ms (no faults) to 1.0-2.0 ms
# (384 to 786 page faults a call) once bn3d had run, and stayed there; of
# (2,64,16,56,56) from 2.0 to 4.6 ms (1882 faults a call).
STEADY_MALLOC = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296"


@dataclass(frozen=True)
class RoundRecord:
    """One attempt at a round: its index, attempt number, length and others' load."""

    round: int
    attempt: int
    seconds: float
    others_cores: float | None

    def as_json(self) -> dict[str, object]:
        """The record as ``results.json`` stores it."""
        return {"round": self.round, "attempt": self.attempt, "seconds": self.seconds,
                "others_cores": self.others_cores}


@dataclass
class Timing:
    """The outcome of :func:`timed_rounds`.

    Attributes
    ----------
    times : dict of str to list of float
        Wall seconds of every kept call, per function.
    cpu_per_wall : dict of str to float
        This process's CPU seconds per wall second (all its threads) while each
        function was called in the kept rounds, warm-ups included: about the cores
        the function kept busy.
    kept : list of RoundRecord
        The rounds whose runs are in ``times``.
    set_aside : list of RoundRecord
        The attempts dropped by the load rule.
    load_limit : float
        The rule's limit, in cores.
    """

    times: dict[str, list[float]]
    cpu_per_wall: dict[str, float]
    kept: list[RoundRecord] = field(default_factory=list)
    set_aside: list[RoundRecord] = field(default_factory=list)
    load_limit: float = LOAD_LIMIT

    @property
    def kept_under_load(self) -> list[RoundRecord]:
        """Kept rounds that were still loaded when the retries ran out."""
        return [record for record in self.kept
                if record.others_cores is not None and is_loaded(record.others_cores,
                                                                 self.load_limit)]


def round_shares(repeat: int, rounds: int) -> list[int]:
    """The timed calls of each round: ``repeat`` split as evenly as possible.

    Examples
    --------
    >>> round_shares(12, 5)
    [3, 3, 2, 2, 2]
    """
    return [repeat // rounds + (index < repeat % rounds) for index in range(rounds)]


def cpu_seconds() -> float:
    """This process's CPU time (all threads), with microsecond resolution."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _warm_up(function: Callable[[], object], seconds: float) -> None:
    start = time.perf_counter()
    calls = 0
    while calls < 2 or time.perf_counter() - start < seconds:
        function()
        calls += 1


def _one_round(functions: Mapping[str, Callable[[], object]], share: int,
               warmup_seconds: float) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Each function warmed up and timed ``share`` times: wall times and (wall, cpu) totals.

    The CPU is counted over the warm-up and the timed calls together: the threads of
    a process are accounted as the kernel updates them (at its ticks, a few ms), so a
    window of a few short calls alone would say little.
    """
    times: dict[str, list[float]] = {}
    totals: dict[str, list[float]] = {}
    for name, function in functions.items():
        cpu_start, wall_start = cpu_seconds(), time.perf_counter()
        _warm_up(function, warmup_seconds)
        runs = []
        for _ in range(share):
            start = time.perf_counter()
            function()
            runs.append(time.perf_counter() - start)
        totals[name] = [time.perf_counter() - wall_start, cpu_seconds() - cpu_start]
        times[name] = runs
    return times, totals


def timed_rounds(functions: Mapping[str, Callable[[], object]], repeat: int, rounds: int, *,
                 warmup_seconds: float = 0.02, min_round_seconds: float = 0.0,
                 load_limit: float | None = LOAD_LIMIT, max_retries: int = 4,
                 snapshot: Callable[[], CpuSnapshot] | None = None,
                 hz: float | None = None) -> Timing:
    """Time ``repeat`` calls of each function, taking turns in rounds, under the load rule.

    Parameters
    ----------
    functions : mapping of str to callable
        The functions, called without arguments, in this order in every round.
    repeat, rounds : int
        Timed calls per function in all, and the rounds they are spread over.
    warmup_seconds : float
        Least untimed calling of each function before its share (and at least two calls).
    min_round_seconds : float
        The warm-ups are lengthened so that a round lasts at least this long.
    load_limit : float or None
        Set aside a round during which other processes used more cores than this;
        None (or a system without ``/proc/stat``) turns the rule off.
    max_retries : int
        Attempts of one round set aside at most; the next one is kept whatever its load.
    snapshot, hz : optional
        The counters' reader and their ticks per second (tests pass their own).

    Returns
    -------
    Timing
    """
    if snapshot is None and load_limit is not None and load_rule_available():
        snapshot = read_snapshot
    if snapshot is None:
        load_limit = None
    hz = hz if hz is not None else ticks_per_second()
    warm = max(warmup_seconds, min_round_seconds / max(len(functions), 1))
    timing = Timing({name: [] for name in functions}, {},
                    load_limit=LOAD_LIMIT if load_limit is None else load_limit)
    wall_cpu = {name: [0.0, 0.0] for name in functions}
    for index, share in enumerate(round_shares(repeat, rounds)):
        for attempt in range(max_retries + 1):
            before = snapshot() if snapshot else None
            start = time.perf_counter()
            times, totals = _one_round(functions, share, warm)
            seconds = time.perf_counter() - start
            load = others_load(before, snapshot(), hz) if before else None
            record = RoundRecord(index, attempt, seconds, load)
            if load is not None and is_loaded(load, load_limit) and attempt < max_retries:
                timing.set_aside.append(record)
                continue
            timing.kept.append(record)
            for name, runs in times.items():
                timing.times[name].extend(runs)
                wall_cpu[name][0] += totals[name][0]
                wall_cpu[name][1] += totals[name][1]
            break
    timing.cpu_per_wall = {name: (cpu / wall if wall > 0 else float("nan"))
                           for name, (wall, cpu) in wall_cpu.items()}
    return timing


def interleaved_times(functions: Mapping[str, Callable[[], object]], repeat: int,
                      rounds: int, warmup_seconds: float = 0.02) -> dict[str, list[float]]:
    """Wall times of ``repeat`` calls of each function, taking turns, under the load rule.

    The simple form of :func:`timed_rounds` (``benchmarks/floor.py`` uses it).
    """
    return timed_rounds(functions, repeat, rounds, warmup_seconds=warmup_seconds).times


def steady_allocator_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with glibc's malloc thresholds fixed as ``STEADY_MALLOC``.

    Parameters
    ----------
    extra : mapping of str to str, optional
        More variables to set (a worker's ``NPROC``, for instance).
    """
    environment = dict(os.environ)
    tunables = [item for item in environment.get("GLIBC_TUNABLES", "").split(":") if item]
    if STEADY_MALLOC not in tunables:
        tunables.append(STEADY_MALLOC)
    environment["GLIBC_TUNABLES"] = ":".join(tunables)
    environment.update(extra or {})
    return environment


def page_faults_per_call(function: Callable[[], object], calls: int = 3) -> float:
    """Minor page faults (fresh pages from the system) per call of ``function``."""
    function()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        function()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def extra_memory(operation: Callable[[], object], output_bytes: int) -> int:
    """Peak bytes a call allocates beyond its outputs (numpy allocations, via tracemalloc)."""
    tracemalloc.start()
    try:
        result = operation()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak - output_bytes
