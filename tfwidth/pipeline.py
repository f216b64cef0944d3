"""The whole flow in one command, with this machine's CPU as the device:

  space -> template + plans -> profile (device_profiler) -> fit (table) -> train supernet (OWS or --aows)
        -> refine (time the solver's answers, refit) -> solve (all methods) -> export (.tflite) -> measure

    python -m tfwidth.pipeline                      # offline default: digits, cifar-sized space, this CPU
    python -m tfwidth.pipeline --dataset npz:../shared/data/cifar10.npz --epochs 20 --work cifar_work

Every stage is the stage's own CLI, run in-process with the arguments it prints, so any stage can be re-run by hand
from the log. A stage whose outputs exist and whose arguments match the record in WORK/pipeline.json is skipped, so a
killed run started again resumes (and the profiler and trainer resume inside their own stage too).
"""
from __future__ import annotations

import json
import math
import shlex
import sys
import time
from pathlib import Path

import tfwidth  # noqa: F401
from tfwidth.artifacts import read_json, write_json
from device_profiler.checks import count, cpu_list, number, output_dir
from tfwidth.errors import ArgumentParser, UsageError, run_cli
from tfwidth.space import SearchSpace, preset


class Pipeline:
    def __init__(self, work: Path, space_hash: str, dry: bool = False):
        self.work = work
        self.work.mkdir(parents=True, exist_ok=True)
        self.record_path = work / "pipeline.json"
        doc = read_json(self.record_path, "pipeline record") if self.record_path.exists() else {}
        if doc.get("space_hash") not in (None, space_hash):
            raise UsageError(f"{work} holds the work of another space ({doc['space_hash']}, here {space_hash}); "
                             f"use another --work directory")
        self.doc = {"kind": "pipeline", "space_hash": space_hash, "stages": doc.get("stages", {})}
        self.record = self.doc["stages"]
        self.dry = dry
        self.times = {}

    def stage(self, name: str, module: str, argv: list, outputs: list, resume_flag: str | None = None) -> bool:
        """Run `python -m module argv` unless its outputs exist from a run with the same arguments."""
        argv = [str(a) for a in argv]
        prev = self.record.get(name)
        if prev and prev.get("argv") == argv and all(Path(o).exists() for o in outputs):
            print(f"[{name}] up to date, skipped")
            return False
        if resume_flag and prev and prev.get("argv") == argv:
            argv = argv + [resume_flag]
        shown = module.removesuffix(".__main__")
        print(f"[{name}] python -m {shown} {' '.join(shlex.quote(a) for a in argv)}", flush=True)
        if self.dry:
            return True
        t0 = time.time()
        mod = __import__(module, fromlist=["main"])
        self.record[name] = {"argv": [a for a in argv if a != resume_flag], "done": False}
        write_json(self.record_path, self.doc)
        rc = mod.main(argv)
        if rc:
            raise UsageError(f"stage {name} failed (exit {rc}); fix the cause and run the pipeline again to resume")
        self.times[name] = time.time() - t0
        self.record[name] = {"argv": [a for a in argv if a != resume_flag], "done": True,
                             "seconds": round(self.times[name], 1)}
        write_json(self.record_path, self.doc)
        return True


def default_target(space: SearchSpace, table_path: Path, mult: float) -> float:
    """The table's prediction of the uniform ``mult`` network, rounded up to 0.1 us so that network still meets it."""
    from tfwidth.latency import LatencyTable
    table = LatencyTable.load(table_path, space)
    return math.ceil(float(table.predict(space.uniform(mult))) * 1e4) / 1e4


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m tfwidth.pipeline", description=(
        "Run every stage of tfwidth with this machine's CPU as the device: profile the latency table, train the "
        "supernet, solve the widths for a latency target, export and measure the .tflite. With no arguments it runs "
        "the offline default (scikit-learn digits) in about 15 minutes here. Re-running resumes."))
    p.add_argument("--work", default="work", type=output_dir, help="directory for every artefact (default: ./work)")
    p.add_argument("--dataset", default="digits", help="digits (default), npz:PATH, folder:PATH or tfds:NAME")
    p.add_argument("--preset", default="mobilenet_v1_cifar", help="search space preset (default mobilenet_v1_cifar)")
    p.add_argument("--space", help="an existing space.json instead of --preset")
    p.add_argument("--resolution", type=count(1, 8192), help="input resolution of the space (default: the preset's)")
    p.add_argument("--target-ms", type=number(0, 1e6, lo_open=True), help="latency target; default: the table's prediction of the "
                                                   "uniform --target-mult network")
    p.add_argument("--target-mult", type=number(0, 100, lo_open=True), default=0.5, help="see --target-ms (default 0.5)")
    p.add_argument("--device-samples", help="samples.jsonl timed on a real device: skip profiling this machine")
    p.add_argument("--device-val", help="validation samples from the same device (default: 10%% holdout)")
    p.add_argument("--plan-count", type=count(1, 10**6), default=400, help="configurations to time for the fit (default 400)")
    p.add_argument("--val-count", type=count(1, 10**6), default=100, help="random configurations to validate the fit (default 100)")
    p.add_argument("--runs", type=count(1, 10**6), default=30, help="timed invokes per configuration (default 30: the default "
                                                       "space's networks take well under a millisecond here)")
    p.add_argument("--cpus", default="0", type=cpu_list, help="CPU cores to pin the profiler to (default 0; 'none' to not pin)")
    p.add_argument("--epochs", type=count(1, 10**5), default=8, help="supernet training epochs (default 8)")
    p.add_argument("--batch-size", type=count(1, 1 << 20), default=64)
    p.add_argument("--train-limit", type=count(1), help="train (and fine-tune) on the first N training images only")
    p.add_argument("--sampling", default="all-layers", choices=("one-layer", "all-layers"))
    p.add_argument("--aows", action="store_true", help="adaptive sampling from the MRF marginals (needs the table "
                                                       "and target before training: they are computed first)")
    p.add_argument("--probe-holdout", action="store_true", help="keep 512 training images out of supernet "
                   "training and probe the supernet on them (tfwidth.train --probe-holdout; for real datasets)")
    p.add_argument("--method", default="all", choices=("ows", "exact", "greedy", "uniform", "all"))
    p.add_argument("--finetune-epochs", type=count(0, 10**5), default=2, help="fine-tuning epochs of the exported model")
    p.add_argument("--format", default="fp32", choices=("fp32", "fp16", "int8", "qat"))
    p.add_argument("--seed", type=count(0, 2**31 - 2), default=0)
    p.add_argument("--no-refine", action="store_true", help="solve with the fitted table as it is (default: time the "
                                                             "solver's answers here and refit, tfwidth/refine.py)")
    p.add_argument("--dry-run", action="store_true", help="print the stage commands without running them")
    a = p.parse_args(argv)

    work = Path(a.work)
    t_start = time.time()

    # 1. space
    if a.space:
        space = SearchSpace.load(a.space)
    else:
        space = preset(a.preset, resolution=a.resolution)
    space_path = work / "space.json"
    if space_path.exists() and SearchSpace.load(space_path) != space:
        raise UsageError(f"{work} holds the work of another space ({SearchSpace.load(space_path).space_hash}, "
                         f"here {space.space_hash}); use another --work directory")
    pl = Pipeline(work, space.space_hash, a.dry_run)
    space.save(space_path)
    print(space.describe())

    # 2-5. latency table
    table = work / "table.json"
    template_format = "int8" if a.format in ("int8", "qat") else "fp32"
    if a.device_samples:
        fit_args = ["fit", a.device_samples, "--space", space_path, "-o", table, "--plot", work / "fit.png"]
        fit_args += ["--validation", a.device_val] if a.device_val else ["--holdout", "0.1"]
    else:
        tpl = work / "template.tflite"
        pl.stage("template", "tfwidth.profile",
                 ["template", "--space", space_path, "-o", tpl, "--quantize", "int8" if template_format == "int8"
                  else "none", "--seed", a.seed], [tpl, tpl.with_suffix(".json")])
        pl.stage("plan", "tfwidth.profile", ["plan", "--space", space_path, "--count", a.plan_count, "--kind",
                                             "biased", "--seed", a.seed, "-o", work / "plan.json"], [work / "plan.json"])
        pl.stage("val_plan", "tfwidth.profile", ["plan", "--space", space_path, "--count", a.val_count, "--kind",
                                                 "random", "--seed", a.seed + 1, "-o", work / "val_plan.json"],
                 [work / "val_plan.json"])
        pin = [] if a.cpus == "none" else ["--cpus", a.cpus]
        # The reference is timed on its own every few samples, not paired with each (--paired-reference): paired
        # invokes share the caches, and at 32 px the reference read 0.85 ms beside the widest network, 0.69 beside the
        # 0.5x one and 0.65 alone (tools/bench_reference.py), so dividing by it scaled small networks up (this
        # pipeline's table then predicted its exported model 16% slower than it ran, 0.184 vs 0.159 ms; the CIFAR
        # benchmark, unpaired, within 2%).
        for name, plan, out in (("profile", "plan.json", "samples.jsonl"), ("profile_val", "val_plan.json", "val.jsonl")):
            pl.stage(name, "device_profiler.__main__",
                     ["--template", tpl, "--plan", work / plan, "--out", work / out, "--threads", 1, "--runs", a.runs,
                      "--no-progress"] + pin, [work / out])
        fit_args = ["fit", work / "samples.jsonl", "--space", space_path, "--validation", work / "val.jsonl", "-o", table,
                    "--plot", work / "fit.png"]
    pl.stage("fit", "tfwidth.latency", fit_args, [table])

    target = a.target_ms
    if target is None:
        target = default_target(space, table, a.target_mult) if table.exists() else None
        if target is not None:
            print(f"latency target: {target} ms (the table's prediction of the uniform {a.target_mult}x network)")

    # 6. supernet
    run = work / "run"
    train_args = ["--space", space_path, "--dataset", a.dataset, "--epochs", a.epochs, "--batch-size", a.batch_size,
                  "--sampling", a.sampling, "--seed", a.seed, "--out", run]
    if a.train_limit:
        train_args += ["--train-limit", a.train_limit]
    if a.probe_holdout:
        train_args += ["--probe-holdout"]
    if a.aows:
        train_args += ["--aows", "--latency", table, "--target-ms", target]
    pl.stage("train", "tfwidth.train", train_args, [run / "stats.json"], resume_flag="--resume")

    # 7. refine the table on the solver's own answers, timed here (tfwidth/refine.py): the fitted table is smoothest
    # exactly where the solver likes to go, and its miss there is what the exported model pays
    if a.device_samples:
        print("[refine] skipped: the samples come from another device (--device-samples) and refinement times the "
              "candidates on this machine; run python -m tfwidth.latency refine on that device")
    elif a.no_refine:
        print("[refine] skipped (--no-refine)")
    else:
        refined = work / "table_refined.json"
        pl.stage("refine", "tfwidth.latency", ["refine", "--table", table, "--samples", work / "samples.jsonl",
                                               "--template", work / "template.tflite", "--stats", run / "stats.json",
                                               "--target-ms", target, "--validation", work / "val.jsonl",
                                               "-o", refined] + ([] if a.cpus == "none" else ["--cpus", a.cpus]),
                 [refined])
        table = refined
        if a.target_ms is None and target is not None:
            from tfwidth import mrf
            from tfwidth.latency import LatencyTable
            fastest = mrf.min_total(LatencyTable.load(table, space).chain())[1]
            if fastest > target:
                # the derived target is "the table's prediction of the uniform network": when the refined table puts
                # it below every configuration (tiny networks near the timer's resolution), derive it again there
                target = default_target(space, table, a.target_mult)
                print(f"latency target: {target} ms (the refined table's prediction of the uniform "
                      f"{a.target_mult}x network; the fitted table's was below the refined table's fastest)")

    # 8. solve
    widths = work / "widths.json"
    # With this CPU as the device the answer is timed too and re-aimed if it runs over the target (the budget is
    # a measured one); samples from another device can only be checked there (device_profiler --benchmark).
    verify = [] if a.device_samples else ["--verify-template", work / "template.tflite"] + (
        [] if a.cpus == "none" else ["--cpus", a.cpus])
    pl.stage("solve", "tfwidth.solve", ["--stats", run / "stats.json", "--latency", table, "--target-ms", target,
                                        "--method", a.method, "-o", widths] + verify, [widths])

    # 9. export and measure
    model = work / f"model_{a.format}.tflite"
    pl.stage("export", "tfwidth.export", ["--widths", widths, "--run", run, "--dataset", a.dataset, "--init",
                                          "supernet", "--epochs", a.finetune_epochs, "--format", a.format,
                                          "--latency", table, "-o", model]
             + (["--train-limit", a.train_limit] if a.train_limit else []), [model])
    if a.dry_run:
        return 0

    # 10. the final table
    print_summary(work, model, time.time() - t_start)
    return 0


def print_summary(work: Path, model: Path, seconds: float) -> None:
    w = read_json(work / "widths.json", "widths")
    rows = w.get("results") or [w]
    print(f"\n=== tfwidth: target {w.get('target_ms')} ms on this CPU ({work}) ===")
    print(f"{'method':<8} {'predicted ms':>12} {'objective':>10} {'params':>9} {'MMACs':>7}  widths")
    for r in rows:
        if r.get("widths") is None:
            print(f"{r['method']:<8} {'infeasible':>12}")
            continue
        print(f"{r['method']:<8} {r['predicted_ms']:>12.3f} {r['objective']:>10.4f} {r['params']:>9} "
              f"{r['macs'] / 1e6:>7.1f}  {','.join(map(str, r['widths']))}")
    report_path = model.with_suffix(".report.json")
    if report_path.exists():
        rep = json.loads(report_path.read_text())
        lat = rep.get("latency") or {}
        measured = (lat.get("measured") or {}).get("ms", {}).get("min")
        print(f"\nexported {model} ({rep.get('method')}, {rep.get('format')}): top-1 .tflite "
              f"{100 * rep['tflite']['top1']:.2f}% (Keras {100 * rep['keras']['top1']:.2f}%), "
              f"{rep['size_bytes'] / 1024:.0f} KiB")
        if measured is not None:
            pred = lat.get("predicted_ms")
            print(f"latency on this CPU: measured {measured:.3f} ms, table predicts "
                  f"{'n/a' if pred is None else f'{pred:.3f}'} ms, target {lat.get('target_ms')} ms")
    print(f"\nwall time {seconds / 60:.1f} min; stage times in {work / 'pipeline.json'}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
