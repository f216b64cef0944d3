"""Host-side timing: a .tflite timed on this machine with the device profiler's protocol. Below every stage that
times a model (the solver's --verify-template, the export's check); --cpus values are read by
device_profiler.checks.cores."""
from __future__ import annotations

import os

import numpy as np

from tfwidth.errors import UsageError


def measure_latency(content: bytes, threads: int = 1, runs: int = 20, warmup: int = 2, repeats: int = 5,
                    cpus=(0,), seed: int = 0) -> dict:
    """Time the .tflite with the device profiler's protocol (device_profiler.timing: one interpreter, warm-up, N
    timed invokes, min of N, pinned), ``repeats`` times with a fresh interpreter; the statistic is the median of
    the repeats' minima (a new interpreter moves the min by ~2% here, so one repeat would be noisier than the
    profiler's own samples). The process's CPU affinity is restored afterwards."""
    from device_profiler import runtime as rt_mod, timing
    rt = rt_mod.select()
    old = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        try:
            pinned = timing.pin(list(cpus) if cpus is not None else None)
        except OSError as e:
            raise UsageError(f"cannot pin the timing to cores {list(cpus)} ({e}); this machine has cores {old}: "
                             f"pass --cpus with one of them, or --cpus none") from None
        protocol = timing.Protocol(runs=runs, warmup_runs=warmup, threads=threads)
        rng = np.random.default_rng(seed)
        per = [timing.time_model(rt, content, protocol, rng)["ms"] for _ in range(repeats)]
    finally:
        if old is not None:
            os.sched_setaffinity(0, set(old))
    mins = [p["min"] for p in per]
    return {"status": "ok", "ms": {"min": float(np.median(mins)), "best": float(min(mins)),
                                   "median": float(np.median([p["median"] for p in per])),
                                   "repeat_min": mins, "count": runs},
            "statistic": f"median over {repeats} interpreters of the min of {runs} invokes",
            "warmup_runs": warmup, "threads": threads, "cpus": pinned, "runtime": rt.name,
            "runtime_version": rt.version, "device": timing.describe_device()}
