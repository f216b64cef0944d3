"""The whole flow in one command, with this machine's CPU as the device:

  space -> template + plans -> profile (device_profiler) -> fit (table) -> train supernet (OWS or --aows)
        -> refine (time the solver's answers, refit) -> solve (all methods) -> export (.tflite) -> measure

    python -m tfwidth.pipeline                      # offline default: digits, cifar-sized space, this CPU
    python -m tfwidth.pipeline --dataset npz:../shared/data/cifar10.npz --epochs 20 --work cifar_work

Every stage is the stage's own CLI, run in-process with the arguments it prints, so any stage can be re-run by hand
from the log. WORK/pipeline.json records each stage's arguments, the size and sha256 of the files it read when it
started, and, once it finished, "done": true with the size and sha256 of the files it wrote. A stage is skipped only
when that record matches: finished, same arguments, same inputs, outputs unchanged; otherwise it runs again and says
why in one line (so editing or deleting an artefact redoes its stage, and the stages after it follow since their
inputs changed). A killed run started again resumes: stages that finished are skipped, the interrupted one continues
inside itself where it can (the trainer and the export's fine-tuning from their last finished epoch, the profiler
appending to its samples) and is redone from scratch otherwise. A record without fingerprints (an older tfwidth)
redoes its stage.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shlex
import shutil
import sys
import time
from pathlib import Path

import tfwidth  # noqa: F401
from device_profiler import console
from device_profiler.checks import count, cpu_list, number, output_dir
from tfwidth.arch import DEFAULT_PRESET
from tfwidth.artifacts import fingerprint, read_json, write_json
from tfwidth.errors import ArgumentParser, UsageError, run_cli
from tfwidth.space import SearchSpace, preset


class Pipeline:
    """The stage runner: WORK/pipeline.json records, per stage, its arguments, whether it finished, and the size and
    sha256 of the files it read (at its start) and wrote (at its end)."""

    def __init__(self, work: Path, space_hash: str, dry: bool = False):
        self.work = work
        self.work.mkdir(parents=True, exist_ok=True)
        self.record_path = work / "pipeline.json"
        doc = read_json(self.record_path, "pipeline record") if self.record_path.exists() else {}
        if doc.get("space_hash") not in (None, space_hash):
            raise UsageError(f"{work} holds the work of another space ({doc['space_hash']}, here {space_hash}); "
                             f"use another --work directory")
        stages = doc.get("stages")
        self.doc = {"kind": "pipeline", "space_hash": space_hash, "stages": stages if isinstance(stages, dict) else {}}
        self.record = self.doc["stages"]
        self.dry = dry
        self.times = {}

    @staticmethod
    def stale(prev: dict, argv: list, inputs: dict, outputs: list) -> str | None:
        """Why a stage with record ``prev`` must run again (None: it finished with these arguments, inputs and
        outputs). "interrupted" means it started with the same arguments and inputs and did not finish."""
        if not isinstance(prev, dict) or not prev:
            return "not run yet"
        if shown_only(prev.get("argv")) != shown_only(argv):
            return "its arguments changed"
        if not isinstance(prev.get("inputs"), dict):
            return "its record predates input and output fingerprints"
        for path, fp in inputs.items():
            if prev["inputs"].get(path) != fp:
                return f"input {path} {'is missing' if fp is None else 'changed'} since it ran"
        if set(prev["inputs"]) != set(inputs):
            return "its inputs changed"
        if not prev.get("done"):
            return "interrupted"
        if not isinstance(prev.get("outputs"), dict):
            return "its record predates input and output fingerprints"
        for o in outputs:
            was, now = prev["outputs"].get(str(o)), fingerprint(o)
            if was is None or now != was:
                return f"output {o} {'was deleted' if now is None else 'changed'} since it finished"
        return None

    def stage(self, name: str, module: str, argv: list, outputs: list, *, inputs: list = (),
              resume_flag: str | None = None, resumable=None, partial: list = ()) -> bool:
        """Run `python -m module argv` unless it finished with the same arguments, inputs and outputs; True if run.

        outputs: the files whose content the finished stage left (fingerprinted when it returns). inputs: the files
        it reads (fingerprinted when it starts); any change runs it again. An interrupted stage (same arguments and
        inputs, not finished) resumes when ``resumable()`` says its partial run left something to continue from: it
        runs again with ``resume_flag`` appended if it has one (the profiler has none: it appends to its output).
        Every other run starts from scratch: ``partial`` (files or directories of an earlier run that the stage would
        refuse or build on) is deleted first.
        """
        argv = [str(a) for a in argv]
        prev = self.record.get(name)
        ins = {str(p): fingerprint(p) for p in inputs}
        why = self.stale(prev, argv, ins, outputs)
        if why is None:
            print(f"[{name}] up to date, skipped")
            return False
        resume = why == "interrupted" and resumable is not None and bool(resumable())
        if why == "interrupted":
            print(f"[{name}] interrupted: " + ("resuming" if resume else "nothing to resume from, starting over"))
        elif why != "not run yet":
            print(f"[{name}] running again: {why}")
        run_argv = argv + [resume_flag] if resume and resume_flag else argv
        shown = module.removesuffix(".__main__")
        print(f"[{name}] python -m {shown} {' '.join(shlex.quote(a) for a in run_argv)}", flush=True)
        if self.dry:
            return True
        if not resume:
            for p in map(Path, partial):
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        t0 = time.time()
        self.record[name] = {"argv": argv, "done": False, "inputs": ins}
        write_json(self.record_path, self.doc)
        mod = __import__(module, fromlist=["main"])
        rc = mod.main(run_argv)
        if rc:
            raise UsageError(f"stage {name} failed (exit {rc}); fix the cause and run the pipeline again to resume")
        self.times[name] = time.time() - t0
        self.record[name] = {"argv": argv, "done": True, "seconds": round(self.times[name], 1), "inputs": ins,
                             "outputs": {str(o): fingerprint(o) for o in outputs}}
        write_json(self.record_path, self.doc)
        print(wrote_line(name, outputs, self.times[name], self.work), flush=True)
        return True


# Flags that change only what a stage shows on the console, not what it writes: a record that differs from the
# arguments only in these still matches (a work directory profiled with --no-progress is not profiled again)
DISPLAY_FLAGS = ("--no-progress", "--quiet")


def shown_only(argv):
    """``argv`` without DISPLAY_FLAGS (anything but a list as it is)."""
    return [a for a in argv if a not in DISPLAY_FLAGS] if isinstance(argv, list) else argv


def wrote_line(name: str, outputs: list, seconds: float, work: Path) -> str:
    """The closing line of stage ``name``: the files it wrote (relative to ``work``, with their sizes) and its time."""
    return console.wrote([o for o in map(Path, outputs) if o.is_file()], seconds, base=work, name=name)


def stop_unless(accepted: bool, stage: str, problem: str, fix: str, flag: str, work=None) -> None:
    """The pipeline's one gate on a stage's verdict: stop with one line naming ``problem``, the ``fix`` and the
    ``flag`` that goes on anyway; with ``accepted`` (that flag given), warn in one line and go on. The stage's output
    stays as it finished, so a rerun with the flag skips the stage. Stopping, it first writes ``work``'s report.html
    with what is there (the fit and its noise floor say why), and the line points at it."""
    if not accepted:
        page = None
        if work is not None:
            from tfwidth.report import write_report
            try:
                page = write_report(Path(work))
            except Exception:  # noqa: BLE001 - the page is a courtesy: the stop line is what matters
                page = None
        where = f" (what was done so far: {page})" if page else ""
        raise UsageError(f"{problem}; {fix}, or add {flag} to go on with it{where}")
    print(f"[{stage}] warning: {problem}; going on ({flag})")


def default_target(space: SearchSpace, table_path: Path, mult: float) -> float:
    """The table's prediction of the uniform ``mult`` network, rounded up to 0.1 us so that network still meets it."""
    from tfwidth.latency import LatencyTable
    table = LatencyTable.load(table_path, space)
    return math.ceil(float(table.predict(space.uniform(mult))) * 1e4) / 1e4


@dataclasses.dataclass
class PipelineRun:
    """What ``run_pipeline`` left in ``work``: the widths.json, the exported model and its report, the latency
    target it solved for (None when it could not be derived: a dry run), and its wall time. A dry run wrote
    nothing of the stages."""
    work: Path
    widths: Path
    model: Path
    report: Path
    target_ms: float | None
    seconds: float
    dry_run: bool = False


def run_pipeline(work="work", *, dataset: str = "digits", preset_name: str = DEFAULT_PRESET, space_file=None,
                 resolution: int | None = None, target_ms: float | None = None, target_mult: float = 0.5,
                 device_samples=None, device_val=None, plan_count: int = 400, val_count: int = 100, runs: int = 30,
                 cpus: str = "0", epochs: int = 8, batch_size: int = 64, train_limit: int | None = None,
                 sampling: str = "all-layers", aows: bool = False, probe_holdout: bool = False,
                 probe_configs: int | None = None, method: str = "all", finetune_epochs: int = 2, fmt: str = "fp32",
                 seed: int = 0, refine: bool = True, reprofile: bool = False, accept_poor_table: bool = False,
                 refine_rounds: int | None = None, accept_unconverged: bool = False,
                 dry_run: bool = False) -> PipelineRun:
    """Every stage in ``work`` with this machine's CPU as the device (or the timings of ``device_samples``): the
    space (``space_file``, else the ``preset_name`` preset at ``resolution``), template, plans, profile, fit, the
    supernet, the refinement (unless ``refine`` is False), solve and export, each run as its own CLI with the
    arguments it prints (Pipeline.stage: skipped when up to date, resumed when interrupted). The keyword arguments
    are ``python -m tfwidth.pipeline``'s options (``cpus`` as its --cpus text: core numbers or none); see its --help.
    Stops with a UsageError on a table too poor to solve on (unless ``accept_poor_table``, or ``reprofile``: profile
    once more) and on a refinement that ended well off (unless ``accept_unconverged``). Returns where the results
    are (PipelineRun)."""
    options = dict(locals())
    from tfwidth import refine as refine_mod
    work = Path(work)
    t_start = time.time()

    # 1. space
    if space_file:
        space = SearchSpace.load(space_file)
    else:
        space = preset(preset_name, resolution=resolution)
    space_path = work / "space.json"
    if space_path.exists() and SearchSpace.load(space_path) != space:
        raise UsageError(f"{work} holds the work of another space ({SearchSpace.load(space_path).space_hash}, "
                         f"here {space.space_hash}); use another --work directory")
    pl = Pipeline(work, space.space_hash, dry_run)
    space.save(space_path)
    print(space.describe())

    # 2-5. latency table
    table = work / "table.json"
    template_format = "int8" if fmt in ("int8", "qat") else "fp32"
    if device_samples:
        fit_args = ["fit", device_samples, "--space", space_path, "-o", table, "--plot", work / "fit.png"]
        fit_args += ["--validation", device_val] if device_val else ["--holdout", "0.1"]
        fit_inputs = [device_samples] + ([device_val] if device_val else [])
    else:
        tpl = work / "template.tflite"
        pl.stage("template", "tfwidth.profile",
                 ["template", "--space", space_path, "-o", tpl, "--quantize", "int8" if template_format == "int8"
                  else "none", "--seed", seed], [tpl, tpl.with_suffix(".json")], inputs=[space_path])
        pl.stage("plan", "tfwidth.profile", ["plan", "--space", space_path, "--count", plan_count, "--kind",
                                             "stratified", "--seed", seed, "-o", work / "plan.json"],
                 [work / "plan.json"], inputs=[space_path])
        pl.stage("val_plan", "tfwidth.profile", ["plan", "--space", space_path, "--count", val_count, "--kind",
                                                 "random", "--seed", seed + 1, "-o", work / "val_plan.json"],
                 [work / "val_plan.json"], inputs=[space_path])
        pin = [] if cpus == "none" else ["--cpus", cpus]
        # The reference is timed on its own every few samples, not paired with each (--paired-reference): paired
        # invokes share the caches, so at small resolutions the reference reads slower beside a wide network than
        # beside a narrow one and dividing by it scales small networks up (measured: docs/benchmarks.md, "Paired
        # reference at 32 px").
        # The profiler resumes by itself: it appends to --out and skips the plan indices already there
        # (device_profiler/samples.py), so an interrupted profile runs again as it was; any other rerun (a new plan
        # or template, an edited samples file) deletes the old samples first, or they would be kept as timed.
        for name, plan, out in (("profile", "plan.json", "samples.jsonl"), ("profile_val", "val_plan.json", "val.jsonl")):
            pl.stage(name, "device_profiler.__main__",
                     ["--template", tpl, "--plan", work / plan, "--out", work / out, "--threads", 1, "--runs", runs]
                     + pin, [work / out], inputs=[tpl, tpl.with_suffix(".json"), work / plan],
                     resumable=(work / out).is_file, partial=[work / out])
        fit_args = ["fit", work / "samples.jsonl", "--space", space_path, "--validation", work / "val.jsonl", "-o", table,
                    "--plot", work / "fit.png"]
        fit_inputs = [work / "samples.jsonl", work / "val.jsonl"]
    pl.stage("fit", "tfwidth.latency", fit_args, [table], inputs=[space_path] + fit_inputs)
    from tfwidth.latency import poor_table
    poor = None if dry_run else poor_table(table)
    if poor and reprofile and not device_samples:  # once: the flag is dropped for the second round
        print(f"[fit] the table is too poor to solve on ({poor}); --reprofile: deleting the samples and profiling "
              f"again", flush=True)
        for f in (work / "samples.jsonl", work / "val.jsonl", table):
            f.unlink(missing_ok=True)
        return run_pipeline(**dict(options, reprofile=False))
    if poor:
        stop_unless(accept_poor_table, "fit", f"the latency table {table} is too poor to solve on ({poor})",
                    "time them again on a quiet device" if device_samples else
                    "re-run when this machine is quiet, add --reprofile to delete the samples and profile again",
                    "--accept-poor-table", work)

    target = target_ms
    if target is None:
        target = default_target(space, table, target_mult) if table.exists() else None
        if target is not None:
            print(f"latency target: {target} ms (the table's prediction of the uniform {target_mult}x network)")

    # 6. supernet
    run = work / "run"
    train_args = ["--space", space_path, "--dataset", dataset, "--epochs", epochs, "--batch-size", batch_size,
                  "--sampling", sampling, "--seed", seed, "--out", run]
    if train_limit:
        train_args += ["--train-limit", train_limit]
    if probe_holdout:
        train_args += ["--probe-holdout"]
    if probe_configs is not None:
        train_args += ["--probe-configs", probe_configs]
    if aows:
        train_args += ["--aows", "--latency", table, "--target-ms", target]
    # Resumed from its last finished epoch when it has a checkpoint (exact: tfwidth/training.py); any other run deletes
    # run/ first: tfwidth.train refuses to start over a checkpointed run, and a stale stats.json must not survive.
    train_inputs = [space_path] + ([table] if aows else []) + (
        [dataset[len("npz:"):]] if dataset.startswith("npz:") else [])
    pl.stage("train", "tfwidth.train", train_args,
             [run / "stats.json", run / "summary.json", run / "ckpt" / "checkpoint.json"], inputs=train_inputs,
             resume_flag="--resume", resumable=(run / "ckpt" / "checkpoint.json").is_file, partial=[run])

    # 7. refine the table on the solver's own answers, timed here (tfwidth/refine.py): the fitted table is smoothest
    # exactly where the solver likes to go, and its miss there is what the exported model pays
    if device_samples:
        print("[refine] skipped: the samples come from another device (--device-samples) and refinement times the "
              "candidates on this machine; run python -m tfwidth.refine on that device")
    elif (not refine):
        print("[refine] skipped (--no-refine)")
    else:
        refined = work / "table_refined.json"
        pl.stage("refine", "tfwidth.refine", ["--table", table, "--samples", work / "samples.jsonl",
                                               "--template", work / "template.tflite", "--stats", run / "stats.json",
                                               "--target-ms", target, "--validation", work / "val.jsonl",
                                               "-o", refined] + ([] if cpus == "none" else ["--cpus", cpus])
                 + ([] if refine_rounds is None else ["--rounds", refine_rounds]),
                 [refined], inputs=[table, work / "samples.jsonl", work / "template.tflite", work / "template.json",
                                    run / "stats.json", work / "val.jsonl"])
        table = refined
        left = None if dry_run else refine_mod.unconverged(refined)
        if left:
            problem = (f"the refinement of the latency table did not converge: its answers are still up to "
                       f"{100 * left['max_abs_err_after']:.1f}% off after {left['rounds']} round(s) (tolerance "
                       f"{100 * left['tol']:g}%), blocked by {left.get('blocked_by', 'something not diagnosed')}: "
                       f"{left.get('diagnosis', 'a table refined by an older tfwidth')}")
            if not left["stop"]:
                print(f"[refine] note: {problem}; within the {100 * refine_mod.stop_at(left['tol']):g}% the pipeline "
                      f"accepts, going on")
            else:
                # the refinement's timings are kept and a rerun with the same arguments would reuse them: to time
                # again on a quiet machine both go; more rounds continue from the rounds already timed
                again = (f"re-run when this machine is quiet after deleting {refined} and its timings "
                         f"{refined.with_suffix('.refine')}/ (a rerun reuses them)")
                fix = {"noise": again, "moving device": again,
                       "model bias": f"raise --refine-rounds (now {refine_rounds or left['max_rounds']}: each round "
                                     f"adds the answers' timings to the fit again)"}.get(
                    left.get("blocked_by"), f"delete {refined} to refine again and learn what blocked it")
                stop_unless(accept_unconverged, "refine", problem, fix, "--accept-unconverged", work)
        if target_ms is None and target is not None:
            from tfwidth import mrf
            from tfwidth.latency import LatencyTable
            fastest = mrf.min_total(LatencyTable.load(table, space).chain())[1]
            if fastest > target:
                # the derived target is "the table's prediction of the uniform network": when the refined table puts
                # it below every configuration (tiny networks near the timer's resolution), derive it again there
                target = default_target(space, table, target_mult)
                print(f"latency target: {target} ms (the refined table's prediction of the uniform "
                      f"{target_mult}x network; the fitted table's was below the refined table's fastest)")

    # 8. solve
    widths = work / "widths.json"
    # With this CPU as the device the answer is timed too and re-aimed if it runs over the target (the budget is
    # a measured one); samples from another device can only be checked there (device_profiler --benchmark).
    verify = [] if device_samples else ["--verify-template", work / "template.tflite"] + (
        [] if cpus == "none" else ["--cpus", cpus])
    pl.stage("solve", "tfwidth.solve", ["--stats", run / "stats.json", "--latency", table, "--target-ms", target,
                                        "--method", method, "-o", widths] + verify, [widths],
             inputs=[run / "stats.json", table]
             + ([work / "template.tflite", work / "template.json"] if verify else []))

    # 9. export and measure
    model = work / f"model_{fmt}.tflite"
    from tfwidth.export import default_paths
    keras_model, report = default_paths(model)

    def export_resumable() -> bool:
        from tfwidth.export import export_work_dir, load_widths
        if not finetune_epochs or not widths.is_file():
            return False
        return (export_work_dir(run, "supernet", load_widths(widths)[1]) / "train" / "checkpoint.json").is_file()

    # The report is renamed into place last (tfwidth/export.py): the export finished when it is there.
    pl.stage("export", "tfwidth.export", ["--widths", widths, "--run", run, "--dataset", dataset, "--init",
                                          "supernet", "--epochs", finetune_epochs, "--format", fmt,
                                          "--latency", table, "-o", model]
             + (["--train-limit", train_limit] if train_limit else []), [report, model, keras_model],
             inputs=[widths, run / "stats.json", run / "ckpt" / "checkpoint.json", table], resume_flag="--resume",
             resumable=export_resumable)
    if not dry_run:  # every run, also when every stage was up to date: cheap, and it shows this run's times
        from tfwidth.report import write_report
        try:
            write_report(work)
        except Exception as e:  # noqa: BLE001 - the page only shows the artefacts, which are all written: go on
            print(f"[report] not written ({type(e).__name__}: {e}); `tfwidth report {work}` tries again")
    return PipelineRun(work, widths, model, report, target, time.time() - t_start, dry_run)




def main(argv=None) -> int:
    from tfwidth import refine as refine_mod
    p = ArgumentParser(prog="python -m tfwidth.pipeline", description=(
        "Run every stage of tfwidth with this machine's CPU as the device: profile the latency table, train the "
        "supernet, solve the widths for a latency target, export and measure the .tflite. With no arguments it runs "
        "the offline default (scikit-learn digits) in about 15 minutes here. Re-running resumes."))
    p.add_argument("--work", default="work", type=output_dir, help="directory for every artefact (default: ./work)")
    p.add_argument("--dataset", default="digits", help="digits (default), npz:PATH, folder:PATH or tfds:NAME")
    p.add_argument("--preset", default=DEFAULT_PRESET, help=f"search space preset (default {DEFAULT_PRESET})")
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
    p.add_argument("--probe-configs", type=count(0, 10**6), help="configurations the trained supernet is probed on "
                   "(tfwidth.train --probe-configs; default: its default)")
    p.add_argument("--method", default="all", choices=("ows", "exact", "greedy", "uniform", "all"))
    p.add_argument("--finetune-epochs", type=count(0, 10**5), default=2, help="fine-tuning epochs of the exported model")
    p.add_argument("--format", default="fp32", choices=("fp32", "fp16", "int8", "qat"))
    p.add_argument("--seed", type=count(0, 2**31 - 2), default=0)
    p.add_argument("--no-refine", action="store_true", help="solve with the fitted table as it is (default: time the "
                                                             "solver's answers here and refit, tfwidth/refine.py)")
    p.add_argument("--reprofile", action="store_true", help="when the fit's verdict is 'too poor to solve on' "
                   "(a busy or throttled device: tfwidth.latency fit), delete the samples and profile once more "
                   "instead of stopping")
    p.add_argument("--accept-poor-table", action="store_true", help="go on with a table the fit judged too poor "
                   "to solve on (default: stop with its figures)")
    p.add_argument("--refine-rounds", type=count(1, 1000), help=f"measurement rounds of the refinement at most "
                   f"(tfwidth.refine --rounds; default {refine_mod.ROUNDS}); a rerun with more continues "
                   f"from the rounds already timed")
    p.add_argument("--accept-unconverged", action="store_true", help="go on to solve with a refined table whose "
                   "loop did not converge (default: when its answers are still more than "
                   f"{100 * refine_mod.stop_at(refine_mod.TOL):g}%% off, stop with what blocked it: noise, a moving "
                   "device or model bias; the solve stage times its answer and re-aims it to the target either way)")
    p.add_argument("--dry-run", action="store_true", help="print the stage commands without running them")
    a = p.parse_args(argv)
    r = run_pipeline(a.work, dataset=a.dataset, preset_name=a.preset, space_file=a.space, resolution=a.resolution,
                     target_ms=a.target_ms, target_mult=a.target_mult, device_samples=a.device_samples,
                     device_val=a.device_val, plan_count=a.plan_count, val_count=a.val_count, runs=a.runs,
                     cpus=a.cpus, epochs=a.epochs, batch_size=a.batch_size, train_limit=a.train_limit,
                     sampling=a.sampling, aows=a.aows, probe_holdout=a.probe_holdout,
                     probe_configs=a.probe_configs, method=a.method, finetune_epochs=a.finetune_epochs,
                     fmt=a.format, seed=a.seed, refine=not a.no_refine, reprofile=a.reprofile,
                     accept_poor_table=a.accept_poor_table, refine_rounds=a.refine_rounds,
                     accept_unconverged=a.accept_unconverged, dry_run=a.dry_run)
    if not r.dry_run:
        print_summary(r.work, r.model, r.seconds)
    return 0


def print_summary(work: Path, model: Path, seconds: float) -> None:
    """Print the pipeline's outcome from the files in ``work``: each method's answer, the exported ``model``'s
    accuracy and timing against the table, and the wall time."""
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
    if (work / "report.html").is_file():
        print(f"report: {work / 'report.html'} (open it in a browser)")


if __name__ == "__main__":
    sys.exit(run_cli(main))
