"""Host-side timing: this machine as the device, with the device profiler's protocol. ``measure_latency`` times one
.tflite (the solver's --verify-template, the export's check), ``profile_plan`` a plan cut from a template (the Python
API's profiling step), both inside ``pinned``, the one place that pins the process and restores its affinity;
--cpus values are read by device_profiler.checks.cores."""
from __future__ import annotations

import contextlib
import os

import numpy as np

from tfwidth.errors import UsageError


@contextlib.contextmanager
def pinned(cpus):
    """This process pinned to the cores ``cpus`` (None: left as it is) for the ``with`` block, its former affinity
    restored afterwards, however the block ends (a caller that goes on training gets every core back). Yields the
    cores it runs on; a core this machine lacks is one UsageError naming the ones it has."""
    from device_profiler import timing
    old = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        try:
            cores = timing.pin(list(cpus) if cpus is not None else None)
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot pin the timing to cores {list(cpus)} ({e}); this machine has cores {old}: "
                             f"pass --cpus with one of them, or --cpus none") from None
        yield cores
    finally:
        if old is not None:
            os.sched_setaffinity(0, set(old))


def measure_latency(content: bytes, threads: int = 1, runs: int = 20, warmup: int = 2, repeats: int = 5,
                    cpus=(0,), seed: int = 0) -> dict:
    """Time the .tflite with the device profiler's protocol (device_profiler.timing: one interpreter, warm-up, N
    timed invokes, min of N, pinned), ``repeats`` times with a fresh interpreter; the statistic is the median of
    the repeats' minima (a new interpreter moves the min by ~2% here, so one repeat would be noisier than the
    profiler's own samples). The process's CPU affinity is restored afterwards."""
    from device_profiler import runtime as rt_mod, timing
    rt = rt_mod.select()
    with pinned(cpus) as cores:
        protocol = timing.Protocol(runs=runs, warmup_runs=warmup, threads=threads)
        rng = np.random.default_rng(seed)
        per = [timing.time_model(rt, content, protocol, rng)["ms"] for _ in range(repeats)]
    mins = [p["min"] for p in per]
    return {"status": "ok", "ms": {"min": float(np.median(mins)), "best": float(min(mins)),
                                   "median": float(np.median([p["median"] for p in per])),
                                   "repeat_min": mins, "count": runs},
            "statistic": f"median over {repeats} interpreters of the min of {runs} invokes",
            "warmup_runs": warmup, "threads": threads, "cpus": cores, "runtime": rt.name,
            "runtime_version": rt.version, "device": timing.describe_device()}


def profile_plan(template, plan: dict, out, *, cpus=(0,), threads: int = 1, progress: bool = False, **protocol) -> dict:
    """This machine as the device: the configurations of ``plan`` (tfwidth.profile.make_plan) cut from ``template``
    (a template.tflite path, its manifest beside it) and timed into the samples file ``out`` exactly as
    ``python -m device_profiler --template T --plan P --out OUT`` does with its defaults (the precision protocol and
    the noise check; ``protocol``: device_profiler.session.open_local's keywords). Resumes a killed run of the same
    plan. Pinned to ``cpus`` while it times, the process's affinity restored afterwards (training in the same
    process keeps both cores). Returns the profiler's figures (counts, wall and invoke seconds, noise summary)."""
    from device_profiler.session import NoiseCheck, open_local, profile
    with pinned(cpus):
        session = open_local(template, cpus=None, threads=threads, **protocol)  # None: the cores pinned here
        return profile(session, plan, str(out), progress=progress, noise=NoiseCheck())
