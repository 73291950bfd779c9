"""Measuring helpers shared by every benchmark: timed calls, peak memory, a fresh interpreter.

* :func:`stopwatch` times one block (wall clock and process CPU time);
* :func:`time_calls` times repeated calls after warm-up (fastest, median, first, CPU time);
  :func:`time_interleaved` does the same for several contenders, alternating between them so that
  a change of load on a shared machine slows all of them alike;
* :func:`time_and_memory` adds the peak memory of the timed calls;
* :func:`run_isolated` calls a function in a fresh interpreter, so each case's memory is its own.

Peak memory is the growth of the process's resident set over the case: the kernel's peak counter
(``VmHWM``) is reset once the inputs exist and the warm-up calls have run, so the figure covers
what the timed calls allocate and nothing that was there before.
"""

from __future__ import annotations

import functools

import importlib
import importlib.util
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

_MB = 1 << 20


def _status_kb(name: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_memory() -> int:
    """Reset the peak-RSS counter (Linux) and return the current resident set in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass
    return (_status_kb("VmRSS") or 0) * 1024


def peak_memory() -> int:
    """Peak resident set in bytes since the last :func:`reset_peak_memory`."""
    hwm = _status_kb("VmHWM")
    if hwm is not None:
        return hwm * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_reset_supported() -> bool:
    """Whether :func:`reset_peak_memory` can reset the peak counter here (Linux ``clear_refs``).

    Where it cannot, peaks are the process's lifetime maximum and can only over-report.
    """
    return os.access("/proc/self/clear_refs", os.W_OK)


@dataclass
class Watch:
    """What :func:`stopwatch` measured: wall-clock and process CPU seconds (all threads)."""

    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def stopwatch() -> Iterator[Watch]:
    """Time the ``with`` block; the yielded :class:`Watch` is filled in when the block ends.

    CPU time counts every thread of the process: on a machine shared with other jobs it is
    steadier than the wall clock, which also counts the time the process waited for a core.
    """
    watch = Watch()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield watch
    finally:
        watch.wall = time.perf_counter() - wall
        watch.cpu = time.process_time() - cpu


@dataclass
class Timings:
    """Seconds of each timed call, in call order, and the peak memory growth over them (if taken)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    peak_mb: float | None = None

    @property
    def best(self) -> float:
        """The fastest call (wall clock): the least disturbed by other work on the machine."""
        return min(self.wall)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def first(self) -> float:
        return self.wall[0]

    @property
    def cpu_best(self) -> float:
        return min(self.cpu)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    def record(self, step: Callable[[], Any]) -> Any:
        """Call ``step`` once, add its times, and return what it returned."""
        with stopwatch() as watch:
            result = step()
        self.wall.append(watch.wall)
        self.cpu.append(watch.cpu)
        return result

    def summary(self) -> dict[str, float]:
        """``ms`` (fastest call), ``ms_median``, ``runs`` and ``peak_mb`` (0 when not measured)."""
        return {
            "ms": self.best * 1e3,
            "ms_median": self.median * 1e3,
            "runs": len(self.wall),
            "peak_mb": self.peak_mb or 0.0,
        }


def time_calls(
    step: Callable[[], Any], *, repeats: int = 3, warmup: int = 1, max_seconds: float = math.inf,
    memory: bool = False,
) -> Timings:
    """Call ``step`` ``warmup`` times untimed, then time up to ``repeats`` calls.

    Timing stops early once the timed calls have taken ``max_seconds`` (at least one call is
    timed). With ``memory=True`` the peak counter is reset after the warm-up, and ``peak_mb`` is
    the growth of the peak resident set during the timed calls over the resident set before them.
    """
    for _ in range(warmup):
        step()
    base = reset_peak_memory() if memory else 0
    timings = Timings()
    while len(timings.wall) < max(1, repeats) and (not timings.wall or sum(timings.wall) < max_seconds):
        timings.record(step)
    if memory:
        timings.peak_mb = max(0, peak_memory() - base) / _MB
    return timings


def time_interleaved(
    steps: Mapping[str, Callable[[], Any]], *, repeats: int = 3, warmup: int = 1,
    on_round: Callable[[], None] | None = None,
) -> dict[str, Timings]:
    """Time each of several contenders ``repeats`` times, one call of each per round, in turn.

    Alternating call by call puts every contender under the same load, which a block of calls
    per contender would not on a shared machine. ``on_round`` (e.g. a progress bar's update) is
    called after each round.
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    timings = {name: Timings() for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            timings[name].record(step)
        if on_round is not None:
            on_round()
    return timings


def time_and_memory(
    step: Callable[[], Any], *, repeats: int = 3, max_seconds: float = 30.0, warmup: int = 1,
) -> dict[str, float]:
    """Run ``step`` ``warmup`` times, then time up to ``repeats`` calls (stopping after ``max_seconds``).

    Returns ``ms`` (the fastest call), ``ms_median``, ``runs`` and ``peak_mb`` (memory growth during
    the timed calls over the resident set before them).
    """
    return time_calls(step, repeats=repeats, warmup=warmup, max_seconds=max_seconds, memory=True).summary()


def run_isolated(target: str, params: dict[str, Any], *, threads: int, timeout: float = 900.0) -> dict[str, Any]:
    """Call ``target`` with ``params`` in a fresh interpreter using ``threads`` threads, and return
    the dict it returns (or ``{"error": ...}`` if it failed, was killed or timed out).

    ``target`` is ``"module:function"`` or ``"path/to/script.py:function"`` (a benchmark script
    outside the package; it is imported, not run, so its ``__main__`` block stays idle).
    """
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    # The child must import this same polyformer, installed or not.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
    payload = json.dumps({"target": target, "params": params, "threads": threads})
    code = "from polyformer.bench.measure import _child_main; _child_main()"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], input=payload, capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode < 0:  # killed by a signal: SIGKILL is nearly always the kernel's OOM killer
        name = signal.Signals(-proc.returncode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return {"error": f"killed by {name}{hint}"}
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0][:300]}
    return json.loads(lines[-1])


def _load_target(target: str) -> Callable[..., Any]:
    location, function_name = target.rsplit(":", 1)
    if location.endswith(".py"):
        spec = importlib.util.spec_from_file_location(f"_bench_{Path(location).stem}", location)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {location}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(location)
    return getattr(module, function_name)


def _child_main() -> None:
    request = json.load(sys.stdin)
    import torch

    torch.set_num_threads(int(request["threads"]))
    result = _load_target(request["target"])(**request["params"])
    print(json.dumps(result), flush=True)


class PhaseClock:
    """Seconds spent in named phases, summed over the calls wrapped with :meth:`wrap`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
        return timed

    def reset(self) -> None:
        self.seconds.clear()
