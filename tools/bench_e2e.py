"""End-to-end benchmark on real CIFAR-10: does the optimal width search beat uniform and greedy widths at equal latency?

    python tools/bench_e2e.py --data cifar10.npz --work bench_e2e     [resumable: run it again]
    python tools/npz_to_folder.py --data cifar10.npz --out cifar10_64 --resolution 64 --train 21000
    python tools/bench_e2e.py --data folder:cifar10_64 --preset mobilenet_v1 --resolution 64 --work bench_e2e_folder
                                              [the same through the folder: loader and the ImageNet-stride preset]

Stages (each cached in WORK; a killed run continues where it stopped):
  1. latency: template, stratified plan (with the uniform ladder) + random validation plan, profiled on this CPU
     (LiteRT fp32, 1 thread, pinned, the profiler's defaults), fitted table;
  2. targets: the *measured* latencies of uniform 0.3x, 0.5x, 0.75x and 1.0x networks (variants of the template);
  3. supernets: one trained with OWS (uniform) sampling, one with AOWS for the 0.75x target, same budget and seed;
  4. solve each target with uniform, greedy, ows, exact (OWS supernet's probe costs) and aows (AOWS supernet's);
     the probe runs on the validation split (the --val-images training images after --train-limit, never trained on);
  5. evaluate every answer and a curve of uniform networks from 0.2x to 1.2x (a) with inherited supernet weights
     after BN recalibration and (b) after the same short fine-tuning budget, on the test images once (per-image
     results kept), the loss increase on the validation split, the answers converted to .tflite fp32; then every
     network of the seed timed again in one interleaved pass;
  6. write WORK/report.md: each answer against the uniform curve (and greedy's, OWS's) at its own measured latency
     with a paired bootstrap interval over test images (tools/_claim.py), per seed and target, what explains each
     answer (latency error, predicted vs measured validation gain, fine-tuning gap), the per-target tables, and an
     accuracy/latency plot; --update-docs also writes them into docs/benchmarks.md (this section only) and
     docs/benchmarks_e2e.png; --plot-with OTHER_WORK draws another run (e.g. the other architecture on the same
     data) in the same plot.
The budget is sized for a few hours on 2 cores: a training subset, few epochs (see --help); the report says so.
Every cached stage (supernets, latency artefacts, targets, the refined table and answers, each evaluation, the final
timings) is reused only when its key (tools/_cache.py: arguments, input digests, the code that computes it) matches,
and recomputed otherwise ("recomputed: <what changed>"); the report aggregates only seeds run with the same key.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import _cache  # noqa: E402
import tfwidth  # noqa: E402,F401
from tfwidth.arch import DEFAULT_ARCH, presets  # noqa: E402
from tfwidth.artifacts import atomic_write_bytes, read_json, write_json  # noqa: E402
from tfwidth.pipeline import Pipeline  # noqa: E402
from tfwidth.space import preset  # noqa: E402

# Targets: the measured latencies of these uniform networks; AOWS is trained for the one at AOWS_MULT.
MULTS = (0.3, 0.5, 0.75, 1.0)
AOWS_MULT = 0.75
# The baseline curve: uniform networks over the range (every target's among them), each fine-tuned and timed like
# the answers, so an answer is compared with the curve at its own measured latency (tools/_claim.py).
CURVE = (0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0, 1.2)
# Final timing pass: every network of a seed, interleaved in this many rounds (odd and even rounds give the pass's
# own A/A figure)
PASS_ROUNDS = 10
METHODS = ("uniform", "greedy", "ows", "exact")
# The code each cached stage depends on (tools/_cache.py code_digest)
TRAIN_CODE = ("tfwidth/supernet.py", "tfwidth/train.py", "tfwidth/data.py", "tfwidth/stats.py", "tfwidth/aows.py",
              "tfwidth/probe.py", "tfwidth/mrf.py", "tfwidth/latency.py")
TIMING_CODE = ("tfwidth/profile.py", "tfwidth/convert.py", "device_profiler")
FIT_CODE = ("tfwidth/latency.py",)
SOLVE_CODE = ("tfwidth/refine.py", "tfwidth/solve.py", "tfwidth/mrf.py", "tfwidth/latency.py", "tfwidth/stats.py",
              "device_profiler")
EVAL_CODE = ("tfwidth/export.py", "tfwidth/convert.py", "tfwidth/supernet.py",
             "tfwidth/data.py", "device_profiler")
LATENCY_FILES = ("template.tflite", "template.json", "plan.json", "val_plan.json", "samples.jsonl", "val.jsonl")


def report_parts(a, data_digest: str) -> dict:
    """What a seed's configs.json must share with the others to be aggregated in one report (all but the seed)."""
    return {"args": {k: getattr(a, k) for k in ("preset", "resolution", "classes", "plan_count", "val_count",
                                                "train_limit", "eval_limit", "val_images", "epochs",
                                                "batch_size", "sampling", "finetune_epochs", "calib_batches",
                                                "aows_probe_configs", "estimator", "probe_configs", "refine_rounds",
                                                "no_aows", "curve")},
            "inputs": {"data": data_digest}}


def dataset_spec(data: str) -> str:
    """--data as tfwidth.data's spec: npz:PATH and folder:PATH as given, a bare path as an npz."""
    return data if data.startswith(("npz:", "folder:")) else f"npz:{data}"


def dataset_label(a) -> str:
    """The data as the report names it: CIFAR-10 for an npz (the only one here), else the folder's name and size."""
    spec = dataset_spec(a.data)
    if spec.startswith("npz:"):
        return "CIFAR-10"
    return f"an ImageNet-style folder ({Path(spec[7:]).name}, {a.resolution or preset(a.preset).resolution} px)"


def bench_space(a):
    """The search space of the run: --preset at --resolution with --classes (None: the preset's)."""
    return preset(a.preset, resolution=a.resolution, classes=a.classes)


def load_bench_data(a, space, seed: int | None = None):
    """The run's data (tfwidth.data.load_data): the first --train-limit training images train, the next --val-images
    are the validation split (held out: ``Data.holdout_batches``), the first --eval-limit test (npz) or val/ (folder)
    images are the test set. The same mechanism for both kinds of data: the folder loader's training order is a fixed
    shuffle, so its validation split is a random subset; CIFAR-10's order is already mixed."""
    from tfwidth.data import load_data
    data = load_data(dataset_spec(a.data), space, a.batch_size, seed=a.seed if seed is None else seed,
                     train_limit=a.train_limit + a.val_images, eval_limit=a.eval_limit, holdout=a.val_images)
    if data.num_train != a.train_limit:
        _cache.usage_error(f"--train-limit {a.train_limit} + --val-images {a.val_images} exceed the "
                           f"{data.source.num_train} training images of --data {a.data}: the validation split must "
                           f"stay out of training; lower one of them")
    return data


def ensure_probe(run: Path, model, st, a, data, timer=None) -> None:
    """Probe a trained supernet (tfwidth/probe.py) on the first 512 images of the validation split, unless its
    stats.json already holds that probe; tools/bench_probe.py shares it. ``timer(fn)`` runs the probe when there is
    one to do (the stage-time bookkeeping), so a cached probe books no time."""
    from tfwidth import probe
    held, source = probe.data_batches(data, 512)  # the validation split's first 512 images
    if not probe.is_current(st, a.probe_configs, a.seed, held):
        (timer or (lambda fn: fn()))(lambda: probe.probe_run(model, st, held, a.probe_configs, a.seed, source,
                                                             progress=True))
        st.save(run / "stats.json")


def curve_mults(a) -> tuple:
    """--curve as multipliers; the usage line names what was received."""
    try:
        out = tuple(float(x) for x in str(a.curve).split(",") if x.strip())
    except ValueError:
        out = ()
    if len(out) < 2 or any(m <= 0 for m in out):
        _cache.usage_error(f"--curve {a.curve}: give at least two positive width multipliers, e.g. 0.2,0.5,1.0")
    return out


def cache_key(targets, entries, extra=None) -> str:
    """What a cached refinement or answer depends on: the targets, each entry's costs (rounded) and ``extra`` (the
    table's, the samples' digests, the arguments and code of the loop)."""
    import hashlib
    return hashlib.sha256(json.dumps([[t["measured_ms"] for t in targets], [costs_key(e[2]) for e in entries]]
                                     + ([] if extra is None else [_cache.canonical(extra)])).encode()).hexdigest()[:16]


def costs_key(c):
    """An entry's costs as the cache sees them: per-layer lists rounded; ChainCosts by their hash."""
    from tfwidth.solve import costs_hash
    return costs_hash(c) if hasattr(c, "pairwise") else [np.round(x, 8).tolist() for x in c]


def solve_parts(targets, entries, loop) -> dict:
    """The parts of the refinement's key by name, so that a recomputation can say which of them changed."""
    return {"targets": [t["measured_ms"] for t in targets],
            "costs": {e[0]: _cache.key_of(costs_key(e[2])) for e in entries}, **loop}


def jsonl_cache(path: Path):
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
                rows[r["key"]] = r
            except (json.JSONDecodeError, KeyError):
                pass

    def put(row):
        rows[row["key"]] = row
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
    return rows, put


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the CIFAR-10 npz (x_train, y_train, x_test, y_test; npz:PATH or "
                   "PATH), or folder:PATH, an ImageNet-style folder (train/<class>/*.png, val/<class>/*.png; "
                   "tools/npz_to_folder.py builds one from the npz), the path ImageNet users take")
    p.add_argument("--preset", default="mobilenet_v1_cifar", choices=tuple(presets()),
                   help="the search space (default %(default)s; mobilenet_v1 and mobilenet_v2 have ImageNet strides); "
                        "another architecture than the default's gets its own docs section and plot")
    p.add_argument("--resolution", type=int, help="input side in pixels (default: the preset's)")
    p.add_argument("--classes", type=int, default=10, help="classes of the data (default 10)")
    p.add_argument("--work", default="bench_e2e")
    p.add_argument("--report", help="the report's markdown (default WORK/report.md; the plot beside it)")
    p.add_argument("--update-docs", action="store_true", help="also write the report into docs/benchmarks.md (its "
                   "end-to-end section of this kind of data only) and the plot to docs/benchmarks_e2e.png "
                   "(benchmarks_e2e_folder.png for folder: data)")
    p.add_argument("--plan-count", type=int, default=1000)
    p.add_argument("--val-count", type=int, default=200)
    p.add_argument("--train-limit", type=int, default=16000, help="training subset: the first N training images")
    p.add_argument("--eval-limit", type=int, default=10000, help="test images (of 10,000), each configuration "
                   "evaluated on them once, for the report only")
    p.add_argument("--val-images", type=int, default=5000, help="the validation split: the N training images after "
                   "the training subset, never trained on; the probe (costs) and every check of the method use it, "
                   "never the test set")
    p.add_argument("--epochs", type=int, default=8, help="supernet epochs over the subset")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--sampling", default="all-layers", choices=("one-layer", "all-layers"))
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--calib-batches", type=int, default=20)
    p.add_argument("--aows-probe-configs", type=int, default=200, help="live probe of the AOWS supernet at each "
                   "update (tfwidth/aows.py); 0: the statistics accumulated over training")
    p.add_argument("--estimator", default="auto", choices=("auto", "regression", "pairwise"),
                   help="how the solver's costs are fitted to the probe (tfwidth/stats.py; auto = regression)")
    p.add_argument("--curve", default=",".join(map(str, CURVE)), help="multipliers of the uniform curve the answers "
                   "are compared with (comma-separated, each fine-tuned and timed like an answer; default "
                   "%(default)s); keep it spanning the targets' answers, beyond its ends the comparison extrapolates")
    p.add_argument("--only", help="comma-separated labels to solve and evaluate (e.g. uniform,greedy,ows,exact,aows); "
                   "default all")
    p.add_argument("--probe-configs", type=int, default=500, help="random configurations the trained supernets "
                   "are probed at (tfwidth/probe.py), on the first 512 images of the validation split")
    p.add_argument("--refine-rounds", type=int, default=12, help="rounds of the time-refit-re-aim loop at most "
                   "(tfwidth/refine.py)")
    p.add_argument("--seed", type=int, default=0, help="supernet seed (init, data order, width draws); each seed has "
                   "its own WORK/seedN/, the latency artefacts are shared, and the report aggregates every seed "
                   "evaluated so far with the same arguments and data")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from the seeds evaluated so far")
    p.add_argument("--plot-with", action="append", metavar="WORK", help="also draw another run's answers and "
                   "uniform curve in the plot (e.g. the other architecture's work directory, on the same data); "
                   "repeatable")
    p.add_argument("--keep", metavar="DIR", help="also copy what the report needs of each evaluated seed (its "
                   "configs.json, per-image test results, targets) and the run's space, targets and table into DIR, "
                   "a directory kept with the repository (e.g. docs/results/e2e_cifar): seeds run in different "
                   "sessions or on other machines then share one report (--report-only --work DIR)")
    p.add_argument("--no-aows", action="store_true")
    p.add_argument("--stop-after", choices=("ows", "latency", "aows"), help="stop after this stage (e.g. train while "
                   "the machine is busy, profile when it is quiet)")
    return p


def command(a, seed: int) -> str:
    """The command that reproduces one seed of this report: every argument the report key holds, where it is not
    the default, and --only / --no-aows; the data and work directory by their names (no machine's paths)."""
    default = parser().parse_args(["--data", "x"])
    spec = dataset_spec(a.data)
    data = f"folder:{Path(spec[7:]).name}" if spec.startswith("folder:") else Path(spec[4:]).name
    out = [f"python tools/bench_e2e.py --data {data} --work {Path(a.work).name} --seed {seed}"]
    keys = ("preset", "resolution", "classes", "epochs", "train_limit", "eval_limit", "val_images", "finetune_epochs", "sampling", "batch_size", "calib_batches",
            "plan_count", "val_count", "probe_configs", "aows_probe_configs", "estimator", "refine_rounds", "curve",
            "only")
    for k in keys:
        v = getattr(a, k, None)
        if v is not None and v != getattr(default, k):
            out.append(f"--{k.replace('_', '-')} {v}")
    if getattr(a, "no_aows", False):
        out.append("--no-aows")
    return " ".join(out)


def main(argv=None) -> int:
    a = parser().parse_args(argv)

    work = Path(a.work)
    sd = work / f"seed{a.seed}"
    if a.keep:
        check_keep(Path(a.keep), bench_space(a))  # before hours of work (and before anything is written), not after
    sd.mkdir(parents=True, exist_ok=True)
    times_path = sd / "stage_times.json"
    times = read_json(times_path) if times_path.exists() else {}

    def timed(name, fn):
        t0 = time.time()
        out = fn()
        times[name] = times.get(name, 0.0) + time.time() - t0
        write_json(times_path, times)
        return out

    space = bench_space(a)
    spec = dataset_spec(a.data)
    if not (Path(spec[4:]).is_file() if spec.startswith("npz:") else Path(spec[7:]).is_dir()):
        _cache.usage_error(f"--data {a.data}: no such " + ("file; give the CIFAR-10 npz" if spec.startswith("npz:")
                                                          else "folder; build one with tools/npz_to_folder.py"))
    data_digest = _cache.dataset_digest(spec)
    rkey = _cache.key_of(report_parts(a, data_digest))
    if a.val_images < 512:
        _cache.usage_error(f"--val-images {a.val_images}: the validation split needs at least 512 images (the probe's)")
    report_path = Path(a.report) if a.report else work / "report.md"
    if a.report_only:
        if a.keep:
            for s in load_seeds(work, rkey)[0]:
                keep(work, s["seed"], Path(a.keep))
        write_report(report_path, work, a, space, rkey, a.update_docs)
        return 0

    # 1. the OWS supernet first: training tolerates a loaded machine, timing does not --------------------------
    from tfwidth.train import train
    from tfwidth.training import read_sidecar
    data = load_bench_data(a, space)
    print(data.describe())
    runs = {"ows": sd / "run_ows"}
    if not a.no_aows:
        runs["aows"] = sd / "run_aows"
    models = {}

    def supernet(kind, callbacks=(), extra=None):
        run = runs[kind]
        # a supernet is resumed or reused only when trained from the same data, arguments and code
        parts = {"args": {"epochs": a.epochs, "train_limit": a.train_limit, "batch_size": a.batch_size,
                          "sampling": a.sampling, "seed": a.seed, **(extra or {}).get("args", {})},
                 "inputs": {"data": data_digest, **(extra or {}).get("inputs", {})},
                 "code": _cache.code_digest(*TRAIN_CODE)}
        record = run.with_name(run.name + ".key.json")
        if not _cache.check(record, parts, f"supernet {kind}", leftover=run.exists()):
            if run.exists():
                stale = run.with_name(run.name + ".stale")
                shutil.rmtree(stale, ignore_errors=True)
                run.rename(stale)
                print(f"  (the previous {run.name} moved to {stale.name})")
            _cache.store(record, parts)
        side = read_sidecar(run)
        done = side is not None and int(side.get("epoch", 0)) >= a.epochs

        def go():
            return train(space, data, run, a.epochs, sampling=a.sampling, seed=a.seed, resume=side is not None,
                         extra_callbacks=callbacks, summary=False, verbose=2, validate=False)  # test set: once
        models[kind] = (go() if done else timed(f"supernet {kind}", go)).model

    supernet("ows")
    if a.stop_after == "ows":
        return 0

    # 2. latency table ------------------------------------------------------------------------------------------
    pl = Pipeline(work, space.space_hash)
    space_path = work / "space.json"
    space.save(space_path)
    tpl = work / "template.tflite"

    # The device's table does not depend on the supernet seed: every seed shares one (seed 0's plans). The template,
    # plans and timings are redone when their arguments or code change, the fit when it or its samples change (the
    # pipeline's stage record alone would skip a stage whose outputs exist).
    timing_parts = {"args": {"plan_count": a.plan_count, "val_count": a.val_count, "plan_kind": "stratified",
                             "profiler": "defaults", "cpus": [0]},
                    "code": _cache.code_digest(*TIMING_CODE)}
    if not _cache.check(work / "latency.key.json", timing_parts, "latency timings",
                        leftover=(work / "samples.jsonl").exists()):
        for name in LATENCY_FILES + ("table.json", "fit.png"):
            (work / name).unlink(missing_ok=True)
        _cache.store(work / "latency.key.json", timing_parts)

    def latency_stages():
        pl.stage("template", "tfwidth.profile", ["template", "--space", space_path, "-o", tpl, "--seed", 0], [tpl])
        pl.stage("plan", "tfwidth.profile", ["plan", "--space", space_path, "--count", a.plan_count, "--kind",
                                             "stratified", "--seed", 0, "-o", work / "plan.json"], [work / "plan.json"])
        pl.stage("val_plan", "tfwidth.profile", ["plan", "--space", space_path, "--count", a.val_count, "--kind",
                                                 "random", "--seed", 1, "-o", work / "val_plan.json"],
                 [work / "val_plan.json"])
        for name, plan, out in (("profile", "plan.json", "samples.jsonl"), ("profile_val", "val_plan.json", "val.jsonl")):
            pl.stage(name, "device_profiler.__main__", ["--template", tpl, "--plan", work / plan, "--out", work / out,
                                                        "--threads", 1, "--cpus", 0, "--no-progress"],
                     [work / out], inputs=[tpl, tpl.with_suffix(".json"), work / plan],
                     resumable=(work / out).is_file, partial=[work / out])  # as tfwidth.pipeline's profile stages
        fit_parts = {"inputs": {n: _cache.file_digest(work / n) for n in ("samples.jsonl", "val.jsonl")},
                     "code": _cache.code_digest(*FIT_CODE)}
        if not _cache.check(work / "fit.key.json", fit_parts, "latency fit", leftover=(work / "table.json").exists()):
            (work / "table.json").unlink(missing_ok=True)
        pl.stage("fit", "tfwidth.latency", ["fit", work / "samples.jsonl", "--validation", work / "val.jsonl",
                                            "-o", work / "table.json", "--plot", work / "fit.png"],
                 [work / "table.json"], inputs=[work / "samples.jsonl", work / "val.jsonl"])
        _cache.store(work / "fit.key.json", fit_parts)
    timed("latency (template, profile, fit)", latency_stages)

    from tfwidth.latency import LatencyTable
    table = LatencyTable.load(work / "table.json", space)

    # targets: measured latencies of uniform networks ---------------------------------------------------------
    from device_profiler.variants import VariantMaker
    from tfwidth.host import measure_latency
    maker = VariantMaker(tpl.read_bytes(), json.loads(tpl.with_suffix(".json").read_text()))
    tpath = work / "targets.json"
    target_parts = {"args": {"mults": MULTS, "runs": 20, "repeats": 5, "cpus": [0]},
                    "inputs": {"template": _cache.file_digest(tpl), "table": _cache.file_digest(work / "table.json")},
                    "code": _cache.code_digest("tfwidth/export.py", "device_profiler")}
    if tpath.exists() and _cache.check(work / "targets.key.json", target_parts, "targets", leftover=True):
        targets = read_json(tpath)["targets"]
    else:
        def measure_targets():
            out = []
            for m in MULTS:
                w = space.uniform(m)
                meas = measure_latency(maker.make(w), runs=20, repeats=5, cpus=(0,))
                out.append({"mult": m, "widths": list(w), "measured_ms": meas["ms"]["min"],
                            "predicted_ms": table.predict(w)})
            return out
        targets = timed("targets", measure_targets)
        write_json(tpath, {"space_hash": space.space_hash, "targets": targets})
        _cache.store(work / "targets.key.json", target_parts)
    for t in targets:
        print(f"target {t['mult']}x: measured {t['measured_ms']:.3f} ms, table predicts {t['predicted_ms']:.3f} ms")

    if a.stop_after == "latency":
        return 0

    # 3. the AOWS supernet, for the middle target ------------------------------------------------------------------
    if "aows" in runs:
        from tfwidth.train import aows_callback
        aows_target = next(t["measured_ms"] for t in targets if t["mult"] == AOWS_MULT)
        # the live probe on the first 256 training images (the validation split stays for the evaluation)
        supernet("aows", (aows_callback(space, data, table, aows_target, a.epochs * data.steps_per_epoch,
                                        runs["aows"], probe_configs=a.aows_probe_configs, probe_images=256,
                                        probe_holdout=False, seed=a.seed),),
                 extra={"args": {"aows_target": aows_target, "aows_probe_configs": a.aows_probe_configs},
                        "inputs": {"table": _cache.file_digest(work / "table.json")}})

    if a.stop_after == "aows":
        return 0

    # 4-5. solve, evaluate inherited, fine-tune, convert, measure --------------------------------------------------
    from tfwidth.stats import WidthStats
    from tfwidth.convert import convert, keras_logits
    from tfwidth.export import fine_tune
    rows, put = jsonl_cache(sd / "results.jsonl")
    xe, ye = data.eval_arrays()
    stats = {kind: WidthStats.load(run / "stats.json", space) for kind, run in runs.items()}
    # The solver's costs: the trained supernets probed on training images the supernets never saw (the ones after
    # --train-limit), every configuration on the same images (tfwidth/probe.py); stored in each run's stats.json.
    for kind, st in stats.items():
        ensure_probe(runs[kind], models[kind], st, a, data, lambda fn, k=kind: timed(f"probe {k} supernet", fn))
    costs = {kind: st.costs("probe", a.estimator) for kind, st in stats.items()}
    # (label, supernet, costs, solver method): the four methods on the OWS supernet, ows on the AOWS one, and exact
    # with the paper's split-mean costs on the same OWS supernet (what the regression estimator changes)
    # aows-exact: exact on the AOWS supernet, against exact (ows stops short of the budget, on either supernet)
    entries = [(m, "ows", costs["ows"], m) for m in METHODS]
    if "aows" in runs:
        entries += [("aows", "aows", costs["aows"], "ows"), ("aows-exact", "aows", costs["aows"], "exact")]
    entries.append(("exact-mean", "ows", stats["ows"].costs("running", "mean"), "exact"))
    entries.append(("exact-train", "ows", stats["ows"].costs("running"), "exact"))
    if a.only:
        entries = [e for e in entries if e[0] in a.only.split(",")]

    # Refine the shared table where the solver chooses and meet every target as measured, in one loop
    # (tfwidth/refine.py): every method's answer for every target and both supernets is timed here, fed back into
    # the fit, and an answer that runs over its target although the table predicted it is aimed lower, until every
    # answer is predicted within 3% and measured within its target. Every answer exported below was timed in that
    # loop and is in the table it is compared with. The fitted table.json stays as the latency stage wrote it (a
    # training run may have used it); the refined one is cached beside it and redone when the targets or statistics
    # change (cheap: seconds of timing per round).
    from tfwidth.latency import load_samples
    from tfwidth import refine as refine_mod
    # beside the targets and costs: the table and timings the loop starts from, its arguments and code
    loop = {"inputs": {n: _cache.file_digest(work / n) for n in ("table.json", "samples.jsonl", "val.jsonl",
                                                                 "template.tflite")},
            "args": {"refine_rounds": a.refine_rounds}, "code": _cache.code_digest(*SOLVE_CODE)}
    inputs = cache_key(targets, entries, loop)
    inputs_base = cache_key(targets, [e for e in entries if e[1] != "aows"], loop)
    refined_path = sd / "table_refined.json"
    solved_path = sd / "solved.json"
    old = read_json(solved_path) if solved_path.exists() else {}
    # Only the AOWS supernet changed (retrained): the OWS supernet's answers are kept as they were evaluated, timed
    # again as fixed candidates, and the loop settles the AOWS answers around them, so all share one table.
    fixed = {(c["target_mult"], c["method"]): c["widths"] for c in old.get("configs", []) if c["run"] != "aows"} \
        if old.get("inputs_base") == inputs_base else {}
    if refined_path.exists() and old.get("inputs") == inputs:
        table = LatencyTable.load(refined_path, space)
        configs = old["configs"]
    else:
        if old:
            print(f"recomputed: refined table and answers: "
                  f"{_cache.describe_change(old.get('parts'), solve_parts(targets, entries, loop))}"
                  + ("" if not fixed else " (the OWS supernet's answers kept)"))
        plan = [(t, e) for t in targets for e in entries]
        # every (target, entry) solved at its aim, but the uniform network whose measured latency is the target (not
        # a solver's guess) and the answers kept
        answers = refine_mod.answer_solver(
            space, [(c, t["measured_ms"], method) for t, (label, kind, c, method) in plan],
            fixed={i: fixed[t["mult"], label] if (t["mult"], label) in fixed else space.uniform(t["mult"])
                   for i, (t, (label, *_)) in enumerate(plan) if (t["mult"], label) in fixed or label == "uniform"})

        def settle():
            # one directory per set of inputs: a killed settle resumes, another set of answers starts afresh
            device = refine_mod.HostDevice(tpl, sd / f"settle_{'aows_' if fixed else ''}{inputs}",
                                           refine_mod.sample_protocol(work / "samples.jsonl"))
            t, rec = refine_mod.refine(table, load_samples(work / "samples.jsonl"), answers, device,
                                       rounds=a.refine_rounds, explore=refine_mod.EXPLORE, repeats=3,
                                       validation=load_samples(work / "val.jsonl"),
                                       targets=[None if e[0] == "uniform" or (t["mult"], e[0]) in fixed
                                                else t["measured_ms"] for t, e in plan])
            t.fit["refine"]["inputs"] = inputs
            t.save(refined_path)
            out = []
            before = {(c["target_mult"], c["method"]): c for c in old.get("configs", [])}
            for (tg, (label, kind, c, method)), r in zip(plan, rec["answers"]):
                if (tg["mult"], label) in fixed:  # as settled before; predicted by (and timed for) the new table
                    out.append(dict(before[tg["mult"], label], predicted_ms=r.get("predicted_ms")))
                    continue
                out.append({"target_mult": tg["mult"], "target_ms": tg["measured_ms"], "method": label, "run": kind,
                            "widths": r["widths"], "predicted_ms": r.get("predicted_ms"),
                            "aim_ms": r.get("aim_ms") or tg["measured_ms"], "settle_ms": r.get("measured_ms"),
                            "settle_met": r["met"], "settle_round": r.get("round")})
            write_json(solved_path, {"space_hash": space.space_hash, "inputs": inputs, "inputs_base": inputs_base,
                                     "parts": solve_parts(targets, entries, loop),
                                     "configs": out, "kept": sorted(map(list, fixed))})
            return t, out
        table, configs = timed("refine table and meet targets (time every answer, refit, re-aim)", settle)

    def latency_key(c) -> str:
        return f"{c['run']}:{','.join(map(str, c['widths']))}"

    # The baseline curve: uniform networks over the whole range (the targets' among them), with the OWS supernet's
    # weights, evaluated and timed exactly like the answers (tools/_claim.py compares with it at equal latency).
    curve = [{"method": "uniform-curve", "mult": m, "run": "ows", "widths": list(space.uniform(m))}
             for m in curve_mults(a)]

    # an evaluation is the network's, of one supernet's weights, data, budget and code: any of them changed, another
    eval_parts = {kind: {"inputs": {"run": _cache.run_digest(run), "data": data_digest},
                         "args": {k: getattr(a, k) for k in ("finetune_epochs", "batch_size", "calib_batches",
                                                             "train_limit", "eval_limit", "val_images", "seed")},
                         "code": _cache.code_digest(*EVAL_CODE)} for kind, run in runs.items()}
    eval_keys = {kind: _cache.key_of(p)[:12] for kind, p in eval_parts.items()}
    parts_path = sd / "eval_parts.json"
    before = read_json(parts_path) if parts_path.exists() else {}

    def result_key(c) -> str:
        return f"{latency_key(c)}:{eval_keys[c['run']]}"

    def stem(c) -> str:
        return f"{c['run']}_{'-'.join(map(str, c['widths']))}_{eval_keys[c['run']]}"

    def model_path(c) -> Path:
        return sd / "models" / f"{stem(c)}.tflite"

    def preds_path(c) -> Path:
        return sd / "preds" / f"{stem(c)}.npz"

    everything = [c for c in configs + curve if c["widths"] is not None]
    exported = {result_key(c) for c in configs if c["widths"] is not None}  # the answers (and targets) are exported
    stale = sum(1 for c in everything if result_key(c) not in rows
                and any(k.startswith(latency_key(c) + ":") for k in rows))
    if stale:
        print(f"recomputed: evaluation of {stale} configuration(s): " + "; ".join(
            f"{kind} supernet's: {_cache.describe_change(before.get(kind), p)}" for kind, p in eval_parts.items()
            if before.get(kind) != p))
    write_json(parts_path, eval_parts)

    def evaluate_all():
        from tfwidth import probe
        val = data.holdout_batches()  # the validation split
        todo = list({result_key(c): c for c in everything if result_key(c) not in rows}.values())
        # the cost model's own quantity on the validation split, for every configuration to evaluate at once (one
        # trace per supernet): the loss increase over the max network, batch statistics, as the probe measures it
        val_delta = {}
        for kind in runs:
            mine = [c for c in todo if c["run"] == kind]
            if mine:
                d, base = probe.measure(models[kind], val, np.array([space.to_indices(c["widths"]) for c in mine]))
                val_delta.update({result_key(c): (float(x), float(base)) for c, x in zip(mine, d)})
        for n, c in enumerate(todo):
            key = result_key(c)
            w = tuple(c["widths"])
            t0 = time.time()
            net = models[c["run"]]
            inherited = net.evaluate_widths(w, data, calib_batches=a.calib_batches)
            # the export's recipe (init supernet: lr 0.01 x batch/64, no warm-up), without checkpoints or an
            # evaluation per epoch
            model = fine_tune(space, w, data, run_dir=runs[c["run"]], epochs=a.finetune_epochs,
                              calib_batches=a.calib_batches, seed=a.seed, progress=False,
                              eval_each_epoch=False).model
            correct = keras_logits(model, xe).argmax(1) == np.asarray(ye)  # the test images, once
            preds_path(c).parent.mkdir(exist_ok=True)
            buf = __import__("io").BytesIO()
            np.savez(buf, space_hash=space.space_hash, widths=np.array(w), correct=np.packbits(correct),
                     count=len(correct))
            atomic_write_bytes(preds_path(c), buf.getvalue())
            row = {"key": key, "space_hash": space.space_hash, "inherited_top1": inherited,
                   "finetuned_top1": float(correct.mean()), "val_delta": val_delta[key][0],
                   "val_max_loss": val_delta[key][1], "val_images": int(sum(len(y) for _, y in val))}
            if key in exported:
                content = convert(model, "fp32")
                model_path(c).parent.mkdir(exist_ok=True)
                atomic_write_bytes(model_path(c), content)
                row["export_ms"] = measure_latency(content, runs=20, repeats=5, cpus=(0,))["ms"]["min"]
                row["tflite_bytes"] = len(content)
            row["seconds"] = time.time() - t0
            put(row)
            print(f"[{n + 1}/{len(todo)}] {key}: inherited {inherited:.4f}, fine-tuned {row['finetuned_top1']:.4f}, "
                  f"validation loss {row['val_delta']:+.4f}" + (f", export {row['export_ms']:.3f} ms"
                                                                  if "export_ms" in row else ""), flush=True)
    timed("evaluate (inherit, fine-tune, convert, measure)", evaluate_all)

    # Every network of the seed (answers and curve) timed again in one pass at the end, interleaved: PASS_ROUNDS
    # rounds, each visiting every network once in a new random order (a fresh interpreter, min of 30 invokes), the
    # median over rounds kept. A machine that speeds up or slows down during the pass moves every network alike,
    # so the equal-latency comparisons stay fair; odd against even rounds is the pass's own A/A. Every network is
    # timed as the variant cut from the template (one source for all: the curve's networks are not exported), and
    # each exported .tflite beside it in the same rounds, for the export bar.
    quiet_path = sd / "quiet.json"
    pass_key = _cache.key_of({"answers": read_json(solved_path).get("inputs"), "evaluations": eval_keys,
                              "curve": curve_mults(a), "rounds": PASS_ROUNDS,
                              "code": _cache.code_digest("tfwidth/export.py", "device_profiler")})
    q = read_json(quiet_path) if quiet_path.exists() else {}
    quiet = q["timings"] if q.get("inputs") == pass_key else {}
    if q and not quiet:
        print("recomputed: final timings: another set of answers or evaluations")
    load_avg = q.get("load_avg", []) if quiet else []

    def remeasure():
        nets = {}
        for c in everything:
            nets.setdefault(latency_key(c), (maker.make(c["widths"]), "template variant"))
            if model_path(c).exists():
                nets.setdefault("export:" + latency_key(c), (model_path(c).read_bytes(), "exported .tflite"))
        if set(nets) <= set(quiet):
            return
        load_avg.append(os.getloadavg()[0])
        got = {k: [] for k in nets}
        rng = np.random.default_rng(a.seed)
        keys = sorted(nets)
        for r in range(PASS_ROUNDS):
            for i in rng.permutation(len(keys)):
                got[keys[i]].append(measure_latency(nets[keys[i]][0], runs=30, repeats=1, cpus=(0,))["ms"]["min"])
            print(f"final timing pass: round {r + 1}/{PASS_ROUNDS}", flush=True)
        load_avg.append(os.getloadavg()[0])
        for k, v in got.items():
            quiet[k] = {"ms": float(np.median(v)), "rounds": v, "source": nets[k][1],
                        "aa": float(np.median(v[0::2]) / np.median(v[1::2]) - 1)}
        write_json(quiet_path, {"space_hash": space.space_hash, "inputs": pass_key, "timings": quiet,
                                "load_avg": load_avg})
    timed("final timing pass", remeasure)

    for c in configs + curve:
        if c["widths"] is not None:
            c.update({k: v for k, v in rows[result_key(c)].items() if k != "export_ms"})
            c["export_ms"] = rows[result_key(c)].get("export_ms")  # timed right after the export
            c["preds"] = str(preds_path(c).relative_to(sd))
            c["measured_ms"], c["measured_source"] = quiet[latency_key(c)]["ms"], quiet[latency_key(c)]["source"]
            c["pass_aa"] = quiet[latency_key(c)]["aa"]
            c["export_pass_ms"] = (quiet.get("export:" + latency_key(c)) or {}).get("ms")
            c["params"], c["macs"] = space.params(c["widths"]), space.macs(c["widths"])
            c["predicted_ms"] = c.get("predicted_ms") or table.predict(c["widths"])
    st_costs = {kind: [np.asarray(x, np.float64) for x in cs] for kind, cs in costs.items()
                if not hasattr(cs, "pairwise")}
    for c in configs + curve:  # what the solver believed: the cost model's predicted loss increase (up to its constant)
        if c["widths"] is not None and c["run"] in st_costs:
            c["predicted_delta"] = float(sum(x[i] for x, i in zip(st_costs[c["run"]], space.to_indices(c["widths"]))))
    write_json(sd / "configs.json", {"space_hash": space.space_hash, "seed": a.seed, "configs": configs,
                                     "curve": curve, "table": (table.fit or {}).get("refine"), "times": times,
                                     "report_key": rkey, "quiet_load_avg": load_avg})
    if a.keep:
        keep(work, a.seed, Path(a.keep))
    write_report(report_path, work, a, space, rkey, a.update_docs)
    return 0


def targets_sentence(work: Path, targets: list[dict], seeds: list[int]) -> str:
    """The report's line on the targets: WORK's, or each seed's own where seeds kept from different sessions
    (seedN/targets.json, see keep) measured them differently."""
    def listed(ts):
        return ", ".join(f"{t['mult']}x = {t['measured_ms']:.3f} ms" for t in ts)
    own = {i: read_json(work / f"seed{i}" / "targets.json")["targets"] for i in seeds
           if (work / f"seed{i}" / "targets.json").exists()}
    if not own or all(listed(ts) == listed(targets) for ts in own.values()):
        return "Targets are the measured latencies of the uniform networks: " + listed(targets) + "."
    return ("Targets are the measured latencies of the uniform networks, timed in each seed's own session: "
            + "; ".join(f"seed {i}: {listed(own.get(i, targets))}" for i in seeds) + ".")


def check_keep(dest: Path, space) -> None:
    """Refuse --keep DIR, with one line, when DIR is not a directory or holds another space's seeds (its report's
    header and table would be the other space's)."""
    if dest.exists() and not dest.is_dir():
        _cache.usage_error(f"--keep {dest}: not a directory; give a directory for the kept results")
    kept = dest / "space.json"
    if kept.exists():
        other = read_json(kept).get("space_hash")
        if other != space.space_hash:
            _cache.usage_error(f"--keep {dest}: it holds results of space {other}, this run's is {space.space_hash}; "
                               f"keep each space's seeds in a directory of their own")


def keep(work: Path, seed: int, dest: Path) -> None:
    """Copy seed ``seed``'s reportable results from ``work`` into ``dest`` (a WORK-shaped directory of small files):
    seedN/configs.json, seedN/preds/, seedN/targets.json (the targets of the session that ran it) and
    seedN/stage_times.json; the run's space.json, targets.json and table.json only where ``dest`` has none yet (the
    report's header and fit line come from the first session kept). Files are replaced atomically; other seeds in
    ``dest`` stay."""
    sd, out = work / f"seed{seed}", dest / f"seed{seed}"
    (out / "preds").mkdir(parents=True, exist_ok=True)
    for f in sorted((sd / "preds").glob("*.npz")):
        atomic_write_bytes(out / "preds" / f.name, f.read_bytes())
    atomic_write_bytes(out / "targets.json", (work / "targets.json").read_bytes())
    if (sd / "stage_times.json").exists():
        atomic_write_bytes(out / "stage_times.json", (sd / "stage_times.json").read_bytes())
    for name in ("space.json", "targets.json", "table.json"):
        if not (dest / name).exists():
            atomic_write_bytes(dest / name, (work / name).read_bytes())
    atomic_write_bytes(out / "configs.json", (sd / "configs.json").read_bytes())  # last: a seed counts once complete
    print(f"kept seed {seed}'s results in {dest}")


BASELINES = ("uniform", "greedy")
SEARCHED = ("exact", "ows", "aows", "greedy")
# (label, searched method, baseline curve, bar in top-1 points or None, only at this target or None)
CLAIMS = (("exact - uniform curve", "exact", "uniform-curve", 1.5, None),
          ("ows - uniform curve", "ows", "uniform-curve", 1.5, None),
          ("exact - greedy curve", "exact", "greedy", 0.5, None),
          ("ows - greedy curve", "ows", "greedy", 0.5, None),
          ("aows - ows curve, at its target", "aows", "ows", 0.5, AOWS_MULT),
          ("aows - uniform curve", "aows", "uniform-curve", None, None),
          ("greedy - uniform curve", "greedy", "uniform-curve", None, None),
          # the same curve read as a user who can run any uniform network would: its best point that fits
          ("exact - best uniform that fits", "exact", "uniform-best", None, None),
          ("ows - best uniform that fits", "ows", "uniform-best", None, None),
          ("aows - best uniform that fits", "aows", "uniform-best", None, None),
          ("greedy - best uniform that fits", "greedy", "uniform-best", None, None))


def correct_of(seed_dir: Path, c: dict) -> np.ndarray:
    """A configuration's per-image test correctness [N] (bool) from its seed's preds/ file."""
    with np.load(seed_dir / c["preds"]) as z:
        return np.unpackbits(z["correct"])[:int(z["count"])].astype(bool)


def claim(work: Path, seeds: list[dict]) -> dict:
    """Every searched answer against each baseline curve at its own measured latency (tools/_claim.py), per seed and
    target, and each CLAIMS row over seeds and targets with its paired bootstrap interval over test images.
    Returns {"rows": [...], "answers": [...]}: per row label, bar, mean/lo/hi (fractions), per-seed and per-target
    means and how many answers lay outside their curve's range; per answer its differences and the why-figures."""
    import _claim
    diffs, answers = {}, []
    for s in seeds:
        sd = work / f"seed{s['seed']}"
        ladder = [c for c in s.get("curve", []) if c.get("preds")]
        pts = {"uniform-curve": [(c["measured_ms"], correct_of(sd, c)) for c in ladder]}
        pts["uniform-best"] = pts["uniform-curve"]
        for m in SEARCHED:
            pts[m] = [(c["measured_ms"], correct_of(sd, c)) for c in s["configs"]
                      if c["method"] == m and c.get("preds")]
        uni = {c["target_mult"]: c for c in s["configs"] if c["method"] == "uniform" and c.get("preds")}
        for c in s["configs"]:
            if c["method"] not in SEARCHED or not c.get("preds"):
                continue
            y = correct_of(sd, c)
            row = {"seed": s["seed"], "target_mult": c["target_mult"], "method": c["method"], "vs": {}}
            for label, m, base, _, only in CLAIMS:
                if m != c["method"] or (only is not None and c["target_mult"] != only) or len(pts[base]) < 2:
                    continue
                d, inside = _claim.difference(y, c["measured_ms"], pts[base],
                                              "best" if base == "uniform-best" else "interpolated")
                diffs.setdefault(label, []).append((s["seed"], c["target_mult"], d, inside))
                row["vs"][label] = (float(d.mean()), inside)
            if len(ladder) >= 2:  # which uniform network the strict reading compared it with
                k, _ = _claim.best_index([p[0] for p in pts["uniform-best"]],
                                         [p[1].mean() for p in pts["uniform-best"]], c["measured_ms"])
                row["best_uniform"] = ladder[k]["mult"]
            u = uni.get(c["target_mult"])
            row.update(measured_ms=c["measured_ms"], predicted_ms=c.get("predicted_ms"),
                       export_pass_ms=c.get("export_pass_ms"),
                       target_ms=u["measured_ms"] if u else None, inherited=c.get("inherited_top1"),
                       finetuned=c.get("finetuned_top1"),
                       gain_predicted=(u["predicted_delta"] - c["predicted_delta"])
                       if u and c.get("predicted_delta") is not None and u.get("predicted_delta") is not None else None,
                       gain_measured=(u["val_delta"] - c["val_delta"]) if u and "val_delta" in c else None)
            answers.append(row)
    rows = []
    for label, m, base, bar, only in CLAIMS:
        got = diffs.get(label)
        if not got:
            continue
        summ = _claim.bootstrap([d for *_, d, _ in got])
        seeds_ = sorted({sd for sd, *_ in got})
        tmults = sorted({t for _, t, *_ in got})
        rows.append({"label": label, "bar": bar, "only": only, **summ,
                     "per_seed": {sd: float(np.mean([d.mean() for s2, _, d, _ in got if s2 == sd])) for sd in seeds_},
                     "per_target": {t: float(np.mean([d.mean() for _, t2, d, _ in got if t2 == t])) for t in tmults},
                     "outside": sum(1 for *_, inside in got if not inside), "count": len(got)})
    return {"rows": rows, "answers": answers}


def claim_verdict(r: dict) -> str:
    """A bar is met only when the whole 95% interval is above it."""
    if r["bar"] is None:
        return ""
    lo, mean = 100 * r["lo"], 100 * r["mean"]
    if lo >= r["bar"]:
        return f">= +{r['bar']:g}: met (interval above the bar)"
    if mean >= r["bar"]:
        return f">= +{r['bar']:g}: not met (mean above the bar, interval not" + (", above 0)" if lo > 0 else ")")
    return f">= +{r['bar']:g}: not met" + (" (interval above 0)" if lo > 0 else "")


def claim_lines(cl: dict, seeds: list[dict]) -> list[str]:
    """The claim's tables: the comparisons with intervals, then per answer what explains it."""
    out = ["### At equal measured latency, against curves (fine-tuned top-1, points; test images used once)", "",
           "Each answer minus the baseline curve at the answer's own latency (timed in its seed's final pass), mean "
           "over targets and seeds; 95% interval from a paired bootstrap over the test images (2,000 draws): it "
           "covers the test-set noise, the per-seed values show the training noise. 'uniform curve' reads the ladder "
           "of uniform networks between its two points around the answer's latency (log latency); 'best uniform "
           "that fits' takes the ladder's most accurate network measured no slower than the answer, which is what a "
           "user who can run any uniform network gets (its choice looks at the test accuracy, so it favours the "
           "baseline).", "",
           "| comparison | mean | 95% interval | per seed | per target | outside the curve's range | bar |",
           "|---|---|---|---|---|---|---|"]
    for r in cl["rows"]:
        out.append(f"| {r['label']} | {100 * r['mean']:+.2f} | [{100 * r['lo']:+.2f}, {100 * r['hi']:+.2f}] | "
                   + ", ".join(f"{100 * v:+.2f}" for v in r["per_seed"].values()) + " | "
                   + ", ".join(f"{t}x {100 * v:+.2f}" for t, v in r["per_target"].items()) + " | "
                   f"{r['outside']} of {r['count']} | {claim_verdict(r)} |")
    aa = list({(s["seed"], tuple(c["widths"])): abs(c["pass_aa"]) for s in seeds
               for c in s["configs"] + s.get("curve", []) if c.get("pass_aa") is not None}.values())
    if aa:
        out += ["", f"Timing noise of the final passes: the same network's odd vs even rounds differ by a median "
                f"{100 * np.median(aa):.1f}% (worst {100 * max(aa):.1f}%, {len(aa)} networks over the seeds)."]
    out += ["", "Why, per answer: the latency model's error there (measured / predicted - 1); the cost model's "
            "predicted loss reduction against the target's uniform network vs the reduction measured on the "
            "validation split with inherited weights; inherited vs fine-tuned top-1.", "",
            "| seed | target | method | measured ms | latency error | vs uniform curve | vs best uniform that fits | "
            "predicted gain | measured gain (validation) | inherited | fine-tuned | fine-tuning gap |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in cl["answers"]:
        vs = r["vs"].get(f"{r['method']} - uniform curve")
        vb = r["vs"].get(f"{r['method']} - best uniform that fits")
        which = "" if vb is None else f" ({r['best_uniform']}x)" if vb[1] else " (none fits)"
        g = lambda v, f="{:+.4f}": "n/a" if v is None else f.format(v)  # noqa: E731
        out.append(f"| {r['seed']} | {r['target_mult']}x | {r['method']} | {r['measured_ms']:.3f} | "
                   f"{g(r['measured_ms'] / r['predicted_ms'] - 1 if r['predicted_ms'] else None, '{:+.1%}')} | "
                   f"{g(None if vs is None else 100 * vs[0], '{:+.2f}')}{'' if vs is None or vs[1] else ' (outside)'} | "
                   f"{g(None if vb is None else 100 * vb[0], '{:+.2f}')}{which} | "
                   f"{g(r['gain_predicted'])} | {g(r['gain_measured'])} | {g(100 * r['inherited'], '{:.2f}')} | "
                   f"{g(100 * r['finetuned'], '{:.2f}')} | {g(100 * (r['finetuned'] - r['inherited']), '{:+.2f}')} |")
    both = [r for r in cl["answers"] if r["gain_predicted"] is not None and r["gain_measured"] is not None
            and r["method"] != "greedy"]
    if both:
        agree = sum((r["gain_predicted"] > 0) == (r["gain_measured"] > 0) for r in both)
        out += ["", f"Cost model: on {agree} of {len(both)} searched answers the measured validation gain has the sign "
                f"the model predicted; mean predicted {np.mean([r['gain_predicted'] for r in both]):+.4f}, measured "
                f"{np.mean([r['gain_measured'] for r in both]):+.4f} (loss, nats)."]
    lat = [r["measured_ms"] / r["predicted_ms"] - 1 for r in cl["answers"] if r["predicted_ms"]]
    if lat:
        out.append(f"Latency model at the answers: median error {100 * np.median(lat):+.1f}%, worst "
                   f"{100 * max(lat, key=abs):+.1f}%.")
    over = [r["measured_ms"] / r["target_ms"] for r in cl["answers"] if r["target_ms"]]
    if over:
        out.append(f"Answers against the uniform network that defines their target, same pass: worst "
                   f"{max(over):.3f}x.")
    ex = [(r["export_pass_ms"] / r["target_ms"], r) for r in cl["answers"] if r.get("export_pass_ms") and r["target_ms"]]
    if ex:
        worst, r = max(ex, key=lambda v: v[0])
        out.append(f"Every exported .tflite against its target (the uniform network's variant, same pass): worst "
                   f"{worst:.3f}x (seed {r['seed']}, {r['target_mult']}x, {r['method']}; bar <= 1.05: "
                   f"{'met' if worst <= 1.05 else 'not met'}).")
    return out
OPTIMAL = ("exact", "ows")


def bars(configs, targets):
    """One seed: per target, each optimal method minus each baseline and AOWS minus OWS (top-1 points, inherited
    and fine-tuned), and the latency figures of issues 7 and 8."""
    out = {}
    for which in ("inherited_top1", "finetuned_top1"):
        d = {}
        for t in targets:
            by = {c["method"]: c for c in configs if c["target_mult"] == t["mult"] and c.get(which) is not None}
            for opt in OPTIMAL + ("aows", "aows-exact", "exact-mean", "exact-train"):
                for base in BASELINES + ("ows", "exact", "exact-mean", "exact-train"):
                    if opt in by and base in by and opt != base:
                        d.setdefault(f"{opt}-{base}", []).append(100 * (by[opt][which] - by[base][which]))
        out[which] = d
    lat = [c["measured_ms"] / c["target_ms"] for c in configs if c.get("measured_ms")]
    out["max_measured_over_target"] = max(lat) if lat else None
    pred = [abs(c["measured_ms"] / c["predicted_ms"] - 1) for c in configs if c.get("measured_ms") and
            c.get("predicted_ms")]
    out["max_abs_measured_vs_predicted"] = max(pred) if pred else None  # issue 7: fp32 exports within +-5%
    exp = [c["export_ms"] for c in configs if c.get("export_ms")]
    out["max_export_over_target"] = max(c["export_ms"] / c["target_ms"] for c in configs if c.get("export_ms")) \
        if exp else None
    out["max_abs_export_vs_predicted"] = max(abs(c["export_ms"] / c["predicted_ms"] - 1) for c in configs
                                             if c.get("export_ms") and c.get("predicted_ms")) if exp else None
    out["within_5pct_of_prediction"] = (sum(p <= 0.05 for p in pred), len(pred))
    # Same-pass ratios: the uniform network of each target is timed in the same back-to-back pass, so dividing by
    # it removes how fast the machine was that minute (the targets were timed hours earlier), as the fit's
    # reference does for samples.
    uni = {c["target_mult"]: c for c in configs if c["method"] == "uniform" and c.get("measured_ms")}
    same = [(c["measured_ms"] / uni[c["target_mult"]]["measured_ms"],
             (c["measured_ms"] / uni[c["target_mult"]]["measured_ms"])
             / (c["predicted_ms"] / uni[c["target_mult"]]["predicted_ms"]) - 1)
            for c in configs if c.get("measured_ms") and c.get("predicted_ms") and c["target_mult"] in uni]
    out["max_over_uniform_same_pass"] = max(r for r, _ in same) if same else None
    # the uniform networks in the final pass against their own timing as targets (before training): the drift
    out["uniform_vs_target"] = [c["measured_ms"] / c["target_ms"] for c in uni.values() if c.get("target_ms")]
    out["same_pass_pred_errors"] = sorted((abs(e) for _, e in same), reverse=True)
    return out


def refine_lines(r) -> list[str]:
    """The refinement of one seed's table (tfwidth/refine.py) as the report states it."""
    if not r:
        return []
    per = ", ".join(f"{100 * h['max_abs_err']:.1f}%" + (f" ({h['over_target']} over)" if h.get("over_target") else "")
                    for h in r["history"])
    late = sum(1 for x in r.get("answers", []) if x.get("widths") is not None and not x.get("met"))
    return [f"{r['rounds']} round(s), {'converged' if r['converged'] else 'not converged'} at +-{100 * r['tol']:g}% "
            f"(max |measured / predicted - 1| over the round's candidates, answers over their target: {per}; "
            f"{r['added_samples']} timings added" + (f"; {late} answer(s) left over their target" if late else "")
            + ")"]


def load_seeds(work: Path, rkey: str | None = None) -> tuple[list[dict], list[int]]:
    """The seeds evaluated in WORK with report key ``rkey`` (None: all), and the seeds left out for another key."""
    out, other = [], []
    for p in sorted(work.glob("seed*/configs.json"), key=lambda p: int(p.parent.name[4:])):
        s = read_json(p)
        (out if rkey is None or s.get("report_key") == rkey else other).append(s)
    return out, [s["seed"] for s in other]


def refine_outcome(seeds: list[dict]) -> str:
    """What each seed's refinement loop reached, as one sentence computed from its record (never assumed)."""
    parts, all_ok = [], True
    for s in seeds:
        r = s.get("table") or {}
        if not r:
            parts.append(f"seed {s['seed']}: no record of the loop")
            all_ok = False
            continue
        late = sum(1 for x in r.get("answers", []) if x.get("widths") is not None and not x.get("met"))
        ok = bool(r.get("converged")) and not late
        all_ok &= ok
        parts.append(f"seed {s['seed']}: " + ("converged" if r.get("converged") else
                                               f"not converged after {r.get('rounds')} round(s)")
                     + (f", {late} answer(s) left over their target" if late else ", every answer within its target"))
    if seeds and all_ok:
        return "In this run every seed's loop converged with every answer timed within its target."
    return "In this run the loop did not reach that for every seed: " + "; ".join(parts) + "."


def verdict(value, bar: str) -> str:
    """'pass' / 'fail' for a figure against a bar written as '>= x' or '<= x' (first number), '' without a bar."""
    if not bar or value is None:
        return ""
    op, num = bar.split()[0], float(bar.split()[1])
    ok = value >= num if op == ">=" else value <= num
    return "pass" if ok else "fail"


def load_sentence(loads: list) -> str:
    """The final timing pass's machine load as measured (a 'quiet machine' is a number, not an assumption)."""
    v = [x for x in loads if x is not None]
    if not v:
        return "load average not recorded"
    return f"load average {min(v):.1f}-{max(v):.1f} on {os.cpu_count()} cores during the pass"


def _pm(vals, scale=100.0, digits=2) -> str:
    """mean, and every seed's value when there are several (the spread is the point with 2-3 seeds)."""
    v = [scale * x for x in vals if x is not None]
    if not v:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{np.mean(v):.{digits}f} ({', '.join(f'{x:.{digits}f}' for x in v)})"


def write_report(path: Path, work: Path, a, space, rkey: str | None = None, update_docs: bool = False) -> None:
    """The report of every seed in WORK evaluated with the same arguments and inputs (report key): markdown at
    ``path``, the plot beside it; with ``update_docs`` also this section of docs/benchmarks.md and its plot."""
    seeds, left_out = load_seeds(work, rkey)
    if not seeds:
        _cache.usage_error(f"no seed evaluated with these arguments and data in {work} (WORK/seedN/configs.json)"
                         + (f"; seeds {', '.join(map(str, left_out))} were run with others" if left_out else ""))
    targets = read_json(work / "targets.json")["targets"]
    table = read_json(work / "table.json")
    fit = (table.get("fit") or {}).get("validation") or {}
    per_seed = [bars(s["configs"], targets) for s in seeds]
    ids = [s["seed"] for s in seeds]
    methods = list(dict.fromkeys(c["method"] for s in seeds for c in s["configs"]))
    lines = ["# Benchmarks", "",
             f"{section_marker(a).rstrip(':')}: optimal widths vs. uniform and greedy on {dataset_label(a)} "
             f"(tools/bench_e2e.py)",
             "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; device = this CPU, LiteRT "
             f"fp32, 1 thread pinned to core 0. Space: {space.name} ({space.space_hash}), {space.resolution}px.",
             f"Budget: per seed, {'one supernet (OWS)' if a.no_aows else 'two supernets (OWS and AOWS)'} trained "
             f"{a.epochs} epochs on the first {a.train_limit} training images of {data_name(a)} (batch "
             f"{a.batch_size}, sampling {a.sampling}); fine-tuning {a.finetune_epochs} epoch(s) of the same subset for "
             f"every configuration. Protocol: every decision of the method (the probe's costs, the checks of the cost "
             f"model) is taken on the validation split, the {a.val_images} training images after those, which "
             f"nothing trains on; {test_images(a)} are evaluated once per configuration, for this "
             f"report only. Seeds: "
             f"{', '.join(map(str, ids))}"
             + (f" (seeds {', '.join(map(str, left_out))} in {Path(a.work).name} were run with other arguments or "
                f"data and are left out)" if left_out else "")
             + f". The paper trains 20 epochs on ImageNet: the comparison at equal budget is the point here, not the "
             f"absolute accuracies.", "",
             "Commands (one per seed; each resumes where it stopped, the latency artefacts are shared):", "", "```sh"]
    lines += [command(a, i) for i in ids]
    lines += ["```", "",
              targets_sentence(work, targets, ids),
              "Methods: uniform (the uniform network that defines the target) and greedy (AutoSlim-style "
              "slimming) are the baselines; ows (Viterbi + Lagrange "
              "bisection) and exact (the constrained optimum) use the "
              + ("pairwise (per-layer + adjacent-shape) " if a.estimator == "pairwise" else "regression (additive, free "
                 "constant) ")
              + "costs of the OWS supernet's probe "
              "(random configurations of the trained supernet measured on the same held-out images, "
              "tfwidth/probe.py); aows is ows on the AOWS supernet (trained for the 0.75x target"
              + (f", its marginals' costs from a live probe of {a.aows_probe_configs} configurations at each update"
                 if a.aows_probe_configs else "") + "; probed alike) and "
              "aows-exact exact on it; exact-train is exact with the regression costs of the training-time "
              "statistics and exact-mean with the paper's split means of them, both of the same OWS supernet. Every solver's answer was timed here before its evaluation, in one loop with the "
              "table's refinement (`tfwidth.refine.refine` with targets): timings refitted into the table, an answer "
              "over its target that the table predicted aimed lower by the miss, for at most "
              f"{a.refine_rounds} rounds or until every answer is predicted within 3% and timed within its target; "
              "all methods alike. " + refine_outcome(seeds) + " 'predicted' is that table's prediction."
              + (f" Evaluated in this run: {a.only.replace(',', ', ')}." if a.only else ""), "",
              ""] + claim_lines(claim(work, seeds), seeds) + ["",
              "### Per target (for reference: these compare at the same target, not at equal latency)", "",
              "Top-1 (%) is the mean over seeds, each seed's value in brackets.", "",
              "| target | method | measured ms | predicted ms | top-1 inherited | top-1 fine-tuned | params | MMACs |",
              "|---|---|---|---|---|---|---|---|"]
    for t in targets:
        for m in methods:
            cs = [c for s in seeds for c in s["configs"] if c["target_mult"] == t["mult"] and c["method"] == m]
            ok = [c for c in cs if c.get("widths") is not None and c.get("measured_ms") is not None]
            if not ok:
                lines.append(f"| {t['mult']}x ({t['measured_ms']:.3f} ms) | {m} | infeasible | | | | | |")
                continue
            lines.append(
                f"| {t['mult']}x ({t['measured_ms']:.3f} ms) | {m} | {np.mean([c['measured_ms'] for c in ok]):.3f} | "
                f"{np.mean([c['predicted_ms'] for c in ok]):.3f} | {_pm([c['inherited_top1'] for c in ok])} | "
                f"{_pm([c['finetuned_top1'] for c in ok])} | {np.mean([c['params'] for c in ok]) / 1e6:.2f} M | "
                f"{np.mean([c['macs'] for c in ok]) / 1e6:.1f} |")

    def diff(key, which):
        v = [float(np.mean(b[which][key])) for b in per_seed if b[which].get(key)]
        return "n/a" if not v else (f"{np.mean(v):+.2f}" + (f" ({', '.join(f'{x:+.2f}' for x in v)})"
                                                            if len(v) > 1 else ""))

    def per_target(key, which):
        rows = [b[which].get(key) for b in per_seed if b[which].get(key)]
        if not rows:
            return "n/a"
        m = np.mean(np.array(rows), axis=0)
        return ", ".join(f"{t['mult']}x {x:+.2f}" for t, x in zip(targets, m))

    lines += ["", "Differences at the same target (mean over the targets, then over seeds; each seed in brackets):",
              "",
              "| comparison | inherited | fine-tuned | per target, fine-tuned | bar (fine-tuned) |",
              "|---|---|---|---|---|"]
    for key, label, bar in (("exact-uniform", "exact minus uniform", ">= +1.5"),
                            ("ows-uniform", "ows minus uniform", ">= +1.5"),
                            ("exact-greedy", "exact minus greedy", ">= +0.5"),
                            ("ows-greedy", "ows minus greedy", ">= +0.5"),
                            ("aows-ows", "aows minus ows", ">= +0.5 at 0.75x"),
                            ("aows-exact-exact", "aows-exact minus exact (both solved exactly)", ""),
                            ("exact-mean-uniform", "exact-mean minus uniform", ""),
                            ("exact-exact-mean", "exact minus exact-mean (the estimator)", ""),
                            ("exact-exact-train", "exact minus exact-train (the probe)", "")):
        if any(b["finetuned_top1"].get(key) for b in per_seed):
            lines.append(f"| {label} | {diff(key, 'inherited_top1')} | {diff(key, 'finetuned_top1')} | "
                         f"{per_target(key, 'finetuned_top1')} | {bar}"
                         + (" (judged at equal latency above)" if bar else "") + " |")
    worst = max((b["max_measured_over_target"] or 0) for b in per_seed)
    worst_pred = max((b["max_abs_measured_vs_predicted"] or 0) for b in per_seed)
    n_ok = sum(b["within_5pct_of_prediction"][0] for b in per_seed)
    n_all = sum(b["within_5pct_of_prediction"][1] for b in per_seed)
    ex = [b for b in per_seed if b.get("max_export_over_target")]
    drift = [x for b in per_seed for x in b.get("uniform_vs_target", [])]
    lines += ["", "Measured = every network timed again back to back at the end of its seed's run ("
              + "; ".join(f"seed {s['seed']}: {load_sentence(s.get('quiet_load_avg') or [])}" for s in seeds)
              + "; the exported .tflite where saved, else the same network cut from the template); export = timed "
              "right after its export, minutes apart.", "",
              f"- worst measured latency / target over all exported models: {worst:.3f} (bar: <= 1.05: "
              f"{verdict(worst, '<= 1.05')})"
              + (f"; at export time: {max(b['max_export_over_target'] for b in ex):.3f}" if ex else ""),
              f"- the same against the uniform network that defines the target, timed in the same pass"
              + (f" (those uniform networks timed {min(drift):.3f}-{max(drift):.3f}x the targets measured before "
                 f"training)" if drift else "") + ": worst "
              f"{max(b['max_over_uniform_same_pass'] or 0 for b in per_seed):.3f}",
              f"- worst |measured / predicted - 1| over all exported fp32 models: {100 * worst_pred:.1f}%, "
              f"{n_ok}/{n_all} within +-5% (bar: all within 5%: {'pass' if n_ok == n_all else 'fail'})"
              + (f"; at export time: {100 * max(b['max_abs_export_vs_predicted'] for b in ex):.1f}%" if ex else ""),
              "- the same with both sides divided by the target's uniform network (same pass): "
              + ", ".join(f"seed {s['seed']}: {sum(e <= 0.05 for e in b['same_pass_pred_errors'])}/"
                          f"{len(b['same_pass_pred_errors'])} within +-5%, worst "
                          f"{100 * b['same_pass_pred_errors'][0]:.1f}%"
                          for s, b in zip(seeds, per_seed) if b["same_pass_pred_errors"]),
              "",
              (f"Latency table: fitted on {a.plan_count} stratified samples and the ladder, validated on "
               f"{a.val_count} random configurations and the ladder: RMSE {fit['rmse_ms']:.4f} ms, "
               f"{100 * fit['within_5pct']:.1f}% within +-5%, {100 * fit['within_10pct']:.1f}% within +-10%, max "
               f"error {100 * fit['max_rel_err']:.1f}%.")
              if fit else "",
              "Then refined per seed on the solver's own answers (tfwidth/refine.py: every method's configuration "
              "for every target timed here, plus random neighbours, added to the fit and refitted; answers over "
              "their target re-aimed): " + "; ".join(
                  f"seed {s['seed']}: " + " ".join(refine_lines(s.get("table"))) for s in seeds) + ".", "",
              "Stage wall times: " + "; ".join(f"seed {s['seed']}: " + ", ".join(
                  f"{k} {v / 60:.1f} min" for k, v in (s.get("times") or {}).items()) for s in seeds), "",
              f"![accuracy vs measured latency]({plot_name(a)})", "",
              "Per seed and configuration:", "",
              "| seed | target | method | aimed ms | measured ms | export ms | predicted ms | inherited | fine-tuned | widths |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s in seeds:
        for c in s["configs"]:
            if c.get("widths") is None or c.get("measured_ms") is None:
                continue
            lines.append(f"| {s['seed']} | {c['target_mult']}x | {c['method']} | {c.get('aim_ms', c['target_ms']):.3f} | "
                         f"{c['measured_ms']:.3f} | {c.get('export_ms') or c['measured_ms']:.3f} | "
                         f"{c['predicted_ms']:.3f} | {100 * c['inherited_top1']:.2f} | "
                         f"{100 * c['finetuned_top1']:.2f} | {','.join(map(str, c['widths']))} |")
    if any(s.get("curve") for s in seeds):
        lines += ["", "The uniform curve (OWS supernet's weights; every network timed in its seed's final pass):", "",
                  "| multiplier | measured ms | predicted ms | inherited | fine-tuned | validation loss increase |",
                  "|---|---|---|---|---|---|"]
        for m in curve_mults(a):
            cs = [c for s in seeds for c in s.get("curve", []) if c["mult"] == m and c.get("measured_ms")]
            if cs:
                lines.append(f"| {m}x | {np.mean([c['measured_ms'] for c in cs]):.3f} | "
                             f"{np.mean([c['predicted_ms'] for c in cs]):.3f} | "
                             f"{_pm([c['inherited_top1'] for c in cs])} | {_pm([c['finetuned_top1'] for c in cs])} | "
                             f"{_pm([c.get('val_delta') for c in cs], 1.0, 4)} |")
    lines.append("")
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode())
    runs = [(space.name, seeds, targets)] + other_runs(a.plot_with)
    plot(path.parent / plot_name(a), runs, methods, dataset_label(a))
    print(text)
    print(f"report: {_cache.relative(path)} (and {plot_name(a)} beside it)")
    if update_docs:  # deliberate: the repository's docs change only when asked
        docs = ROOT / "docs" / "benchmarks.md"
        atomic_write_bytes(docs, splice_section(docs.read_text() if docs.exists() else "", text,
                                                section_marker(a)).encode())
        png = docs.parent / plot_name(a)
        plot(png, runs, methods, dataset_label(a))
        print(f"updated docs/benchmarks.md ({section_marker(a)[3:]} section) and docs/{png.name}")


def splice_section(old: str, text: str, marker: str = "## End-to-end:") -> str:
    """``old`` with this benchmark's section (from ``marker`` up to the next "## ") replaced by the one in ``text``."""
    new = text[text.index(marker):] if marker in text else text
    if marker not in old:
        return (old.rstrip() + "\n\n" + new) if old.strip() else text
    head, _, rest = old.partition(marker)
    tail = rest[rest.find("\n## ", 1):] if "\n## " in rest[1:] else ""
    return head.rstrip() + "\n\n" + new.rstrip("\n") + "\n" + tail


def _arch_tag(a) -> str:
    """"" for the default architecture (its sections and plots keep their names), else its name."""
    arch = presets()[a.preset][0]
    return "" if arch == DEFAULT_ARCH else arch


def section_marker(a) -> str:
    """The heading that starts this run's section of docs/benchmarks.md: one section per kind of data and
    architecture, so the folder run does not overwrite the CIFAR-10 one, nor MobileNetV2's MobileNetV1's."""
    tag = f" ({_arch_tag(a)})" if _arch_tag(a) else ""
    return f"## End-to-end{tag}:" if dataset_spec(a.data).startswith("npz:") else f"## End-to-end{tag} through folder:"


def test_images(a) -> str:
    """The test set as the report names it."""
    if dataset_spec(a.data).startswith("npz:"):
        return f"the first {a.eval_limit} test images"
    return f"{a.eval_limit} images of the folder's val/ (a fixed random subset when it holds more)"


def plot_name(a) -> str:
    tag = f"_{_arch_tag(a)}" if _arch_tag(a) else ""
    return f"benchmarks_e2e{tag}.png" if dataset_spec(a.data).startswith("npz:") else f"benchmarks_e2e{tag}_folder.png"


def data_name(a) -> str:
    """--data by its file or folder name (no machine's paths in a report)."""
    spec = dataset_spec(a.data)
    return Path(spec.partition(":")[2]).name


def other_runs(works) -> list[tuple]:
    """(name, seeds, targets) of each other work directory (--plot-with), for the plot: its space's name, and the seeds
    evaluated with the same arguments as its newest one."""
    out = []
    for w in works or ():
        w = Path(w)
        seeds, _ = load_seeds(w)
        if not seeds or not (w / "targets.json").exists():
            _cache.usage_error(f"--plot-with {w}: no evaluated seed there (WORK/seedN/configs.json and targets.json)")
        key = seeds[-1].get("report_key")
        name = read_json(w / "space.json")["name"] if (w / "space.json").exists() else w.name
        out.append((name, [s for s in seeds if s.get("report_key") == key], read_json(w / "targets.json")["targets"]))
    return out


def plot(path, runs, methods, label: str = "CIFAR-10"):
    """Accuracy against measured latency, inherited and fine-tuned: for each run (name, seeds, targets) its methods'
    answers per target (mean, range over seeds) and its uniform curve; with several runs (architectures) each name
    prefixes its labels and its uniform curve gets its own line style."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    axes[0].set_xscale("log")
    marks = {"uniform": "s", "greedy": "^", "ows": "o", "exact": "x", "aows": "D", "aows-exact": "d",
             "exact-mean": "v"}
    styles = ("-", "--", ":", "-.")
    n_seeds = max(len(seeds) for _, seeds, _ in runs)
    for ax, key, title in ((axes[0], "inherited_top1", "inherited weights + BN recalibration"),
                           (axes[1], "finetuned_top1", "after the same short fine-tuning")):
        for r, (name, seeds, targets) in enumerate(runs):
            prefix = f"{name}: " if len(runs) > 1 else ""
            for m in methods:
                pts = []
                for t in targets:
                    cs = [c for s in seeds for c in s["configs"] if c["target_mult"] == t["mult"] and c["method"] == m
                          and c.get(key) is not None and c.get("measured_ms")]
                    if cs:
                        v = [100 * c[key] for c in cs]
                        pts.append((np.mean([c["measured_ms"] for c in cs]), np.mean(v), np.mean(v) - min(v),
                                    max(v) - np.mean(v)))
                if pts:
                    x, y, lo, hi = map(np.array, zip(*pts))
                    ax.errorbar(x, y, yerr=[lo, hi], marker=marks.get(m, "."), capsize=3, label=prefix + m,
                                ls=styles[r % len(styles)])
            cur = {}
            for s in seeds:
                for c in s.get("curve", []):
                    if c.get(key) is not None and c.get("measured_ms"):
                        cur.setdefault(c["mult"], []).append((c["measured_ms"], 100 * c[key]))
            if cur:
                xs = sorted((np.mean([v[0] for v in vs]), np.mean([v[1] for v in vs])) for vs in cur.values())
                ax.plot(*zip(*xs), color="grey", lw=1.2, marker=".", ls=styles[r % len(styles)],
                        label=prefix + "uniform curve")
            for t in targets:
                ax.axvline(t["measured_ms"], color="grey", lw=0.6, ls=":")
        ax.set_title(title + (f" (mean, range over {n_seeds} seeds)" if n_seeds > 1 else ""), fontsize=9)
        ax.set_xlabel("measured latency on this CPU (ms)")
        ax.set_ylabel(f"{label} top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7 if len(runs) > 1 else None)
    fig.tight_layout()
    buf = __import__("io").BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())


if __name__ == "__main__":
    sys.exit(main())
