"""Measure one benchmark case in a fresh interpreter: minimum time over repeats and peak memory.

Peak memory is the growth of the process's resident set over the case: the kernel's peak counter
(``VmHWM``) is reset once the inputs exist and the warm-up call has run, so the figure covers what
the timed calls allocate and nothing that was there before.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable

_MB = 1 << 20


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
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


def time_and_memory(step: Callable[[], Any], *, repeats: int = 3, max_seconds: float = 30.0) -> dict[str, float]:
    """Run ``step`` once to warm up, then time up to ``repeats`` calls (stopping after ``max_seconds``).

    Returns ``ms`` (the fastest call), ``ms_median``, ``runs`` and ``peak_mb`` (memory growth during
    the timed calls over the resident set before them).
    """
    step()
    base = reset_peak_memory()
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats and (not times or spent < max_seconds):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    times.sort()
    return {
        "ms": times[0] * 1e3,
        "ms_median": times[len(times) // 2] * 1e3,
        "runs": len(times),
        "peak_mb": max(0, peak_memory() - base) / _MB,
    }


def run_isolated(target: str, params: dict[str, Any], *, threads: int, timeout: float = 900.0) -> dict[str, Any]:
    """Call ``target`` ("module:function") with ``params`` in a fresh interpreter using ``threads``
    threads, and return the dict it returns (plus ``error`` if it failed or timed out)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
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


def _child_main() -> None:
    request = json.load(sys.stdin)
    import torch

    torch.set_num_threads(int(request["threads"]))
    module_name, function_name = request["target"].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(**request["params"])
    print(json.dumps(result), flush=True)
