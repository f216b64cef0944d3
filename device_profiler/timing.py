"""The timing protocol: benchmark_model's (warm-up, then N timed invokes on random input, one interpreter per model),
with the statistics a noisy small device needs. On this kind of machine the min of N invokes pinned to one core is
the precise statistic, far steadier than the median (docs/benchmarks.md, "The profiler's noise check"): every
statistic is recorded, the fit chooses.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import socket
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How one configuration is timed: after the warm-up, blocks of ``runs`` invokes. With ``precision`` > 0 blocks
    are added until the minimum has been reached twice: the second-lowest block minimum within ``precision`` of the
    lowest (see ``reached_precision``), for at most ``max_seconds`` of timed invokes and ``max_blocks`` blocks (at
    least two blocks are always timed); precision 0 times one block (the fixed protocol of older profilers).
    ``spacing``: the least seconds between the starts of two visits of one configuration when a window is timed in
    visits (device_profiler.session.Session.record_many); the profiler waits out the rest when a round of visits is
    shorter. The idea: slow spells of several seconds slow every visit that falls inside them alike, so visits a
    second apart agree and the precision check passes a slow minimum, while visits further apart than a spell
    disagree and are visited again. Not shown to help on this busy machine (docs/benchmarks.md, "Spacing a
    configuration's visits"), hence 0 by default."""
    runs: int = 20
    warmup_runs: int = 2
    warmup_seconds: float = 0.0
    threads: int = 1
    precision: float = 0.0
    max_seconds: float = 2.0
    max_blocks: int = 4
    spacing: float = 0.0


def reached_precision(block_mins: list) -> float | None:
    """How well the minimum is pinned down by these blocks' minima: (second lowest - lowest) / lowest, None with one
    block. Why the second-lowest block: a min of N invokes is the statistic that is precise on a small shared CPU
    (pinned: ~1.5% CV across repeats, against ~10% for the median), but one lucky or one disturbed block moves it; the same floor reached by two independent
    blocks is a floor the device really has, and the gap between them is the precision the sample can claim."""
    if len(block_mins) < 2:
        return None
    a, b = sorted(block_mins)[:2]
    return (b - a) / a


def summarize(ms: list) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    return {"min": float(a.min()), "median": float(np.median(a)), "mean": float(a.mean()),
            "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "count": int(len(a))}


def _random_inputs(interpreter, rng: np.random.Generator) -> list:
    out = []
    for d in interpreter.get_input_details():
        shape, dtype = [max(1, int(s)) for s in d["shape"]], np.dtype(d["dtype"])
        if dtype.kind == "f":
            x = rng.standard_normal(shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            x = rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dtype)
        out.append((d["index"], x))
    return out


def prepare(runtime, model: bytes, threads: int, rng: np.random.Generator):
    """An interpreter with random inputs set, ready to invoke."""
    interpreter = runtime.interpreter(model, threads)
    for index, x in _random_inputs(interpreter, rng):
        interpreter.set_tensor(index, x)
    return interpreter


def time_model(runtime, model: bytes, protocol: Protocol, rng: np.random.Generator, reference=None) -> dict:
    """Time one model; returns {"ms": stats, "warmup_runs", "invoke_s": seconds spent inside invokes, "times_ms":
    [the model's invoke times, (the reference's)]}. Consecutive blocks (``protocol.precision``) are what one model
    timed by itself gets (--benchmark); a plan's configurations are timed in visits spread over their window
    instead (device_profiler.session.Session.record_many), which is what survives a device whose speed drifts.

    With a `reference` interpreter, its invokes alternate with the model's ({"ref_ms": its stats} is added): on a
    shared or throttling device the load changes from one second to the next, and a reference timed in the same
    window is what a sample's timing can be corrected with."""
    invokes = [prepare(runtime, model, protocol.threads, rng).invoke]
    if reference is not None:
        invokes.append(reference.invoke)
    clock = time.perf_counter
    spent = 0.0
    warm, start = 0, clock()
    while warm < protocol.warmup_runs or clock() - start < protocol.warmup_seconds:
        for invoke in invokes:
            t0 = clock()
            invoke()
            spent += clock() - t0
        warm += 1
    ms = [[] for _ in invokes]
    block_mins: list = []
    timed0 = spent
    while True:
        first = len(ms[0])
        for _ in range(protocol.runs):
            for invoke, out in zip(invokes, ms):
                t0 = clock()
                invoke()
                dt = clock() - t0
                spent += dt
                out.append(dt * 1e3)
        block_mins.append(min(ms[0][first:]))
        if protocol.precision <= 0:
            break
        reached = reached_precision(block_mins)
        if reached is not None and (reached <= protocol.precision or len(block_mins) >= protocol.max_blocks
                                    or spent - timed0 >= protocol.max_seconds):
            break
    r = {"ms": summarize(ms[0]), "warmup_runs": warm, "invoke_s": spent, "times_ms": ms}
    if protocol.precision > 0:
        r["precision"] = {"target": protocol.precision, "reached": reached_precision(block_mins),
                          "blocks": len(block_mins), "met": reached_precision(block_mins) <= protocol.precision}
    if reference is not None:
        r["ref_ms"] = summarize(ms[1])
    return r


def pin(cpus) -> list | None:
    """Pin this process to the given cores (None: leave it); returns the cores actually allowed."""
    if cpus is None:
        return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    os.sched_setaffinity(0, set(cpus))
    return sorted(os.sched_getaffinity(0))


def describe_device() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        cpu = info.get("model name") or info.get("Model") or info.get("Hardware") or cpu
    except OSError:
        pass
    return {"machine": platform.machine(), "cpu": cpu, "os": platform.platform(), "hostname": socket.gethostname()}
