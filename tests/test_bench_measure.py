"""The shared measuring helpers: what they call, in what order, and what they report."""

import time

from polyformer.bench.measure import Timings, run_isolated, stopwatch, time_calls, time_interleaved


def test_stopwatch_separates_waiting_from_computing():
    with stopwatch() as asleep:
        time.sleep(0.05)
    assert asleep.wall >= 0.05 and asleep.cpu < 0.04  # sleeping costs wall time, hardly any CPU
    with stopwatch() as busy:
        end = time.process_time() + 0.03
        while time.process_time() < end:
            pass
    assert busy.cpu >= 0.03 and busy.wall >= busy.cpu * 0.5


def test_time_calls_warms_up_then_times_each_call_in_order():
    calls = []
    durations = iter([0.0, 0.0, 0.09, 0.01, 0.05])  # two warm-up calls, then three timed ones

    def step():
        calls.append(len(calls))
        time.sleep(next(durations))

    timings = time_calls(step, repeats=3, warmup=2)
    assert len(calls) == 5 and len(timings.wall) == len(timings.cpu) == 3
    assert timings.first == timings.wall[0] and timings.best == min(timings.wall)
    assert timings.wall[0] > timings.wall[2] > timings.wall[1]  # kept in call order
    assert timings.best < timings.median < timings.first
    assert timings.peak_mb is None  # memory only when asked for


def test_time_calls_stops_after_max_seconds_but_times_one_call():
    timings = time_calls(lambda: time.sleep(0.02), repeats=50, warmup=0, max_seconds=0.05)
    assert 1 <= len(timings.wall) <= 4
    assert len(time_calls(lambda: time.sleep(0.02), repeats=5, warmup=0, max_seconds=0.0).wall) == 1


def test_median_of_an_even_count_averages_the_middle_pair():
    timings = Timings(wall=[4.0, 1.0, 2.0, 3.0], cpu=[1.0, 1.0, 2.0, 2.0])
    assert timings.median == 2.5 and timings.cpu_median == 1.5 and timings.cpu_best == 1.0
    assert timings.summary() == {"ms": 1000.0, "ms_median": 2500.0, "runs": 4, "peak_mb": 0.0}


def test_time_interleaved_alternates_contenders_call_by_call():
    order = []
    rounds = []
    steps = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    timings = time_interleaved(steps, repeats=2, warmup=1, on_round=lambda: rounds.append(len(order)))
    assert order == ["a", "b", "c"] * 3  # one warm-up round, then two timed rounds
    assert rounds == [6, 9]
    assert {name: len(t.wall) for name, t in timings.items()} == {"a": 2, "b": 2, "c": 2}


def test_time_calls_sees_memory_of_the_timed_calls_only():
    import torch

    held = []

    def step():
        x = torch.ones(48 << 20, dtype=torch.uint8)  # 48 MB, touched, freed on return
        return int(x[::4096].sum())

    held.append(torch.ones(96 << 20, dtype=torch.uint8))  # allocated before: not the case's memory
    timings = time_calls(step, repeats=1, memory=True)
    assert 40 < timings.peak_mb < 90


def test_run_isolated_calls_a_function_of_a_script_file(tmp_path):
    script = tmp_path / "bench_script.py"
    script.write_text(
        "import os, sys\n"
        "def case(x: int) -> dict:\n"
        "    return {'double': 2 * x, 'threads': os.environ['OMP_NUM_THREADS']}\n"
        "if __name__ == '__main__':\n"
        "    sys.exit('the main block must not run')\n"
    )
    assert run_isolated(f"{script}:case", {"x": 21}, threads=1) == {"double": 42, "threads": "1"}
    failed = run_isolated(f"{script}:case", {"y": 1}, threads=1)
    assert "unexpected keyword argument 'y'" in failed["error"]
