"""Benchmark of the latency model where the solver looks (issue 17), on this machine (LiteRT, 1 thread pinned).

Per resolution (32, 64, 128, 224 px), timed in one run with the profiler's defaults (python -m device_profiler, as a
user runs it: blocks of 20 invokes until the minimum is reached twice within 1%, repeats and references):
  - train: a stratified plan (the pipeline's kind) of up to 1,000 configurations after the uniform ladder;
  - validation: 200 random configurations and the ladder: every choice of the fit (model, weights) is made here;
  - test: 200 other random configurations and the ladder, timed twice (A/A): every figure below is computed here.
Then, per training size, the fit chosen on the validation file predicts the test file: RMSE against the A/A RMSE of
the same networks, share within +-5% of the mean of the two timings, the ladder's worst entry, for random
configurations and the ladder separately. Few-shot (64 px): the fp32 table as the prior of int8 and of LiteRT's
built-in kernels, and the 64 px table as the prior of 128 px, at 25..400 new samples, against the same samples
without the prior. Variants/s against one converter run, timed in this run.

    python tools/bench_latency.py                  # 25 min quiet, ~80 busy: everything (resumable: run it again)
    python tools/bench_latency.py --quick          # ~5 min: 32 and 64 px, 250 train / 60 val / 60 test
    python tools/bench_latency.py --fit-only       # re-fit and re-score the timings in --workdir (any machine load)
    python tools/bench_latency.py --preset mobilenet_v2 --variants-only    # ~2 min: variants/s at 224 px only

--preset picks the architecture and its space (default mobilenet_v1; at each of --resolutions). --variants-only
converts the fp32 and int8 templates (kept like the others) and measures variants/s from each against one fp32
converter run timed now: no plan is timed, nothing is fitted (default resolution 224).

Work files (templates, plans, samples) and the report (report.json, report.md) go to --workdir. Timings are reused
only when their key (tools/_cache.py: template digest, plan, protocol, profiler code) matches; the converter is
timed in every run that times anything.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _cache  # noqa: E402
import tfwidth  # noqa: E402,F401
from tfwidth.artifacts import atomic_write_bytes, read_json, write_json  # noqa: E402
from tfwidth.errors import UsageError, run_cli  # noqa: E402
from tfwidth.space import preset  # noqa: E402

TEMPLATE_CODE = ("tfwidth/profile.py", "tfwidth/convert.py", "tfwidth/arch")
FEWSHOT_SIZES = (25, 50, 100, 200, 400)


def template(space, fmt: str, path: Path) -> float:
    """Convert the max-width template (fmt) to ``path`` unless the one there has the same key; returns the seconds
    of the converter run made now (None when the cached template was kept and no conversion was asked for)."""
    from tfwidth.profile import write_template
    parts = {"args": {"space_hash": space.space_hash, "format": fmt}, "code": _cache.code_digest(*TEMPLATE_CODE)}
    record = path.with_suffix(".key.json")
    if path.exists() and path.with_suffix(".json").exists() and _cache.check(record, parts, path.name, leftover=True):
        return None
    t0 = time.perf_counter()
    write_template(space, path, fmt)
    seconds = time.perf_counter() - t0
    _cache.store(record, parts)
    return seconds


def converter_seconds(space) -> float:
    """One converter run of the max-width model, timed now (the baseline variants/s is compared with)."""
    from tfwidth.profile import convert, template_model
    model = template_model(space)
    t0 = time.perf_counter()
    convert(model, "fp32")
    return time.perf_counter() - t0


def variants_rates(path: Path, seconds: float = 5.0) -> tuple[float, float]:
    """Random variants cut from the template at ``path`` for ``seconds`` of wall time: (per wall second, per CPU
    second of this process). Cutting is single-threaded, so the second is what a machine with a free core gives when
    other work shares this one (the first then drops with the load)."""
    from device_profiler.variants import load
    maker = load(path)
    rng = np.random.default_rng(0)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        maker.make([c[rng.integers(len(c))] for c in maker.choices])
        n += 1
    return n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)


def variants_per_second(path: Path, seconds: float = 5.0) -> float:
    """Random variants cut from the template at ``path`` per wall second (``variants_rates``)."""
    return variants_rates(path, seconds)[0]


def timed(tpl: Path, plan: dict, out: Path, cpu: int, kernels: str = "default", extra: tuple = ()) -> dict:
    """The plan timed into ``out`` by the profiler's own CLI with its defaults (what a user gets) and the ``extra``
    flags, resumed when the key of what is already there matches; returns the wall seconds of this call."""
    from device_profiler.__main__ import main as profiler
    plan_path = out.with_name(out.stem + ".plan.json")
    parts = {"args": {"cpu": cpu, "kernels": kernels, **({"extra": list(extra)} if extra else {})},
             "inputs": {"template": _cache.file_digest(tpl), "plan": _cache.key_of(plan)},
             "code": _cache.code_digest("device_profiler")}
    record = out.with_suffix(".key.json")
    if not _cache.check(record, parts, out.name, leftover=out.exists()):
        out.unlink(missing_ok=True)
        write_json(plan_path, plan, indent=None)
        _cache.store(record, parts)
    t0 = time.perf_counter()
    profiler(["--template", str(tpl), "--plan", str(plan_path), "--out", str(out), "--cpus", str(cpu),
              "--threads", "1", "--kernels", kernels, "--no-progress", *extra])
    return {"wall_s": time.perf_counter() - t0}


def variants_only(a, workdir: Path, fig: dict) -> None:
    """Variants/s cut from each resolution's fp32 and int8 templates, each beside one fp32 converter run of the same
    space timed now (the ratio is a same-run one); printed with the 224 px bar and written to variants.json. The
    templates are time_all's (same directories and keys), so either run reuses the other's."""
    fig["variants"] = {}
    for r in a.resolutions:
        space = preset(a.preset, resolution=r)
        row = {"space_hash": space.space_hash}  # which space these rates are of (variants.json holds every resolution)
        for fmt, name in (("fp32", f"r{r}"), ("int8", f"r{r}_int8_default")):
            tpl = workdir / name / "template.tflite"
            tpl.parent.mkdir(parents=True, exist_ok=True)
            row[f"{fmt}_template_s"] = template(space, fmt, tpl)
            row[f"{fmt}_per_s"], row[f"{fmt}_per_cpu_s"] = variants_rates(tpl, a.variant_seconds)
        row["convert_s"] = converter_seconds(space)
        fig["variants"][str(r)] = row
        for fmt in ("fp32", "int8"):
            v, vc = row[f"{fmt}_per_s"], row[f"{fmt}_per_cpu_s"]
            bar = (f"; bar >= 50/s at 224 px: {'PASS' if v >= 50 else 'FAIL'}" if r == 224 else "")
            print(f"[{a.preset} {r} px {fmt}] variants: {v:.0f}/s ({vc:.0f} per CPU second), {v * row['convert_s']:.0f}x "
                  f"one fp32 converter run timed now ({row['convert_s']:.1f} s){bar}", flush=True)
    fig["load_avg_end"] = os.getloadavg()
    print(load_sentence(fig["load_avg_start"][0], fig["load_avg_end"][0], os.cpu_count()))
    write_json(workdir / "variants.json", fig)


def device_sets(a) -> list[dict]:
    """What is timed: one dict per device setting (name, resolution, format, kernels, plan sizes), in the order
    they are timed (the cheap resolutions first, so a short session still has whole sets)."""
    q = a.quick
    n_train, n_val, n_test = (250, 60, 60) if q else (a.train, a.val, a.test)
    sets, big = [], []
    for r in a.resolutions:
        half = r >= 224 and not q  # reported, no bar: half the sizes (each network takes ~3x the 128 px one)
        (big if half else sets).append({"name": f"r{r}", "resolution": r, "format": "fp32", "kernels": "default",
                                        "space_hash": preset(a.preset, resolution=r).space_hash,
                                        "train": n_train // 2 if half else n_train, "val": n_val // 2 if half else n_val,
                                        "test": n_test // 2 if half else n_test})
    if a.fewshot and not q and 64 in a.resolutions:
        for fmt, kernels in (("int8", "default"), ("fp32", "builtin")):
            sets.append({"name": f"r64_{fmt}_{kernels}", "resolution": 64, "format": fmt, "kernels": kernels,
                         "space_hash": preset(a.preset, resolution=64).space_hash,
                         "train": max(FEWSHOT_SIZES), "val": 0, "test": n_test})
    return sets + big


def time_all(a, workdir: Path, fig: dict) -> None:
    from tfwidth.profile import make_plan
    fig["timing"] = {}
    for s in device_sets(a):
        d = workdir / s["name"]
        d.mkdir(parents=True, exist_ok=True)
        space = preset(a.preset, resolution=s["resolution"])
        tpl = d / "template.tflite"
        conv = template(space, s["format"], tpl)
        row = {"convert_s": conv}
        if s["format"] == "fp32" and s["kernels"] == "default":
            row["variants_per_s"] = variants_per_second(tpl)
        plans = [("train", make_plan(space, s["train"], "stratified", seed=0))]
        if s["val"]:
            plans.append(("val", make_plan(space, s["val"], "random", seed=1)))
        test = make_plan(space, s["test"], "random", seed=2)
        plans += [("test_a", test), ("test_b", test)]
        for name, plan in plans:
            print(f"[{s['name']}] timing {len(plan['configs'])} {name} configurations ({s['format']}, "
                  f"{s['kernels']} kernels)", flush=True)
            row[f"{name}_wall_s"] = timed(tpl, plan, d / f"{name}.jsonl", a.cpu, s["kernels"])["wall_s"]
        fig["timing"][s["name"]] = row
    # the converter's baseline, timed in this run whatever the cache held
    r = 224 if 224 in a.resolutions else max(a.resolutions)
    fig["convert_s"] = {str(r): converter_seconds(preset(a.preset, resolution=r))}
    for name, row in fig["timing"].items():
        if row.get("variants_per_s"):
            print(f"[{name}] variants: {row['variants_per_s']:.0f}/s, {row['variants_per_s'] * fig['convert_s'][str(r)]:.0f}x "
                  f"one converter run timed now ({fig['convert_s'][str(r)]:.1f} s at {r} px)", flush=True)
    # kept beside the timings, so that a --fit-only report states them too
    write_json(workdir / "timing.json", {"timing": fig["timing"], "convert_s": fig["convert_s"]})


def load_sentence(start: float, end: float, cores: int, quiet: float = 0.5) -> str:
    """The machine's load as the report states it: 'shared' only when the load averages say so (one core is ours)."""
    busy = max(start, end) > 1.0 + quiet
    return (f"load average at start {start:.1f}, at end {end:.1f} ({cores} cores): "
            + ("other work shared this CPU (compare ratios from this run only)" if busy
               else "no other work to speak of beside this benchmark"))


def _load(path: Path) -> list[dict]:
    from tfwidth.latency import load_samples
    return load_samples(path, warn=lambda m: None) if path.exists() else []


def test_truth(space, test_a: list[dict], test_b: list[dict], level: float | None, drift: bool = True) -> dict:
    """The test networks timed twice, at the training samples' reference level: per widths the first timing, the
    mean of the two, and per group (random, ladder) the A/A RMSE and median difference of the same networks.
    ``drift=False``: the raw timings, no reference correction."""
    from tfwidth.latency import groups_of, same_network_pairs
    pairs = same_network_pairs(test_a, test_b, "min", drift, level)
    keys = list(pairs)
    masks = groups_of(space, [{"widths": list(k)} for k in keys])
    out = {"keys": keys, "first": np.array([pairs[k][0] for k in keys]),
           "mean": np.array([0.5 * (pairs[k][0] + pairs[k][1]) for k in keys]), "masks": masks, "aa": {}}
    for g in ("random", "ladder"):
        m = masks[g]
        if m.any():
            x, y = np.array([pairs[k][0] for k in keys])[m], np.array([pairs[k][1] for k in keys])[m]
            out["aa"][g] = {"n": int(m.sum()), "rmse_ms": float(np.sqrt(np.mean((x - y) ** 2))),
                            "median_diff": float(np.median(np.abs(x - y) / (0.5 * (x + y)))),
                            # what no model can beat: the share of the networks whose two timings agree within 5%
                            "within_5pct": float(np.mean(np.abs(x - y) / (0.5 * (x + y)) <= 0.05))}
    return out


def score(table, truth: dict) -> dict:
    """Per group: RMSE against one timing (like the A/A RMSE it is compared with), x the A/A RMSE of the same
    networks, share within +-5% of the mean of two timings, worst error (of the ladder, the one the bar names)."""
    pred = table.predict_indices(np.array([table.space.to_indices(k) for k in truth["keys"]]))
    out = {}
    for g, aa in truth["aa"].items():
        m = truth["masks"][g]
        rmse = float(np.sqrt(np.mean((pred[m] - truth["first"][m]) ** 2)))
        rel = pred[m] / truth["mean"][m] - 1.0
        k = int(np.argmax(np.abs(rel)))
        out[g] = {"n": int(m.sum()), "rmse_ms": rmse, "x_aa": rmse / aa["rmse_ms"], "aa_rmse_ms": aa["rmse_ms"],
                  "aa_median_diff": aa["median_diff"], "within_5pct": float(np.mean(np.abs(rel) <= 0.05)),
                  "within_10pct": float(np.mean(np.abs(rel) <= 0.10)), "worst_err": float(rel[k]),
                  "errors": [round(float(e), 4) for e in rel] if g == "ladder" else None}
    return out


def _row(label: str, sc: dict) -> str:
    cells = []
    for g in ("random", "ladder"):
        if g in sc:
            r = sc[g]
            cells.append(f"{r['rmse_ms']:.4f} ({r['x_aa']:.2f}x) {100 * r['within_5pct']:5.1f}% "
                         f"{100 * r['worst_err']:+6.1f}%")
        else:
            cells.append("-")
    return f"  {label:<48} {cells[0]:<32} {cells[1]}"


def report(a, workdir: Path, fig: dict) -> None:
    """Fit and score everything timed in ``workdir``; print the tables and bars, write report.json and report.md."""
    from tfwidth.latency import LatencyTable, drift_line, file_drift, fit_table, reference_level
    sets = {s["name"]: s for s in fig["sets"]}
    fig["results"], tables = {}, {}
    lines = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    sizes = [n for n in (250, 500, 1000) if n <= a.train] if not a.quick else [250]
    for name, s in sets.items():
        if s["val"] == 0:
            continue
        d = workdir / name
        space = preset(a.preset, resolution=s["resolution"])
        train, val = _load(d / "train.jsonl"), _load(d / "val.jsonl")
        ta, tb = _load(d / "test_a.jsonl"), _load(d / "test_b.jsonl")
        if not (train and val and ta and tb):
            say(f"[{name}] not timed (yet): skipped")
            continue
        # drift-corrected or raw, as the fit decides it (the training file's own repeats): every fit and the test
        # truth read the timings the same way
        choice = file_drift([d / "train.jsonl"])
        dr = choice["drift"]
        truth = test_truth(space, ta, tb, reference_level(train) if dr else None, drift=dr)
        res = {"aa": truth["aa"], "fits": [], "drift_choice": choice}
        aa = truth["aa"]
        say(f"[{name}] {drift_line(choice)}")
        say(f"[{name}] {s['resolution']} px: test A/A (same networks timed twice): random {aa['random']['n']} "
            f"RMSE {aa['random']['rmse_ms']:.4f} ms, median difference {100 * aa['random']['median_diff']:.1f}%, "
            f"{100 * aa['random']['within_5pct']:.0f}% within +-5% of each other; ladder {aa['ladder']['n']} RMSE "
            f"{aa['ladder']['rmse_ms']:.4f} ms, median {100 * aa['ladder']['median_diff']:.1f}%, "
            f"{100 * aa['ladder']['within_5pct']:.0f}% within +-5%")
        truth_other = test_truth(space, ta, tb, None if dr else reference_level(train), drift=not dr)
        other = res["aa_other"] = truth_other["aa"]
        say(f"  {'without' if dr else 'with'} drift correction the same pairs differ by a median "
            f"{100 * other['random']['median_diff']:.2f}% (random) and {100 * other['ladder']['median_diff']:.2f}% "
            f"(ladder): what the references add or remove")
        say(f"  {'fit (choices on the validation file)':<48} {'random: RMSE (xA/A) <=5% worst':<32} ladder: same")
        ladder = {tuple(w) for w in space.ladder()}
        plan_order = sorted(train, key=lambda r: r["index"])
        # sizes the plan holds (the 224 px plan is half as long), and the whole plan
        for n in sorted({min(n, s["train"]) for n in sizes}):
            sub = [r for r in plan_order if r["index"] < n + len(ladder)]
            variants = [("this model", dict()), ("no shared table for identical blocks", dict(shared=False)),
                        ("absolute residuals (the old fit)", dict(scale="absolute", shared=False)),
                        ("without the ladder in training", dict(drop_ladder=True))]
            if n == max(min(n, s["train"]) for n in sizes):
                # the other reading of the timings, scored against the test timings read the same way
                variants.append(("drift-corrected" if not dr else "raw timings (no drift correction)",
                                 dict(drift=not dr)))
            for label, opt in variants:
                tr = [r for r in sub if tuple(r["widths"]) not in ladder] if opt.pop("drop_ladder", False) else sub
                t0 = time.perf_counter()
                table, rep = fit_table(tr, space, validation=val, **dict(dict(drift=dr), **opt))
                sc = score(table, truth if opt.get("drift", dr) == dr else truth_other)
                row = {"n": len(tr), "variant": label, "scale": rep["scale"], "shared": rep["shared"],
                       "reg": rep["reg"], "prior": rep["prior"], "fit_s": time.perf_counter() - t0, **sc}
                res["fits"].append(row)
                say(_row(f"{label}, {len(tr)} samples", sc))
                if label == "this model" and n == sizes[-1]:
                    tables[name] = table
                    table.save(d / "table.json")
        # what limits the model: the same fit given the test networks' first timings too. If it then predicts them
        # near the A/A floor, the additive table can express the device and the error above is generalisation from
        # the plan's samples (too few per entry), not a wrong model form or noise.
        table, rep = fit_table(plan_order + ta, space, validation=val, drift=dr)
        sc = score(table, truth)
        res["fits"].append({"n": len(plan_order) + len(ta), "variant": "in-sample", "shared": rep["shared"],
                            "prior": rep["prior"], **sc})
        say(_row(f"in-sample: + the test's first timings, {len(plan_order) + len(ta)}", sc))
        fig["results"][name] = res

    # few-shot: another device's full table as the prior of a new device's first samples
    pairs = [("fp32 -> int8 (64 px)", "r64", "r64_int8_default"),
             ("XNNPACK -> built-in kernels (64 px)", "r64", "r64_fp32_builtin"),
             ("64 px -> 128 px", "r64", "r128"), ("128 px -> 64 px", "r128", "r64")]
    fig["fewshot"] = {}
    for label, src, dst in pairs:
        if src not in tables or dst not in sets or not (workdir / dst / "test_a.jsonl").exists():
            continue
        space = preset(a.preset, resolution=sets[dst]["resolution"])
        train = sorted(_load(workdir / dst / "train.jsonl"), key=lambda r: r["index"])
        ta, tb = _load(workdir / dst / "test_a.jsonl"), _load(workdir / dst / "test_b.jsonl")
        if len(train) < max(FEWSHOT_SIZES) or not ta or not tb:
            continue
        dr = file_drift([workdir / dst / "train.jsonl"])["drift"]
        truth = test_truth(space, ta, tb, reference_level(train) if dr else None, drift=dr)
        prior = tables[src]
        say(f"[few-shot] {label}: prior = the {src} table ({prior.fit['n_samples']} samples); test A/A median "
            f"{100 * truth['aa']['random']['median_diff']:.1f}%, {100 * truth['aa']['random']['within_5pct']:.0f}% "
            f"within +-5% of each other")
        rows = []
        for n in FEWSHOT_SIZES:
            sub = train[:n]
            with_p, _ = fit_table(sub, space, prior_table=prior, drift=dr)
            without, _ = fit_table(sub, space, drift=dr)
            sw, so = score(with_p, truth), score(without, truth)
            rows.append({"n": n, "with_prior": sw, "without": so})
            say(_row(f"{n} samples, with the prior", sw))
            say(_row(f"{n} samples, without", so))
        fig["fewshot"][label] = rows

    fig["load_avg_end"] = os.getloadavg()
    bars = []
    for name in ("r32", "r64", "r128"):
        res = fig["results"].get(name)
        if not res:
            continue
        mine = [f for f in res["fits"] if f["variant"] == "this model"]
        # the bars' fit is the one the bar names (the largest plan, <= 1,000 biased samples after the ladder), not
        # the best of the sizes on the test file: choosing among them there would be a decision taken on test data
        best = max(mine, key=lambda f: f["n"])
        quiet = max(res["aa"]["random"]["median_diff"], res["aa"]["ladder"]["median_diff"]) <= 0.015
        tag = f"{name}, n={best['n']}"
        bars += [(f"{name}: RMSE <= 1.3x A/A, random", best["random"]["x_aa"] <= 1.3,
                  f"{best['random']['x_aa']:.2f}x ({tag})"),
                 (f"{name}: RMSE <= 1.3x A/A, ladder", best["ladder"]["x_aa"] <= 1.3,
                  f"{best['ladder']['x_aa']:.2f}x ({tag})"),
                 (f"{name}: >= 95% of random within +-5% (quiet machine)", best["random"]["within_5pct"] >= 0.95
                  if quiet else None, f"{100 * best['random']['within_5pct']:.1f}%" + ("" if quiet else
                                                                                       " (A/A above 1.5%: not quiet)")),
                 (f"{name}: >= 90% of the ladder within +-5% (quiet machine)", best["ladder"]["within_5pct"] >= 0.90
                  if quiet else None, f"{100 * best['ladder']['within_5pct']:.1f}%" + ("" if quiet else
                                                                                       " (not quiet)")),
                 (f"{name}: no ladder entry off by more than 10%", abs(best["ladder"]["worst_err"]) <= 0.10,
                  f"worst {100 * best['ladder']['worst_err']:+.1f}%")]
    ok_pairs = [label for label, rows in fig["fewshot"].items()
                if any(r["n"] <= 100 and r["with_prior"]["random"]["within_5pct"] >= 0.90 for r in rows)]
    if fig["fewshot"]:
        bars.append(("few-shot: >= 90% of random within +-5% with <= 100 samples, on >= 2 pairs",
                     len(ok_pairs) >= 2, f"{len(ok_pairs)} pair(s): {', '.join(ok_pairs) or 'none'}"))
    v224 = (fig.get("timing") or {}).get("r224", {}).get("variants_per_s")
    if v224:
        conv = next(iter(fig["convert_s"].values()))
        bars.append(("variants cut from the template at 224 px >= 50/s", v224 >= 50,
                     f"{v224:.0f}/s ({v224 * conv:.0f}x one converter run of {conv:.1f} s, timed in the same run)"))
    fig["bars"] = {n: {"pass": ok, "value": v} for n, ok, v in bars}
    say("bars:")
    for n, ok, v in bars:
        say(f"  {'n/a ' if ok is None else 'PASS' if ok else 'FAIL'}  {n}: {v}")
    say(load_sentence(fig["load_avg_start"][0], fig["load_avg_end"][0], os.cpu_count()))
    write_json(workdir / "report.json", fig)
    atomic_write_bytes(workdir / "report.md", ("\n".join(lines) + "\n").encode())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="mobilenet_v1", help="the space, at each resolution (default mobilenet_v1)")
    p.add_argument("--variants-only", action="store_true",
                   help="templates and variants/s only (fp32 and int8, default 224 px): no timing, no fit")
    p.add_argument("--variant-seconds", type=float, default=5.0,
                   help="with --variants-only: seconds of cutting per template (default 5)")
    p.add_argument("--quick", action="store_true", help="32 and 64 px, 250 train / 60 val / 60 test, no few-shot")
    p.add_argument("--resolutions", default=None, help="comma-separated (default 32,64,128,224)")
    p.add_argument("--train", type=int, default=1000, help="stratified training configurations (default 1000)")
    p.add_argument("--val", type=int, default=200, help="random validation configurations (default 200)")
    p.add_argument("--test", type=int, default=200, help="random test configurations, timed twice (default 200)")
    p.add_argument("--no-fewshot", dest="fewshot", action="store_false", help="skip the few-shot devices")
    p.add_argument("--cpu", type=int, default=0, help="core to pin to (default 0)")
    p.add_argument("--workdir", default=None, help="work files and reports, resumable (default ./bench_latency"
                                                   "[_quick])")
    p.add_argument("--time-only", action="store_true", help="time everything, fit nothing")
    p.add_argument("--fit-only", action="store_true", help="re-fit and re-score the timings in --workdir")
    a = p.parse_args(argv)
    default = "224" if a.variants_only else "32,64" if a.quick else "32,64,128,224"
    a.resolutions = [int(r) for r in (a.resolutions or default).split(",")]
    # another preset's templates and timings never share mobilenet_v1's default work directory
    suffix = "" if a.preset == "mobilenet_v1" else f"_{a.preset}"
    workdir = Path(a.workdir or ("bench_latency_quick" if a.quick else "bench_latency") + suffix)
    workdir.mkdir(parents=True, exist_ok=True)
    fig: dict = {"preset": a.preset, "resolutions": a.resolutions, "cpu": a.cpu, "load_avg_start": os.getloadavg(),
                 "sets": device_sets(a)}
    print(f"bench_latency: {a.preset} at {', '.join(map(str, a.resolutions))} px, LiteRT, 1 thread pinned to cpu "
          f"{a.cpu}; workdir {_cache.relative(workdir)}; load average {fig['load_avg_start'][0]:.1f} on "
          f"{os.cpu_count()} cores", flush=True)
    if a.variants_only:
        variants_only(a, workdir, fig)
        return 0
    if not a.fit_only:
        time_all(a, workdir, fig)
    elif (workdir / "timing.json").exists():
        fig.update(read_json(workdir / "timing.json", "timing record"))
    if a.time_only:
        return 0
    report(a, workdir, fig)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
