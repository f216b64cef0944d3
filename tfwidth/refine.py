"""Make the latency table accurate where the solver chooses: solve, time the chosen configurations on the device, refit
with those timings, repeat.

Why: the table is fitted on a plan of configurations and smoothed (monotone hinge, per-layer bilinear prior), so it
cannot see every effect of the device (XNNPACK can run some narrower channel counts slower than wider ones). The
solver then picks exactly the configurations whose latency the table under-predicts most, so its answers miss by far
more than random configurations do (measured: docs/benchmarks.md, "Refining the table on the solver's answers").
Timing the solver's own answers and giving them weight in the fit fixes the table there, which is the only place its
error matters.

    python -m tfwidth.refine --table table.json --samples samples.jsonl --template template.tflite \\
        --stats run/stats.json --target-ms 0.18 0.49 -o table_refined.json

The loop (``refine``) is pure logic: ``candidates(table)`` and ``measure(widths)`` are passed in, so tests drive it
with a synthetic device and the CLI (``main``) with this machine timed by the device profiler.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from device_profiler import console
from device_profiler.checks import cores, count, cpu_list, number, output_dir, output_file
from tfwidth.artifacts import check_space, read_json, write_json
from tfwidth.errors import ArgumentParser, UsageError
from tfwidth.host import pinned
from tfwidth.latency import (DEFAULT_REG, PRIOR, LatencyTable, fit_table, format_metrics, load_samples, measured,
                             prior_table_of, read_records, reference_level)
from tfwidth.solve import costs_hash

TOL = 0.03      # per-candidate |measured / predicted - 1| at which the table is accepted
ROUNDS = 12     # measurement rounds at most (a round times ~10 configurations per answer: seconds here)
# Weight of each refinement timing against one plan sample. A candidate's 15 entries are shared with ~N*15/#entries
# plan samples each (~10 here) plus the prior's pull (weight 9): at weight 1 a 15% miss would mostly stay. At 10 the
# timings of the solver's answers dominate their entries without being exact constraints (a noisy one still averages
# with its repeats and neighbours).
WEIGHT = 10.0
EXPLORE = 8           # neighbours timed per candidate (see neighbours)
REFERENCE_EVERY = 10  # reference timings per round: ~1 per 10 configurations, their median is the round's level
# What blocked a loop that did not converge (see diagnose). Noise: timings of one configuration differ by at least this
# share of the remaining error (range over median: a miss of e needs timings that spread ~2e apart at random to be
# noise alone, and half of that is already enough to move the worst of a dozen candidates by e).
NOISE_SHARE = 0.5
# A drift between two rounds counts when at least this share of the configurations timed in both moved the same way
# (noise moves them both ways; a device that slowed down moves them all).
DRIFT_AGREE = 0.75
# The pipeline stops on a loop that ended more than max(STOP_FACTOR x tol, STOP_ERR) off (see unconverged). Why not
# at tol: the solve stage times its own answer and re-aims it to the target, so a table a few percent off at the
# answers still gives a timed answer near the target, and a stop at 2 x tol would fail the default quickstart on a
# quiet machine for nothing (measured: docs/benchmarks.md, "Refining the table on the solver's answers"). 10% is the
# fit's own bar for a table too poor to solve on (latency.MIN_WITHIN_10PCT judges +-10%).
STOP_FACTOR = 2.0
STOP_ERR = 0.10


def _key(widths) -> tuple:
    return tuple(int(w) for w in widths)


def unique(configs) -> list[tuple]:
    """Distinct width tuples in first-seen order (None, an infeasible answer, left out)."""
    seen, out = set(), []
    for w in configs:
        if w is None:
            continue
        k = _key(w)
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out


def candidate_errors(table: LatencyTable, samples: list[dict]) -> list[dict]:
    """Per configuration in samples: its timing at the table's reference level (median over repeats), the table's
    prediction, and the relative error measured / predicted - 1 (> 0: the table under-predicts)."""
    if not samples:
        return []
    y = measured(samples, table.statistic, table.drift, table.fit.get("ref_ms"))
    by: dict[tuple, list] = {}
    for d, v in zip(samples, y):
        by.setdefault(_key(d["widths"]), []).append(float(v))
    out = []
    for k, vals in by.items():
        m, p = float(np.median(vals)), float(table.predict(k))
        out.append({"widths": list(k), "measured_ms": m, "predicted_ms": p, "error": m / p - 1.0,
                    "repeats": len(vals)})
    return out


def neighbours(space, configs: list[tuple], count: int, rng: np.random.Generator) -> list[tuple]:
    """``count`` random configurations near each of ``configs`` (every layer one choice narrower, the same or one
    wider), new ones only. Why: a candidate's timing corrects the entries it uses, but the effect that made it slow
    (narrow early layers, a channel count XNNPACK dislikes) usually covers its neighbours too, and the refitted
    solver moves to exactly such a neighbour; timing the neighbourhood teaches the fit the region, not the point."""
    seen, out = set(map(_key, configs)), []
    ks = np.asarray(space.num_choices)
    for w in configs:
        idx = np.asarray(space.to_indices(w))
        for _ in range(count):
            k = _key(space.to_widths(tuple(np.clip(idx + rng.integers(-1, 2, len(idx)), 0, ks - 1))))
            if k not in seen:
                seen.add(k)
                out.append(k)
    return out


def _round_summary(n: int, errs: list[dict], tol: float) -> dict:
    e = np.array([r["error"] for r in errs])
    worst = errs[int(np.argmax(np.abs(e)))]
    return {"round": n, "candidates": len(errs), "max_abs_err": float(np.abs(e).max()),
            "mean_abs_err": float(np.abs(e).mean()), "max_under": float(e.max()), "within_tol": bool(
                np.abs(e).max() <= tol), "worst": worst, "errors": errs}


def refine(table: LatencyTable, samples: list[dict], candidates, measure, tol: float = TOL, rounds: int = ROUNDS,
           weight: float = WEIGHT, validation: list[dict] | None = None, explore: int = 0, repeats: int = 1,
           seed: int = 0, targets: list | None = None, slack: float = 0.0, log=print) -> tuple[LatencyTable, dict]:
    """Repeat at most ``rounds`` times: measure ``candidates(table)``; stop if every one is within ``tol`` of the
    prediction; else add the timings (each with ``weight``) to ``samples`` and refit. The refit keeps the first
    fit's regulariser weights, statistic and reference level (the level every prediction is at). ``explore``:
    that many random neighbours of each candidate are timed once and fitted too (see ``neighbours``); each
    candidate is timed ``repeats`` times (the median is compared). ``measure`` times every entry of the list it is
    given, duplicates included, in order. Returns the last
    table, with ``fit["refine"]`` recording every round, and that record. When the last round still misses, the
    table is refitted with its timings too but those new candidates were not measured: ``converged`` is False.

    With ``targets`` (one latency target per answer, None for an answer that is not aimed, like a fixed baseline),
    the loop also meets the targets as measured: ``candidates(table, aims)`` returns one answer (widths or None) per
    target, solved at its aim (the target at first). A round is accepted only when every answer is also measured
    within ``target * (1 + slack)``. An answer over its target that the table predicted within ``tol`` (the table is
    right, the solver sits at the budget) is aimed lower by the miss; one the table mispredicted is left to the
    refit, which now knows it. Why one loop: re-aiming after refinement (``meet_target``) lands on configurations
    nobody timed, and those were the exports predicted worst (docs/benchmarks.md, "Refining the table on the
    solver's answers"). Here every answer returned was timed, and its timing is in the returned table.
    ``record["answers"]`` holds, per target, the answer (the last round's; if that one runs over, the latest earlier
    one that met it), its aim, measured and predicted ms."""
    if rounds < 1 or tol <= 0 or weight <= 0 or slack < 0:
        raise UsageError("refine needs rounds >= 1, a positive tolerance and weight, and slack >= 0")
    space = table.space
    base_fit = dict(table.fit)
    # the first fit's model, whole: its weights, residual scale (tables of older tfwidths fitted absolute ones) and,
    # for a few-shot table, the other device's table it was pulled towards
    opts = dict(reg=float(base_fit.get("reg", DEFAULT_REG)), prior=float(base_fit.get("prior", PRIOR)),
                statistic=table.statistic, drift=table.drift, level=base_fit.get("ref_ms"),
                scale=base_fit.get("scale", "absolute"), prior_table=prior_table_of(table),
                shared=bool(base_fit.get("shared", False)))
    aims = None if targets is None else [None if t is None else float(t) for t in targets]
    added: list[dict] = []
    wadd: list[float] = []
    history: list[dict] = []
    tried: list[list[dict]] = [[] for _ in (targets or [])]  # per target: every timed answer
    converged = False
    timed: list[list[dict]] = []  # each round's timings as measured, for diagnose
    over: list[int] = []
    for n in range(1, rounds + 1):
        if aims is None:
            answers = None
            cands = unique(candidates(table))
        else:
            answers = [None if w is None else _key(w) for w in candidates(table, aims)]
            if len(answers) != len(aims):
                raise ValueError(f"candidates returned {len(answers)} answers for {len(aims)} targets")
            cands = unique(answers)
        if not cands and history and aims is not None:
            # the refit now predicts every answer over its aim (the device is slower there than first fitted): keep
            # the answers timed so far, each marked met or not
            log(f"[refine] round {n}: no configuration is predicted within any aim any more; stopping")
            break
        if not cands:
            raise UsageError("no candidate configuration: every target is unreachable with this table; check "
                             "--target-ms")
        near = neighbours(space, cands, explore, np.random.default_rng([seed, n])) if explore else []
        # repeats interleaved (A B C A B C ...): a slow spell of the machine hits different configurations
        new = measure([w for _ in range(repeats) for w in cands] + near)
        timed.append(new)
        errs = candidate_errors(table, [d for d in new if _key(d["widths"]) in set(cands)])
        missing = set(cands) - {_key(r["widths"]) for r in errs}
        if missing:
            raise UsageError(f"{len(missing)} candidate(s) could not be timed on the device (e.g. "
                             f"{','.join(map(str, next(iter(missing))))}); see the timings file for the runtime error")
        summary = _round_summary(n, errs, tol)
        over = []
        if aims is not None:
            by = {_key(r["widths"]): r for r in errs}
            for i, (w, t) in enumerate(zip(answers, targets)):
                if w is None:
                    continue
                r = by[w]
                tried[i].append({"round": n, "aim_ms": aims[i], "widths": list(w), "measured_ms": r["measured_ms"],
                                 "predicted_ms": r["predicted_ms"], "error": r["error"]})
                if t is not None and r["measured_ms"] > t * (1 + slack):
                    over.append(i)
            summary["over_target"] = len(over)
        history.append(summary)
        w = summary["worst"]
        log(f"[refine] round {n}: {len(errs)} candidates (+{len(near)} neighbours), max |measured/predicted - 1| "
            f"{100 * summary['max_abs_err']:.1f}% (worst {','.join(map(str, w['widths']))}: measured "
            f"{w['measured_ms']:.4f} ms, predicted {w['predicted_ms']:.4f}), mean {100 * summary['mean_abs_err']:.1f}%"
            + (f", {len(over)} over their target" if aims is not None else ""))
        if summary["within_tol"] and not over:
            converged = True
            break
        for i in over:
            if abs(tried[i][-1]["error"]) <= tol:
                aims[i] *= float(targets[i]) / tried[i][-1]["measured_ms"]
        # the candidates' own timings get the weight; neighbours count like plan samples (one noisy timing each)
        added += new
        wadd += [float(weight) if _key(d["widths"]) in set(cands) else 1.0 for d in new]
        weights = np.r_[np.ones(len(samples)), wadd]
        table, _ = fit_table(samples + added, space, validation=validation, weights=weights, **opts)
    record = {"tol": tol, "max_rounds": rounds, "weight": weight, "explore": explore, "repeats": repeats,
              "rounds": len(history), "converged": converged,
              "refits": len(history) - converged, "added_samples": len(added),
              "max_abs_err_before": history[0]["max_abs_err"], "max_abs_err_after": history[-1]["max_abs_err"],
              "history": [{k: v for k, v in h.items() if k != "worst"} for h in history],
              "base_fit": {k: base_fit.get(k) for k in ("n_samples", "reg", "prior", "ref_ms", "validation")}}
    if targets is not None:
        record["slack"] = slack
        record["answers"] = [_settled(table, t, tr, slack) for t, tr in zip(targets, tried)]
    if not converged:
        # the loop stops within the tolerance only when answers still run over their target: that miss is what is left
        left = history[-1]["max_abs_err"]
        if left <= tol and over:
            left = max(tried[i][-1]["measured_ms"] / (float(targets[i]) * (1 + slack)) - 1 for i in over)
        record.update(diagnose(timed, history, tol, left, statistic=table.statistic, drift=table.drift,
                               level=base_fit.get("ref_ms"), weight=weight, over_target=len(over)))
    table.fit = dict(table.fit, refine=record)
    return table, record


def _spread(values) -> float:
    """Range over median of one configuration's timings."""
    v = np.asarray(values, float)
    return float((v.max() - v.min()) / np.median(v))


def diagnose(timed: list[list[dict]], history: list[dict], tol: float, left: float, statistic: str = "min",
             drift: bool = True, level: float | None = None, weight: float = WEIGHT, over_target: int = 0) -> dict:
    """What blocked a loop that ended ``left`` off (above ``tol``), from its own timings: ``timed`` holds each round's
    timings as ``measure`` returned them (every candidate ``repeats`` times, neighbours once), ``history`` the round
    summaries (each candidate's error against that round's table). Returns {"blocked_by", "diagnosis": one sentence
    with the numbers, "evidence": the figures it rests on}. Checked in this order:

    - "moving device": the device's speed moved between rounds by more than the tolerance and more than twice the
      spread of the repeats within a round (a jitter that large is noise, not a move): either the round's reference
      level (median ref_ms of its timings) or the configurations timed in two rounds (drift-corrected, as the loop
      compares them), at least DRIFT_AGREE of them the same way;
    - "noise": timings of the same configuration differ (range over median, median over configurations; the repeats
      within a round, or across rounds without repeats) by at least NOISE_SHARE of what is left;
    - "model bias": otherwise: the timings agree, the refit cannot fit them; names the worst configuration of the last
      round and in how many rounds it was off the same way.
    """
    recs = [(n, d) for n, ds in enumerate(timed, 1) for d in ds]
    y = measured([d for _, d in recs], statistic, drift, level) if recs else []
    per_round: dict[tuple, list] = {}  # (round, widths) -> timings
    for (n, d), v in zip(recs, y):
        per_round.setdefault((n, _key(d["widths"])), []).append(float(v))
    per_cfg: dict[tuple, dict] = {}  # widths -> {round: median timing}
    for (n, k), vals in per_round.items():
        per_cfg.setdefault(k, {})[n] = float(np.median(vals))
    within = [_spread(v) for v in per_round.values() if len(v) >= 2]
    jitter = float(np.median(within)) if within else None
    across = [_spread(list(r.values())) for r in per_cfg.values() if len(r) >= 2]
    spread = jitter if jitter is not None else float(np.median(across)) if across else None

    levels = {n: reference_level(ds) for n, ds in enumerate(timed, 1)}
    levels = {n: v for n, v in levels.items() if v}
    level_move = lo = hi = None
    if len(levels) >= 2:
        lo, hi = min(levels, key=levels.get), max(levels, key=levels.get)
        level_move = levels[hi] / levels[lo] - 1
    # each configuration against its own previous timing, grouped by the pair of rounds
    pairs: dict[tuple, list] = {}
    for r in per_cfg.values():
        ns = sorted(r)
        for a, b in zip(ns, ns[1:]):
            pairs.setdefault((a, b), []).append(r[b] / r[a] - 1)
    shift, shift_pair, shift_n = None, None, 0
    for ab, ds in pairs.items():
        med = float(np.median(ds))
        if len(ds) >= 2 and np.mean(np.sign(ds) == np.sign(med)) >= DRIFT_AGREE and (
                shift is None or abs(med) > abs(shift)):
            shift, shift_pair, shift_n = med, list(ab), len(ds)
    evidence = {"left": left, "repeat_spread": jitter, "timing_spread": spread,
                "reference_levels_ms": [levels.get(n) for n in range(1, len(timed) + 1)],
                "level_move": level_move, "config_drift": shift, "drift_rounds": shift_pair, "drift_configs": shift_n}

    floor = max(tol, 2 * jitter) if jitter is not None else tol
    beyond = f"more than the tolerance {100 * tol:g}%" + (
        f" and twice the {100 * jitter:.1f}% by which repeats within a round differ" if jitter is not None else
        " (no configuration was timed twice in a round)")
    if level_move is not None and level_move > floor:
        return {"blocked_by": "moving device", "evidence": evidence, "diagnosis": (
            f"the reference level moved {100 * level_move:.1f}% between rounds ({levels[lo]:.4g} ms in round {lo}, "
            f"{levels[hi]:.4g} ms in round {hi}), {beyond}")}
    if shift is not None and abs(shift) > floor:
        return {"blocked_by": "moving device", "evidence": evidence, "diagnosis": (
            f"the {shift_n} configurations timed in rounds {shift_pair[0]} and {shift_pair[1]} ran {100 * shift:+.1f}% "
            f"in the later one (median), {beyond}")}
    if spread is not None and spread >= NOISE_SHARE * left:
        src = "of its repeats in one round" if jitter is not None else "of its timings in different rounds"
        return {"blocked_by": "noise", "evidence": evidence, "diagnosis": (
            f"timings of the same configuration differ by {100 * spread:.1f}% (range over median {src}, median over "
            f"configurations), as much as the {100 * left:.1f}% left"
            + (f"; the tolerance {100 * tol:g}% is below this noise floor" if spread / 2 >= tol else ""))}
    last = history[-1]
    w = last["worst"]
    k = _key(w["widths"])
    # its errors in the rounds after its first timing: those timings were in the fit by then, with the weight
    signs = [np.sign(r["error"]) for h in history for r in h["errors"] if _key(r["widths"]) == k][1:]
    same = sum(s == np.sign(w["error"]) for s in signs)
    timings = (f"timings agree to {100 * spread:.1f}% (range over median)" if spread is not None else
               "no configuration was timed twice, so noise is not ruled out")
    if over_target and last["max_abs_err"] <= tol:
        what = (f"{over_target} answer(s) still run {100 * left:.1f}% over their target after re-aiming although the "
                f"table predicts every candidate within {100 * tol:g}%")
    else:
        what = (f"worst {','.join(map(str, k))} measured {w['measured_ms']:.4f} ms, predicted "
                f"{w['predicted_ms']:.4f} ms ({100 * w['error']:+.1f}%), ")
        what = (f"the refit cannot fit them: {what}off the same way in {same} of the {len(signs)} later round(s) "
                f"although its timings were in the fit with weight {weight:g}" if signs else
                f"the table misses where the solver went last: {what}timed for the first time in the last round "
                f"(the answers kept moving to configurations the fit had not seen)")
    return {"blocked_by": "model bias", "evidence": evidence, "diagnosis": f"{timings}, but {what}"}


def stop_at(tol: float) -> float:
    """The remaining error above which the pipeline stops on a loop that did not converge (see STOP_FACTOR)."""
    return max(STOP_FACTOR * float(tol), STOP_ERR)


def outcome(rec: dict) -> str:
    """The loop's result in one line: converged or not, the error before and after, and, when not, what blocked it."""
    head = (f"[refine] {'converged' if rec['converged'] else 'NOT converged'} after {rec['rounds']} round(s): max "
            f"|measured/predicted - 1| on the candidates {100 * rec['max_abs_err_before']:.1f}% -> "
            f"{100 * rec['max_abs_err_after']:.1f}% (tolerance {100 * rec['tol']:g}%)")
    if rec["converged"]:
        return head
    return head + (f"; blocked by {rec['blocked_by']}: {rec['diagnosis']}" if rec.get("blocked_by") else
                   "; not diagnosed (refined by an older tfwidth)")


def unconverged(path) -> dict | None:
    """The refinement record of the table at ``path`` when its loop did not converge, with "stop": True when it ended
    more than ``stop_at(tol)`` off (the pipeline stops there unless told to go on); None when it converged or the
    table was not refined."""
    rec = (read_json(path, "latency table").get("fit") or {}).get("refine")
    if not isinstance(rec, dict) or rec.get("converged", True):
        return None
    return dict(rec, stop=float(rec["max_abs_err_after"]) > stop_at(rec["tol"]))


def _settled(table: LatencyTable, target, tried: list[dict], slack: float) -> dict:
    """One target's answer after the loop: the last one timed, unless it ran over and an earlier one did not."""
    if not tried:
        return {"target_ms": target, "widths": None, "met": False, "attempts": 0}
    ok = [r for r in tried if target is None or r["measured_ms"] <= target * (1 + slack)]
    last = tried[-1] if tried[-1] in ok or not ok else ok[-1]
    return {"target_ms": target, "aim_ms": last["aim_ms"], "widths": last["widths"], "measured_ms": last["measured_ms"],
            "predicted_ms": float(table.predict(last["widths"])), "met": bool(last in ok), "round": last["round"],
            "attempts": len(tried)}


# ---- this machine as the device --------------------------------------------------------------------------------
def sample_protocol(path) -> dict:
    """How the samples in a samples.jsonl were timed, so refinement timings are comparable with them: invokes per
    configuration (the min of 10 invokes is slower than the min of 50), threads, cores, runtime, the reference
    configuration, and whether the reference was timed interleaved with every sample (--paired-reference: then a
    sample's ref_ms differs from the latest reference line's) or only every K samples."""
    runs, threads, cpus, runtimes, hosts, paired = [], set(), set(), set(), set(), False
    precision, spacing, kernels = [], [], set()
    reference, last_ref = None, None
    for _, d in read_records(path, warn=lambda m: None):
        if d.get("status") != "ok" or not isinstance(d.get("ms"), dict) or d.get("kind") not in (
                "sample", "reference", None):  # repeats and noise summaries say nothing of the protocol
            continue
        if d.get("kind") == "reference":
            # a re-timed window's discarded references can follow the kept window's start (the previous window's
            # end, already written): no sample was corrected with them, so they say nothing of pairing
            if not d.get("discarded"):
                reference, last_ref = [int(w) for w in d["widths"]], d["ms"]["min"]
            continue
        prec = d.get("precision") if isinstance(d.get("precision"), dict) else None
        # timed to a precision: the count is blocks x invokes per block, and the refinement times the same way
        runs.append(int(d["ms"].get("count", 20)) // (int(prec.get("blocks", 1)) if prec else 1))
        precision.append(float(prec["target"]) if prec else 0.0)
        spacing.append(float(prec.get("spacing", 0.0)) if prec else 0.0)
        kernels.add(d.get("kernels") or "default")
        threads.add(d.get("threads"))
        cpus.add(json.dumps(d.get("cpus")))
        runtimes.add(d.get("runtime"))
        hosts.add((d.get("device") or {}).get("hostname"))
        paired |= d.get("ref_ms") is not None and d.get("ref_ms") != last_ref
    if not runs:
        raise UsageError(f"{path} holds no successful sample; profile the device first")
    return {"runs": int(np.median(runs)), "threads": threads.pop() if len(threads) == 1 else 1,
            "cpus": json.loads(cpus.pop()) if len(cpus) == 1 else None, "runtimes": runtimes, "hosts": hosts,
            "paired": paired, "reference": reference, "precision": float(np.median(precision)),
            "spacing": float(np.median(spacing)),
            "kernels": kernels.pop() if len(kernels) == 1 else "default"}


class HostDevice:
    """This machine timing configurations cut from the template, with the profiler's own code and the samples'
    protocol. Each call is one round: its plan and timings go to DIR/roundN.plan.json / roundN.jsonl, so a killed
    refinement started again re-times nothing (the fit is deterministic, so it asks for the same candidates; a round
    whose candidates changed is timed afresh)."""

    def __init__(self, template, out_dir, protocol: dict, seed: int = 0, log=print):
        from device_profiler import runtime as runtimes, timing, variants
        from device_profiler.session import Session
        # the profiler's errors are UsageErrors too (tfwidth's derive from them): they reach the user as one line
        self.maker = variants.load(template)
        self.rt = runtimes.select(None, protocol.get("kernels", "default"))
        self.out_dir, self.protocol, self.log = Path(out_dir), protocol, log
        self.session = Session(self.maker, self.rt, timing.Protocol(runs=protocol["runs"],
                                                                    threads=protocol["threads"],
                                                                    precision=protocol.get("precision", 0.0),
                                                                    spacing=protocol.get("spacing", 0.0)),
                               protocol["cpus"], seed)
        self.rounds = 0

    def __call__(self, configs: list[tuple]) -> list[dict]:
        from device_profiler.session import profile
        self.rounds += 1
        plan = {"kind": "plan", "space_hash": self.maker.manifest["space_hash"], "plan_kind": "refine",
                "reference": self.protocol["reference"] or list(configs[0]),
                "configs": [list(w) for w in configs]}
        stem = self.out_dir / f"round{self.rounds}"
        plan_path, out = stem.with_suffix(".plan.json"), stem.with_suffix(".jsonl")
        if plan_path.exists() and read_json(plan_path).get("configs") != plan["configs"] and out.exists():
            out.unlink()  # timings of other candidates (the table changed since): not this round's
        write_json(plan_path, plan)
        with pinned(self.protocol["cpus"]) as pinned_to:
            self.session.cpus = pinned_to
            if self.protocol["paired"]:
                self.session.pair_with(plan["reference"])
            r = profile(self.session, plan, str(out), reference_every=REFERENCE_EVERY, progress=True,
                        paired=self.protocol["paired"])
        self.log(f"[refine] timed {r['timed']} configurations ({r['skipped']} already in {out}), "
                 f"{r['wall_s']:.1f} s")
        return self._steady_reference(out, load_samples(out, warn=lambda m: None))

    def _steady_reference(self, path: Path, samples: list[dict]) -> list[dict]:
        """Without a paired reference, each sample's ref_ms is the latest reference timing, and one of those can be
        an outlier (the other core busy with training), which scales the timings after it and sends the loop chasing
        an error that is not there (measured: docs/benchmarks.md, "Refining the table on the solver's answers"). A
        round lasts seconds, so its median reference is the machine's level for all of it."""
        if self.protocol["paired"]:
            return samples
        refs = []
        for _, d in read_records(path, warn=lambda m: None):
            if d.get("kind") == "reference" and d.get("status") == "ok" and not d.get("discarded"):
                refs.append(float(d["ms"]["min"]))
        if not refs:
            return samples
        level = float(np.median(refs))
        return [dict(d, ref_ms=level, ref_ms_latest=d.get("ref_ms")) for d in samples]


def answer_solver(space, entries, fixed: dict | None = None):
    """``candidates(table, aims=None)`` for ``refine`` with targets: the answer of every entry (costs, target_ms,
    method), solved with that table at its aim (its target by default; tfwidth.solve.solve_at), None where nothing is
    that fast; an entry whose index is in ``fixed`` is answered with those widths, not solved (a baseline that is
    timed with the others, or an answer kept from an earlier loop)."""
    from tfwidth.solve import solve_at
    fixed = fixed or {}

    def candidates(table, aims=None):
        out = []
        for i, ((costs, target, method), aim) in enumerate(zip(entries, aims if aims is not None
                                                               else [e[1] for e in entries])):
            if i in fixed:
                out.append(fixed[i])
                continue
            sol = solve_at(space, costs, table, float(aim), method)
            out.append(None if sol is None else space.to_widths(sol.indices))
        return out
    return candidates


def solve_answers(space, costs_list, targets, methods):
    """(entries, candidates): one entry (statistics index, target, method) per combination, and
    ``candidates(table, aims=None)``, every entry's answer solved at its aim (the target by default); None where
    nothing is that fast (answer_solver)."""
    entries = [(ci, float(t), m) for ci in range(len(costs_list)) for t in targets for m in methods]
    return entries, answer_solver(space, [(costs_list[ci], t, m) for ci, t, m in entries])


def solve_candidates(space, costs_list, targets, methods):
    """candidates(table): every method's answer for every target and every statistics (None where infeasible)."""
    return solve_answers(space, costs_list, targets, methods)[1]


def add_arguments(r) -> None:
    """Add the refine stage's options to the argparse parser ``r`` (shared by this CLI and its callers)."""
    r.add_argument("--table", required=True, help="table.json fitted from --samples")
    r.add_argument("--samples", required=True, help="the samples.jsonl the table was fitted on")
    r.add_argument("--template", required=True, help="template.tflite (template.json beside it) the samples were "
                                                      "cut from")
    r.add_argument("--stats", required=True, nargs="+", help="stats.json of one or more supernets: the candidates "
                                                             "are what the solver picks with each")
    r.add_argument("--target-ms", required=True, type=number(0, 1e6, lo_open=True), nargs="+", help="the latency targets to solve for")
    r.add_argument("--methods", default="uniform,greedy,ows,exact", help="solver methods whose answers are "
                                                                         "candidates (default all four)")
    r.add_argument("--stats-view", default="auto", choices=("auto", "probe", "running", "window"))
    r.add_argument("--validation", help="validation samples: reported for the refined table (not used to fit)")
    r.add_argument("-o", "--output", required=True, type=output_file, help="where to write the refined table")
    r.add_argument("--timings", type=output_dir, help="directory for the refinement timings (default: OUTPUT without suffix + "
                                     ".refine/); kept, so a rerun re-times nothing")
    r.add_argument("--tol", type=number(0, 1, lo_open=True, hi_open=True), default=TOL, help=f"accept when every candidate is within this relative "
                                                          f"error (default {TOL})")
    r.add_argument("--rounds", type=count(1, 1000), default=ROUNDS, help=f"measurement rounds at most (default {ROUNDS})")
    r.add_argument("--weight", type=number(0, 1e6, lo_open=True), default=WEIGHT, help=f"fit weight of a refinement timing against a plan "
                                                                f"sample (default {WEIGHT:g})")
    r.add_argument("--repeats", type=count(1, 1000), default=3, help="timings per candidate and round, each in a fresh "
                                                           "interpreter (default 3; their median is compared)")
    r.add_argument("--explore", type=count(0, 10**4), default=EXPLORE, help=f"random neighbours of each candidate timed and "
                                                                 f"fitted too (default {EXPLORE})")
    r.add_argument("--slack", type=number(0, 1, hi_open=True), default=0.0, help="accept an answer measured up to target x (1 + SLACK) "
                                                            "(default 0: every answer is timed within its target)")
    r.add_argument("--cpus", type=cpu_list, help="override the samples' cores, e.g. 0 ('none': do not pin)")


# The cores refine_table pins its timings to by default: the samples' own (sample_protocol)
AS_SAMPLED = "as sampled"


@dataclasses.dataclass
class Refined:
    """What ``refine_table`` did: the refined table (saved at ``output``), the loop's record (its
    ``fit["refine"]``: rounds, convergence, per target and method the answer timed, see ``refine``), where the
    refinement timings are kept, and the refined table's validation figures (None: no validation samples)."""
    table: LatencyTable
    record: dict
    output: Path
    timings: Path
    validation: dict | None

    @property
    def late(self) -> list[dict]:
        """The answers still measured over their target."""
        return [r for r in self.record["answers"] if r["widths"] is not None and not r["met"]]


def refine_table(table, samples, template, stats: list, target_ms: list, output, *,
                 methods=("uniform", "greedy", "ows", "exact"), stats_view: str = "auto", validation=None,
                 timings=None, tol: float = TOL, rounds: int = ROUNDS, weight: float = WEIGHT, repeats: int = 3,
                 explore: int = EXPLORE, slack: float = 0.0, cpus=AS_SAMPLED, log=print) -> Refined:
    """The refine stage: refine the table at ``table`` (fitted from the samples.jsonl at ``samples``) on this machine
    (``refine`` with targets): every method of ``methods`` solves every target of ``target_ms`` with the statistics
    at each path of ``stats`` (``stats_view``), the answers are timed here as variants of ``template`` (the
    samples' template) with the samples' protocol, pinned to their cores unless ``cpus`` says otherwise (core
    numbers, or None: not pinned), and refitted. Timings are kept in ``timings`` (default: ``output`` without its
    suffix + .refine/), so a rerun re-times nothing; ``validation`` samples are reported for the refined table.
    Writes the refined table to ``output``; ``log`` gets the progress lines."""
    import socket
    from tfwidth.stats import WidthStats
    if rounds < 1 or repeats < 1 or not 0 < tol < 1 or weight <= 0 or not 0 <= slack < 1:
        raise UsageError("--rounds and --repeats must be >= 1, --tol in (0, 1), --weight > 0, --slack in [0, 1)")
    if any(not t > 0 for t in target_ms):
        raise UsageError("--target-ms must be positive numbers of ms")
    table = LatencyTable.load(table)
    space = table.space
    rows = load_samples(samples)
    if rows:
        check_space(rows[0], space, f"samples {samples}")
    manifest_path = Path(template).with_suffix(".json")
    if manifest_path.exists():
        man = read_json(manifest_path, "template manifest")
        check_space(man, space, f"template {template}")
        if table.format is not None and man.get("format") != table.format:
            raise UsageError(f"template {template} is {man.get('format')} but the table was fitted on {table.format} "
                             f"timings; pass the template the samples were cut from")
    proto = sample_protocol(samples)
    here = socket.gethostname()
    if proto["hosts"] - {None, here}:
        raise UsageError(f"the samples were timed on {', '.join(sorted(h for h in proto['hosts'] if h))}, not on "
                         f"this machine ({here}): refinement times candidates here, so run it on that device")
    if not (isinstance(cpus, str) and cpus == AS_SAMPLED):
        proto["cpus"] = None if cpus is None else list(cpus)
    costs = [WidthStats.load(s, space).costs(stats_view) for s in stats]
    val = load_samples(validation) if validation else None
    timings = Path(timings) if timings else Path(output).with_suffix(".refine")
    device = HostDevice(template, timings, proto)
    if proto["runtimes"] - {None, device.rt.name}:
        raise UsageError(f"the samples were timed with {', '.join(sorted(map(str, proto['runtimes'])))} but this "
                         f"machine would time with {device.rt.name}; refine where the samples were timed")
    how = (f"blocks of {proto['runs']} invokes until the minimum repeats within {100 * proto['precision']:g}%"
           if proto["precision"] else f"min of {proto['runs']} invokes")
    log(f"[refine] protocol of {samples}: {how}, {proto['kernels']} kernels, {proto['threads']} thread(s), cpus "
        f"{proto['cpus']}, reference {'paired with every sample' if proto['paired'] else 'every 25 samples'}")
    entries, answers = solve_answers(space, costs, target_ms, methods)
    refined, rec = refine(table, rows, answers, device, tol=tol, rounds=rounds, weight=weight,
                          validation=val, explore=explore, repeats=repeats,
                          targets=[t for _, t, _ in entries], slack=slack, log=log)
    hashes = [costs_hash(c) for c in costs]
    for r, (ci, _, m) in zip(rec["answers"], entries):
        r.update(method=m, stats=str(stats[ci]), costs=hashes[ci])
    refined.fit["refine"].update(samples=str(samples), timings=str(timings),
                                 targets_ms=list(target_ms), methods=list(methods), stats=[str(s) for s in stats])
    refined.save(output)
    return Refined(refined, rec, Path(output), timings, (refined.fit.get("validation") or {}) if val else None)


def main(argv=None) -> int:
    from tfwidth.solve import METHODS
    p = ArgumentParser(prog="python -m tfwidth.refine", description=(
        "Solve every target with every method and statistics file, time those configurations here (cut from the "
        "template, the samples' protocol), add the timings to the fit with a higher weight and refit; repeat until "
        "every answer is predicted within --tol."))
    add_arguments(p)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise UsageError(f"--methods {a.methods!r}: choose from {', '.join(METHODS)}")
    r = refine_table(a.table, a.samples, a.template, a.stats, a.target_ms, a.output, methods=methods,
                     stats_view=a.stats_view, validation=a.validation, timings=a.timings, tol=a.tol,
                     rounds=a.rounds, weight=a.weight, repeats=a.repeats, explore=a.explore, slack=a.slack,
                     cpus=AS_SAMPLED if a.cpus is None else cores(a.cpus))
    print(outcome(r.record))
    late = r.late
    if late:
        print(f"[refine] {len(late)} answer(s) still measured over their target, e.g. {late[0]['method']} at "
              f"{late[0]['target_ms']:g} ms: {late[0]['measured_ms']:.4f} ms; raise --rounds or lower the target")
    if r.validation is not None:
        print(format_metrics("validation (refined table)", r.validation))
    print(console.wrote([a.output], time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    import sys
    from tfwidth.errors import run_cli
    sys.exit(run_cli(main))
