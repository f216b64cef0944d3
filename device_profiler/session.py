"""A profiling session: widths -> sample records on this device (``Session``), and the run of a plan through any
session (``profile``: resume, reference re-timing, repeats, noisy windows re-timed), the library under
``python -m device_profiler`` (its CLI, device_profiler/__main__.py). ``adb.AdbSession`` is the other session, the
same interface timed on an Android phone.

    maker = variants.load("template.tflite")
    session = Session(maker, runtime.select(), timing.Protocol(runs=20), timing.pin([0]))
    profile(session, load_plan("plan.json", maker), "samples.jsonl")       # -> counts, wall and invoke seconds
    benchmark(session, [32, 64, ...])                                       # -> one sample record
"""
from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
import random
import statistics
import sys
import time

import numpy as np

from device_profiler import samples, timing, variants
from device_profiler.console import Progress
from device_profiler.errors import UsageError
from device_profiler.files import atomic_write_bytes

# The precision a configuration is timed to by default: about the A/A floor of the pinned min-of-N protocol on a
# quiet machine (docs/benchmarks.md, "The profiler's noise check"); asking two visits' minima to agree within 1%
# costs ~2 visits per configuration on a quiet device and more where it drifts.
DEFAULT_PRECISION = 0.01
# The least seconds between two visits of one configuration (timing.Protocol.spacing)
DEFAULT_SPACING = 0.0
# Samples per window when no reference marks the windows (profile(reference_every=0))
WINDOW = 25


def load_plan(path: str, maker: variants.VariantMaker) -> dict:
    try:
        with open(path) as f:
            plan = json.load(f)
        if not isinstance(plan, dict) or plan.get("kind") != "plan":
            raise ValueError("not a plan")
        configs, reference = plan["configs"], plan["reference"]
    except OSError as e:
        raise UsageError(f"cannot read plan {path} ({e.strerror}); make one with `python -m tfwidth.profile plan`") from None
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"plan {path} is unreadable ({e}); make one with `python -m tfwidth.profile plan`") from None
    if plan.get("space_hash") != maker.manifest["space_hash"]:
        raise UsageError(f"plan {path} was made for space {plan.get('space_hash')} but the template is for space "
                         f"{maker.manifest['space_hash']}; make the plan and the template from the same space.json")
    # every configuration is checked before the first is timed: a bad plan writes nothing
    maker.check_widths(reference, f"plan {path} reference")
    for i, w in enumerate(configs):
        maker.check_widths(w, f"plan {path} configuration {i}")
    return plan


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
        if not 0 <= i < n:
            raise ValueError
    except ValueError:
        raise UsageError(f"--shard {text!r} should be i/n with 0 <= i < n, e.g. 0/4") from None
    return i, n


class Session:
    """One runtime, one protocol, one device: turns widths into sample records."""

    def __init__(self, maker, runtime, protocol, cpus, seed: int = 0):
        self.maker, self.runtime, self.protocol, self.cpus = maker, runtime, protocol, cpus
        self.rng = np.random.default_rng(seed)
        self.device = timing.describe_device()
        self.invoke_s = 0.0
        self.reference = None

    def pair_with(self, widths) -> None:
        """Time the reference configuration alongside every sample (see timing.time_model)."""
        self.reference = timing.prepare(self.runtime, self.maker.make(widths), self.protocol.threads, self.rng)

    def record(self, kind: str, index: int, widths, ref_ms) -> dict:
        rec = {"kind": kind, "index": index, "space_hash": self.maker.manifest["space_hash"],
               "widths": [int(w) for w in widths], "status": "ok", "error": None, "ms": None, "warmup_runs": 0}
        try:
            paired = self.reference if kind in ("sample", "repeat") else None
            r = timing.time_model(self.runtime, self.maker.make(widths), self.protocol, self.rng, paired)
            rec["ms"], rec["warmup_runs"] = r["ms"], r["warmup_runs"]
            if "precision" in r:
                rec["precision"] = r["precision"]
            if paired is not None:
                ref_ms = r["ref_ms"]["min"]
            self.invoke_s += r["invoke_s"]
        except (RuntimeError, ValueError) as e:  # the runtime refusing one variant must not stop a long run
            rec["status"], rec["error"] = "failed", f"{type(e).__name__}: {e}".splitlines()[0][:500]
        rec.update({"runtime": self.runtime.name, "runtime_version": self.runtime.version,
                    "kernels": self.runtime.kernels,
                    "threads": self.protocol.threads, "cpus": self.cpus, "format": self.maker.manifest["format"],
                    "device": self.device, "ref_ms": rec["ms"]["min"] if kind == "reference" and rec["ms"] else ref_ms,
                    "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
        return rec

    def record_many(self, items: list, ref_ms) -> list[dict]:
        """Records of [(kind, index, widths)] (see record). With a precision to reach, in visits: every item is
        timed one block of ``runs`` invokes per visit, in order, in a fresh interpreter; visits go on for the items
        whose minimum has not yet been reached twice (timing.reached_precision of their visits' minima), at most
        ``max_blocks`` visits and ``max_seconds`` of invokes per item, at least two each. Why visits and not blocks
        in a row: on a shared machine the speed drifts over seconds, so consecutive blocks agree with each other
        and still miss the floor; the same invokes spread over visits nearly halved the A/A difference of the same
        networks timed twice (measured: docs/benchmarks.md, "Earlier run, not quiet"). Two visits of one item start
        at least ``spacing`` seconds apart (timing.Protocol.spacing), waited out when a round is shorter."""
        if self.protocol.precision <= 0:
            return [self.record(k, i, w, ref_ms) for k, i, w in items]
        one = dataclasses.replace(self.protocol, precision=0.0)
        recs = [{"kind": k, "index": i, "space_hash": self.maker.manifest["space_hash"],
                 "widths": [int(x) for x in w], "status": "ok", "error": None, "ms": None, "warmup_runs": 0}
                for k, i, w in items]
        state = [{"mins": [], "times": [], "ref": [], "warm": 0, "spent": 0.0, "last": None} for _ in items]
        p = self.protocol

        def pending(j: int) -> bool:
            st = state[j]
            if recs[j]["status"] != "ok":
                return False
            if len(st["mins"]) < 2:
                return True
            return (timing.reached_precision(st["mins"]) > p.precision and len(st["mins"]) < p.max_blocks
                    and st["spent"] < p.max_seconds)

        while True:
            todo = [j for j in range(len(items)) if pending(j)]
            if not todo:
                break
            for j in todo:
                kind, _, widths = items[j]
                paired = self.reference if kind in ("sample", "repeat") else None
                last = state[j]["last"]
                if p.spacing > 0 and last is not None:
                    wait = p.spacing - (time.perf_counter() - last)
                    if wait > 0:
                        time.sleep(wait)
                state[j]["last"] = time.perf_counter()
                try:
                    r = timing.time_model(self.runtime, self.maker.make(widths), one, self.rng, paired)
                except (RuntimeError, ValueError) as e:
                    recs[j]["status"], recs[j]["error"] = "failed", f"{type(e).__name__}: {e}".splitlines()[0][:500]
                    continue
                st = state[j]
                st["times"] += r["times_ms"][0]
                st["mins"].append(r["ms"]["min"])
                st["warm"] += r["warmup_runs"]
                st["spent"] += r["invoke_s"]
                if paired is not None:
                    st["ref"].append(r["ref_ms"]["min"])
                self.invoke_s += r["invoke_s"]
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        for (kind, _, _), rec, st in zip(items, recs, state):
            if rec["status"] == "ok":
                reached = timing.reached_precision(st["mins"])
                rec["ms"], rec["warmup_runs"] = timing.summarize(st["times"]), st["warm"]
                rec["precision"] = {"target": p.precision, "reached": reached, "blocks": len(st["mins"]),
                                    "visits": len(st["mins"]), "met": reached is not None and reached <= p.precision,
                                    "spacing": p.spacing}
            rec.update({"runtime": self.runtime.name, "runtime_version": self.runtime.version,
                        "kernels": self.runtime.kernels, "threads": p.threads, "cpus": self.cpus,
                        "format": self.maker.manifest["format"], "device": self.device,
                        "ref_ms": (rec["ms"]["min"] if kind == "reference" and rec["ms"] else
                                   min(st["ref"]) if st["ref"] else ref_ms), "time": now})
        return recs


def _measure(session, items: list, ref_ms) -> list[dict]:
    """session.record_many where the session has it (the local runner); else one record at a time (adb)."""
    many = getattr(session, "record_many", None)
    return many(items, ref_ms) if many else [session.record(k, i, w, ref_ms) for k, i, w in items]


@dataclasses.dataclass(frozen=True)
class NoiseCheck:
    """How the profiler watches its own noise (python -m device_profiler --help: --noise-threshold and the rest).

    Every ``repeat_every`` samples an earlier sample of this run is timed again (a "repeat" record). The samples
    between two reference timings form a window; when the window's reference drift (each of its two references
    against the run's median reference) or its repeats' spread (relative difference, drift-corrected) exceeds
    ``threshold``, the window is timed again, up to ``retries`` times while the re-timing has cost less than
    ``budget`` times the rest of the run's wall time, and the quietest attempt is kept. threshold 0: measure only."""
    threshold: float = 0.05
    repeat_every: int = 10
    retries: int = 2
    budget: float = 0.5


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / (0.5 * (a + b))


def open_local(template, *, cpus=(0,), threads: int = 1, runs: int = 20, precision: float = DEFAULT_PRECISION,
               max_seconds: float = timing.Protocol.max_seconds, max_blocks: int = timing.Protocol.max_blocks,
               warmup_runs: int = 2, warmup_seconds: float = 0.0, runtime: str | None = None,
               kernels: str = "default", seed: int = 0, spacing: float = DEFAULT_SPACING) -> Session:
    """A Session timing on this device: variants cut from ``template`` (a template.tflite path, its manifest beside
    it), the first importable runtime (or ``runtime``) with ``kernels``, the protocol's figures as the CLI's flags
    (python -m device_profiler --help), and this process pinned to ``cpus`` (None: left as it is; the caller
    restores its affinity if it goes on doing other work). A core this device does not have is a UsageError."""
    from device_profiler import runtime as runtimes
    maker = variants.load(template)
    rt = runtimes.select(runtime, kernels)
    try:
        pinned = timing.pin(None if cpus is None else list(cpus))
    except (OSError, ValueError) as e:
        have = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "unknown"
        raise UsageError(f"cannot pin to cores {list(cpus)} ({e}); this device has cores {have}") from None
    protocol = timing.Protocol(runs, warmup_runs, warmup_seconds, threads, precision, max_seconds, max_blocks,
                               spacing)
    return Session(maker, rt, protocol, pinned, seed)


def profile(session: Session, plan: dict, out: str, shard=(0, 1), reference_every: int = 25,
            progress: bool = True, paired: bool = False, noise: NoiseCheck | None = None, say=_say) -> dict:
    """Time the plan's pending configurations of this shard; returns counts, wall/invoke seconds and (with
    ``noise``) the run's noise summary (samples.noise_summary).

    Without ``noise`` the reference is timed at the start and every ``reference_every`` samples, and each sample
    (each window, for a session timing in visits) is written as soon as it is timed. With it, a closing reference
    ends the run, repeats are timed, and each window of ``reference_every`` samples is written once it is judged
    (re-timed first if it was noisy, see NoiseCheck): a kill loses at most that window. Every record carries the plan's fingerprint and this run's id."""
    fp = samples.plan_fingerprint(plan)
    done, ref_ms = samples.recover(out, session.maker.manifest["space_hash"], fp)
    todo = [i for i in range(len(plan["configs"])) if i % shard[1] == shard[0] and i not in done]
    # unique even for two runs of one process in the same second (tfwidth.pipeline runs its profile stages
    # in-process): repeats are matched with their sample by (run, index), also across pooled files
    run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S") + f"-{os.urandom(4).hex()}"
    wall0, invoke0 = time.perf_counter(), session.invoke_s
    if paired and todo:
        session.pair_with(plan["reference"])
    bar = Progress(len(todo), "profiling", unit="cfg") if progress and todo else None
    judge = noise is not None and reference_every > 0
    # Without judging, a session that times in visits (Session.record_many, to a precision) gets windows too, of
    # reference_every samples (WINDOW without references), so a sample's visits are spread over its window and not
    # consecutive; one that times a sample in one go (the adb runner: seconds each) writes each sample at once
    visits = getattr(session, "record_many", None) is not None and getattr(session.protocol, "precision", 0) > 0
    size = reference_every if judge else (reference_every or WINDOW) if visits else 1
    picker = random.Random(0)
    # the kept reference timings of this run (min ms): their median is the run's speed level. Not the references of
    # re-timings that were not kept: in a long busy spell they would drag the level to the busy speed
    kept_refs: list[dict] = []
    accepted: list[dict] = []  # this run's samples already written (repeats are chosen among them)
    counts = {"failed": 0, "repeats": 0, "retimed_windows": 0, "noisy_windows": 0}
    retime_s = 0.0

    def stamp(rec: dict) -> dict:
        rec["plan"], rec["run"] = fp, run_id
        return rec

    def reference() -> dict:
        nonlocal ref_ms
        r = stamp(session.record("reference", -1, plan["reference"], ref_ms))
        if r["status"] == "ok":
            ref_ms = r["ref_ms"]
        return r

    def time_window(indices: list, first: bool, repeats: dict | None = None) -> tuple[list, list, dict]:
        """Time these samples and the repeats due among them: (samples, [(first timing, repeat)], the repeats'
        choices {position in the window: an earlier window's sample, or the position of one of this window's}).
        The first attempt updates the bar and chooses the repeats; a re-timing repeats the same. Samples and
        repeats are timed together (Session.record_many: in visits when timing to a precision)."""
        if repeats is None:
            repeats = {}
            every = noise.repeat_every if noise is not None else 0
            for p in range(len(indices)):
                if every > 0 and (len(accepted) + p + 1) % every == 0:
                    pool = [d for d in accepted if d["status"] == "ok"]
                    repeats[p] = picker.choice(pool) if pool else picker.randrange(p + 1)
        targets = {p: (indices[a] if isinstance(a, int) else a["index"]) for p, a in repeats.items()}
        items = [("sample", i, plan["configs"][i]) for i in indices]
        items += [("repeat", targets[p], plan["configs"][targets[p]]) for p in sorted(repeats)]
        timed = [stamp(r) for r in _measure(session, items, ref_ms)]
        recs = timed[:len(indices)]
        if first and bar:
            for _ in recs:
                bar.update()
        reps = []
        for p, rep in zip(sorted(repeats), timed[len(indices):]):
            a = repeats[p]
            a = recs[a] if isinstance(a, int) else next((d for d in recs if d["index"] == a["index"]), a)
            if rep["status"] == "ok" and a["status"] == "ok":
                reps.append((a, rep))
        return recs, reps, repeats

    def drift_of(start_ref, end_ref) -> float | None:
        """The larger deviation of an attempt's two references from the median of the kept ones and these."""
        vals = [r["ms"]["min"] for r in (start_ref, end_ref) if r is not None and r["status"] == "ok"]
        if not vals:
            return None
        level = statistics.median([r["ms"]["min"] for r in kept_refs] + [
            r["ms"]["min"] for r in (start_ref, end_ref)
            if r is not None and r["status"] == "ok" and not any(r is k for k in kept_refs)])
        return max(abs(v / level - 1.0) for v in vals)

    def keep(r) -> None:
        if r is not None and r["status"] == "ok" and not any(r is k for k in kept_refs):
            kept_refs.append(r)

    def spread_of(reps) -> float | None:
        # the median over the window's repeats: on a busy machine many single pairs differ by over 5%, so the
        # largest of a window's pairs would flag most windows (docs/benchmarks.md, "The profiler's noise check").
        # Raw or drift-corrected, whichever agrees better: the fit reads the timings the way that does
        # (samples.drift_choice), so only noise that neither removes makes a window noisy.
        if not reps:
            return None
        raw = statistics.median(_rel(a["ms"]["min"], b["ms"]["min"]) for a, b in reps)
        if not all(a.get("ref_ms") and b.get("ref_ms") for a, b in reps):
            return raw
        return min(raw, statistics.median(_rel(a["ms"]["min"] / a["ref_ms"], b["ms"]["min"] / b["ref_ms"])
                                          for a, b in reps))

    run_records: list[dict] = []

    def write(w, recs: list) -> None:
        recs = [r for r in recs if r is not None]
        w.write_many(recs)
        run_records.extend(recs)

    with samples.Writer(out) as w:
        start = reference() if reference_every > 0 and todo else None
        if not judge:
            write(w, [start])
        for wi, pos in enumerate(range(0, len(todo), size)):
            window = todo[pos:pos + size]
            if not judge:  # no judging: each window written as soon as it is timed
                if reference_every > 0 and pos > 0 and pos % reference_every == 0:
                    write(w, [reference()])
                recs, reps, _ = time_window(window, True)
                write(w, recs + [r for _, r in reps])
                accepted.extend(recs)
                counts["failed"] += sum(r["status"] != "ok" for r in recs)
                counts["repeats"] += len(reps)
                continue
            recs, reps, chosen = time_window(window, True)
            end = reference()
            drift, spread = drift_of(start, end), spread_of(reps)
            # (score, drift, spread, start reference, samples, repeats, end reference) of each attempt
            attempts = [(max(drift or 0.0, spread or 0.0), drift, spread, start, recs, reps, end)]
            while (noise.threshold > 0 and min(x[0] for x in attempts) > noise.threshold
                   and len(attempts) <= noise.retries
                   and retime_s < noise.budget * (time.perf_counter() - wall0 - retime_s)):
                t0 = time.perf_counter()
                s2 = reference()  # a fresh start: the end reference may be the outlier
                r2, p2, _ = time_window(window, False, chosen)
                e2 = reference()
                d2, sp2 = drift_of(s2, e2), spread_of(p2)
                attempts.append((max(d2 or 0.0, sp2 or 0.0), d2, sp2, s2, r2, p2, e2))
                retime_s += time.perf_counter() - t0
            best = min(range(len(attempts)), key=lambda k: attempts[k][0])
            score, drift_k, spread_k, s_k, recs_k, reps, e_k = attempts[best]
            noisy = noise.threshold > 0 and score > noise.threshold
            for rec in recs_k:
                rec["retimed"] = best
                rec["window"] = {"drift": drift_k, "spread": spread_k, "noisy": noisy}
            if len(attempts) > 1 or noisy:
                d0, s0 = attempts[0][1], attempts[0][2]
                what = f"reference drift {100 * (d0 or 0):.1f}%" + ("" if s0 is None else
                                                                     f", repeat spread {100 * s0:.1f}%")
                if len(attempts) > 1:
                    counts["retimed_windows"] += 1
                    verdict = f"re-timed {len(attempts) - 1}x, kept " + (
                        f"attempt {best} (drift {100 * (drift_k or 0):.1f}%" + (
                            "" if spread_k is None else f", repeat spread {100 * spread_k:.1f}%") + ")"
                        if best else "the first timing")
                else:
                    verdict = "not re-timed (re-timing budget spent)"
                if noisy:
                    counts["noisy_windows"] += 1
                    verdict += f"; still above {noise.threshold:.0%}: the device is busy or throttling"
                say(f"noise: samples {window[0]}-{window[-1]}: {what} > {noise.threshold:.0%}; {verdict}")
            # In an order readers that pair a sample with the latest reference line before it (skipping discarded
            # ones) understand: the discarded attempts' references, then the kept attempt's start reference, samples,
            # repeats and end. The first window's start is not written yet; a later window's is the previous
            # window's end, already written, so when the first attempt is kept its discarded references follow it.
            block = []
            for k, (_, _, _, s_, _, _, e_) in enumerate(attempts):
                if k != best:
                    unwritten = [r for r in (s_, e_) if r is not start or wi == 0]
                    for r in unwritten:
                        r["discarded"] = True  # timed for an attempt that was not kept
                    block += unwritten
            block += [s_k if s_k is not start or wi == 0 else None] + recs_k + [r for _, r in reps] + [e_k]
            keep(s_k)
            keep(e_k)
            write(w, block)
            accepted.extend(recs_k)
            counts["failed"] += sum(r["status"] != "ok" for r in recs_k)
            counts["repeats"] += len(reps)
            start = e_k
            if e_k["status"] == "ok":
                ref_ms = e_k["ref_ms"]
        summary = None
        if noise is not None and todo:
            summary = samples.noise_summary(run_records)
            write(w, [stamp({"kind": "noise", "index": -1, "space_hash": session.maker.manifest["space_hash"],
                             "widths": None, "ms": None, "status": "summary", "error": None, **summary,
                             "retimed_windows": counts["retimed_windows"], "noisy_windows": counts["noisy_windows"],
                             "threshold": noise.threshold, "time": datetime.datetime.now(
                                 datetime.timezone.utc).isoformat(timespec="seconds")})])
    if bar:
        bar.close()
    return {"timed": len(todo), "skipped": len(done), "failed": counts["failed"], "repeats": counts["repeats"],
            "retimed_windows": counts["retimed_windows"], "noisy_windows": counts["noisy_windows"],
            "retime_s": retime_s, "noise": summary,
            "wall_s": time.perf_counter() - wall0, "invoke_s": session.invoke_s - invoke0}



def benchmark(session, widths) -> dict:
    """Time one configuration (``widths``, checked against the template) with the session's protocol (a local
    ``Session`` or an ``adb.AdbSession``): its sample record (ms statistics, warm-up invokes, the precision reached
    when timed to one). UsageError when the widths do not fit the template or the runtime fails on them."""
    session.maker.check_widths(widths, "--benchmark")
    rec = _measure(session, [("sample", 0, widths)], None)[0]
    if rec["status"] != "ok":
        raise UsageError(f"the runtime failed on this configuration: {rec['error']}")
    return rec


def format_benchmark(rec: dict, where: str, fmt: str, runs: int | None = None) -> str:
    """``benchmark``'s record as one line: where it was timed (``where``), the model format, min/median/mean/std and
    how (``runs``: invokes per block, for a record timed to a precision)."""
    s = rec["ms"]
    med = "n/a" if s["median"] is None else f"{s['median']:.3f}"
    prec = rec.get("precision")
    how = (f"{s['count']} runs in blocks of {runs}, the minimum reached twice within "
           f"{100 * prec['reached']:.2f}%" + ("" if prec["met"] else f" (not {100 * prec['target']:g}%: the budget ran "
                                                                      f"out; the device is noisy)")
           if prec else f"{s['count']} runs")
    return (f"{where}, {fmt}: min {s['min']:.3f} ms, median {med}, mean {s['mean']:.3f}, "
            f"std {s['std']:.3f} over {how} ({rec['warmup_runs']} warm-up)")


def read_inputs(path: str, input_details: list) -> list:
    """The examples of --dump-outputs INPUTS.npz, one array per model input: ``input0``, ``input1``, ... (or the
    only array of a one-input model), each [N, *the input's shape without its batch axis] of the input's dtype.
    Returns [(tensor index, array)]; a UsageError naming the file and what it should hold otherwise."""
    want = ", ".join(f"input{k} {[int(s) for s in d['shape'][1:]]} {np.dtype(d['dtype']).name}"
                     for k, d in enumerate(input_details))
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise UsageError(f"cannot read --dump-outputs inputs {path} ({e}); give an .npz of N examples per input: "
                         f"{want}") from None
    if len(input_details) == 1 and len(arrays) == 1:
        arrays = {"input0": next(iter(arrays.values()))}
    out, n = [], None
    for k, d in enumerate(input_details):
        x = arrays.get(f"input{k}")
        shape = tuple(int(s) for s in d["shape"][1:])
        if x is None or x.dtype != np.dtype(d["dtype"]) or x.shape[1:] != shape or len(x) == 0 or n not in (None, len(x)):
            got = ", ".join(f"{name} {list(a.shape)} {a.dtype.name}" for name, a in arrays.items())
            raise UsageError(f"--dump-outputs inputs {path} holds {got or 'no array'}; the template's variants take "
                             f"{want} (N examples each, the same N)")
        n = len(x)
        out.append((d["index"], x))
    return out


def dump_outputs(session, items: list, inputs_path: str) -> dict:
    """Each configuration's outputs for the examples of ``inputs_path`` (read_inputs): every (index, widths) of
    ``items`` cut from the template and run in a fresh interpreter of the session's runtime, one invoke per example.
    Returns the arrays of the .npz --dump-outputs writes: ``index`` [C] (the plan's indices), ``widths`` [C, L] and
    ``output0``, ``output1``, ... [C, N, *output shape without its batch axis]. Nothing is timed; a configuration the
    runtime refuses is a UsageError. What it is for: the same file on two devices (or runtimes) shows whether they
    compute the same thing (tools/pi_check.sh compares an ARM userland's with this host's)."""
    outs, inputs = None, None
    for index, widths in items:
        try:
            it = session.runtime.interpreter(session.maker.make(widths), session.protocol.threads)
            if inputs is None:
                inputs = read_inputs(inputs_path, it.get_input_details())
                outs = [[] for _ in it.get_output_details()]
            got = [[] for _ in outs]
            for e in range(len(inputs[0][1])):
                for tensor, x in inputs:
                    it.set_tensor(tensor, x[e:e + 1])
                it.invoke()
                for g, d in zip(got, it.get_output_details()):
                    g.append(np.array(it.get_tensor(d["index"])[0]))
        except (RuntimeError, ValueError) as e:
            raise UsageError(f"the runtime failed on configuration {index} {list(widths)}: "
                             f"{type(e).__name__}: {e}".splitlines()[0][:500]) from None
        for o, g in zip(outs, got):
            o.append(np.stack(g))
    arrays = {"index": np.asarray([i for i, _ in items], np.int64),
              "widths": np.asarray([list(w) for _, w in items], np.int64)}
    arrays.update({f"output{k}": np.stack(o) for k, o in enumerate(outs)})
    return arrays


def write_npz(path: str, arrays: dict) -> None:
    """``arrays`` as an .npz at ``path``, whole or not at all (files.atomic_write_bytes)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
