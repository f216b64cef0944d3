"""Profile one plan on a fleet of identical devices in parallel, merge their samples, fit, and compare the merged
table with one device's (issue 22). The "devices" are the cores of this machine: one device_profiler process pinned
to each core of --cpus, each timing its own shard of the plan (--shard i/n). docs/fleet.md does the same over ssh
to Raspberry Pis.

    python tools/fleet_profile.py --template work/template.tflite --plan work/plan.json --cpus 0,1 \
        --validation-plan work/val_plan.json --out fleet/ [-- device_profiler options, e.g. --runs 10]

In --out, in this order (each step resumes where it stopped when the command is run again, as device_profiler
does; the merge and the fits are redone from what is there):
  1. shard-I-of-N.jsonl (+ .log): shard I of the plan timed on the I-th core of --cpus, all shards at once;
  2. fleet.jsonl: the shards' records concatenated (checked: each shard holds only its own plan indices, each index
     once), and table_fleet.json: `python -m tfwidth.latency fit fleet.jsonl`, which reports each device's speed
     against the median device;
  3. with --validation-plan (the held-out set) and unless --no-single: the same plan on one device alone
     (--single-cpu, default the last of --cpus), single.jsonl and table_single.json, between two timings of the
     held-out set on that device (val_a.jsonl before, val_b.jsonl after: the A/A noise of the same networks in the
     same run), then the two tables' predictions on the held-out set against each other and against that noise
     (compare.json).

Each shard is one process pinned with --cpus, --threads 1; the same core may be given twice (two processes share
it: for trying the merge only, their timings disturb each other). Profiler processes end with this command (a kill
of this command kills them too on Linux), so a re-run never has two writers on one file.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from device_profiler import samples as dsamples  # noqa: E402
from device_profiler.checks import cores, output_dir  # noqa: E402
from tfwidth import latency  # noqa: E402
from tfwidth.artifacts import atomic_write_bytes, read_json, write_json  # noqa: E402
from tfwidth.errors import ArgumentParser, UsageError, run_cli  # noqa: E402


def say(*args) -> None:
    print(*args, flush=True)  # in order with the profilers' logs and errors when piped


def _die_with_parent() -> None:
    """In the child before exec: be sent SIGTERM when this command dies (Linux prctl PR_SET_PDEATHSIG), so a killed
    fleet run leaves no profiler writing into a shard that the next run resumes."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def profiler_argv(template, plan, out, cpu: int, shard: tuple | None, extra: list) -> list[str]:
    """The device_profiler command line of one device: pinned to ``cpu``, one thread, its ``shard`` (i, n) of the
    plan (None: all of it), ``extra`` options appended."""
    argv = [sys.executable, "-m", "device_profiler", "--template", str(template), "--plan", str(plan),
            "--out", str(out), "--cpus", str(cpu), "--threads", "1", "--no-progress"]
    if shard is not None:
        argv += ["--shard", f"{shard[0]}/{shard[1]}"]
    return argv + list(extra)


def run_devices(jobs: list[tuple[str, list, Path]]) -> float:
    """Run the profiler commands of ``jobs`` [(name, argv, log file)] at once, each writing to its log (appended);
    print each one's closing lines when it ends. Returns the wall seconds. A profiler that fails is a UsageError
    naming its log and its error line; the others are stopped."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    procs = []
    try:
        for name, argv, log in jobs:
            f = open(log, "a")
            start = f.tell()  # this run's part of the log (a re-run appends)
            f.write(f"$ {' '.join(argv[1:])}\n")
            f.flush()
            procs.append((name, subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env,
                                                 preexec_fn=_die_with_parent), (log, start), f))
        for name, p, (log, start), f in procs:
            rc = p.wait()
            f.close()
            with open(log) as g:
                g.seek(start)
                said = [line for line in g.read().splitlines() if line.strip()]
            if rc != 0:
                err = next((line for line in reversed(said) if line.startswith("error:")), f"exit code {rc}")
                raise UsageError(f"{name} failed: {err[len('error: '):] if err.startswith('error: ') else err} "
                                 f"(see {log}); fix it and run this command again: the others resume")
            ran = [line for line in said if line.startswith(("timed ", "noise:"))][-2:]
            say(f"  {name}: " + "; ".join(ran))
    finally:
        for _, p, _, f in procs:
            if p.poll() is None:
                p.terminate()
                p.wait()
            f.close()
    return time.perf_counter() - t0


def merge(shards: list[Path], out: Path) -> dict:
    """Concatenate the records of the shard files ``shards`` (shard i of len(shards)) into ``out`` (written
    atomically, replaced every run). Refused (UsageError): a shard holding another shard's plan index, or an index
    twice. Returns {"samples", "records", "per_shard": [samples each]}."""
    n = len(shards)
    lines, per, seen = [], [], {}
    for i, path in enumerate(shards):
        records, _ = dsamples.read_records(path)  # a partial last line (a kill) is left out, as the fit does
        count = 0
        for _, d in records:
            if d.get("kind") == "sample":
                j = int(d["index"])
                if j % n != i:
                    raise UsageError(f"{path} holds plan index {j}, which is shard {j % n}'s of {n}, not shard "
                                     f"{i}'s: it was timed with another --shard; move it away and run again")
                if j in seen:
                    raise UsageError(f"plan index {j} is in {seen[j]} and {path}; keep one of them")
                seen[j] = path
                count += 1
            lines.append(json.dumps(d, separators=(",", ":")))
        per.append(count)
    atomic_write_bytes(out, "".join(line + "\n" for line in lines).encode())
    return {"samples": sum(per), "records": len(lines), "per_shard": per}


def fit(samples: Path, plan: Path, table: Path) -> latency.LatencyTable:
    """`python -m tfwidth.latency fit SAMPLES --space PLAN -o TABLE` in this process (its report printed)."""
    rc = latency.main(["fit", str(samples), "--space", str(plan), "-o", str(table)])
    if rc:
        raise UsageError(f"the fit of {samples} failed")
    return latency.LatencyTable.load(table)


def compare(fleet: latency.LatencyTable, single: latency.LatencyTable, val_a: list, val_b: list) -> dict:
    """The two tables on the held-out configurations: each against the first timing of them (val_a, as the table's
    fit reads timings), against each other (drift-corrected tables: each prediction over its table's reference level,
    so the devices' overall speeds do not count; tables of raw timings as they are), and the A/A of the same
    networks (val_a against val_b, relative differences), over all and per group (random, ladder). Relative
    figures: RMS and largest of (x - y) / y."""
    space = single.space
    idx = np.array([space.to_indices(d["widths"]) for d in val_a], dtype=np.int64).reshape(len(val_a), -1)
    # each table predicts at its reference level when drift-corrected; compared at a common one. Fitted on raw
    # timings (the fit's drift choice), a table predicts its device as timed: compared as they are
    levels = fleet.fit.get("ref_ms"), single.fit.get("ref_ms")
    lf, ls = levels if None not in levels else (1.0, 1.0)
    pf, ps = fleet.predict_indices(idx) / lf, single.predict_indices(idx) / ls
    rel = pf / ps - 1.0
    pairs = latency.same_network_pairs(val_a, val_b, single.statistic, single.drift, single.fit.get("ref_ms"))
    aa = np.array([a / b - 1.0 for a, b in pairs.values()])

    def rms(x):
        return float(np.sqrt(np.mean(np.square(x)))) if len(x) else None

    def figures(mask):
        keys = {tuple(d["widths"]) for d, m in zip(val_a, mask) if m}
        aa = np.array([a / b - 1.0 for k, (a, b) in pairs.items() if k in keys])
        return {"configs": int(mask.sum()), "tables_rms_rel_diff": rms(rel[mask]),
                "tables_max_rel_diff": float(np.max(np.abs(rel[mask]))), "aa_pairs": len(aa), "aa_rms_rel_diff": rms(aa),
                "aa_max_rel_diff": float(np.max(np.abs(aa))) if len(aa) else None}

    groups = {g: figures(m) for g, m in latency.groups_of(space, val_a).items() if m.any()}
    return {**figures(np.ones(len(val_a), bool)), "groups": groups, "aa_rmse_ms": latency.aa_rmse(pairs),
            "level_ratio": lf / ls if None not in levels else None, "fleet_vs_val": latency.evaluate(fleet, val_a),
            "single_vs_val": latency.evaluate(single, val_a)}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = ArgumentParser(prog="python tools/fleet_profile.py", description=(
        "Profile one plan on several local devices (cores) in parallel, each its own shard, merge and fit the "
        "samples, and compare the merged table with one device's on a held-out set (see the module docstring). "
        "Options after -- go to every device_profiler."))
    p.add_argument("--template", required=True, help="template.tflite (template.json beside it)")
    p.add_argument("--plan", required=True, help="plan.json to time (python -m tfwidth.profile plan)")
    p.add_argument("--cpus", required=True,
                   help="the devices: one core each, comma-separated (e.g. 0,1); shard i runs on the i-th")
    p.add_argument("--out", required=True, type=output_dir, help="directory of the shards, merge, tables")
    p.add_argument("--validation-plan", metavar="PLAN",
                   help="the held-out set (python -m tfwidth.profile plan --kind random ...): timed twice on "
                        "--single-cpu to compare the merged table with the single device's against A/A noise")
    p.add_argument("--single-cpu", type=int, help="the single device (default: the last of --cpus)")
    p.add_argument("--no-single", action="store_true", help="only the fleet: shards, merge, fit")
    a = p.parse_args(argv)
    try:
        cpus = cores(a.cpus)
    except ValueError as e:
        raise UsageError(f"--cpus: {e}") from None
    if not cpus:
        raise UsageError("--cpus names the devices: one core each, e.g. 0,1 (not 'none')")
    have = os.cpu_count() or 1
    single_cpu = cpus[-1] if a.single_cpu is None else a.single_cpu
    for c in cpus + [single_cpu]:
        if not 0 <= c < have:
            raise UsageError(f"core {c} does not exist: this machine has cores 0-{have - 1}; pass others to --cpus "
                             f"(or --single-cpu)")
    plan = read_json(a.plan, "plan")
    if plan.get("kind") != "plan":
        raise UsageError(f"{a.plan} is not a plan; make one with python -m tfwidth.profile plan")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    n = len(cpus)
    shards = [out / f"shard-{i}-of-{n}.jsonl" for i in range(n)]
    total = len(plan["configs"])
    say(f"fleet: {n} devices (cpus {', '.join(map(str, cpus))}) each timing its shard of {a.plan} "
          f"({total} configurations), in parallel; logs in {out}/shard-*-of-{n}.log")
    wall = run_devices([(f"shard {i}/{n} on cpu {c}", profiler_argv(a.template, a.plan, shards[i], c, (i, n), extra),
                         shards[i].with_suffix(".log")) for i, c in enumerate(cpus)])
    merged = merge(shards, out / "fleet.jsonl")
    say(f"fleet: {wall:.1f} s wall this run; merged {merged['samples']} samples of {total} "
          f"({' + '.join(map(str, merged['per_shard']))}) into {out / 'fleet.jsonl'}")
    if merged["samples"] < total:
        raise UsageError(f"the shards hold {merged['samples']} of the plan's {total} configurations (failed "
                         f"variants are left out of the samples); see the shard logs in {out}")
    fleet_table = fit(out / "fleet.jsonl", Path(a.plan), out / "table_fleet.json")
    record = {"plan": str(a.plan), "cpus": cpus, "configs": total, "fleet_wall_s_this_run": wall,
              "devices": fleet_table.fit.get("devices"), "extra": extra}
    if a.no_single or not a.validation_plan:
        write_json(out / "compare.json", record)
        say(f"wrote {out / 'compare.json'}")
        return 0

    say(f"single device: cpu {single_cpu}, the held-out set {a.validation_plan} timed before and after the plan")
    walls = {}
    for name, plan_path, path in (("held-out set (A)", a.validation_plan, out / "val_a.jsonl"),
                                  ("the whole plan", a.plan, out / "single.jsonl"),
                                  ("held-out set (B)", a.validation_plan, out / "val_b.jsonl")):
        walls[path.stem] = run_devices([(f"{name} on cpu {single_cpu}",
                                         profiler_argv(a.template, plan_path, path, single_cpu, None, extra),
                                         path.with_suffix(".log"))])
    say(f"single device: {walls['single']:.1f} s wall for the plan this run (the fleet: {wall:.1f} s)")
    single_table = fit(out / "single.jsonl", Path(a.plan), out / "table_single.json")
    val_a, val_b = latency.load_samples(out / "val_a.jsonl"), latency.load_samples(out / "val_b.jsonl")
    c = compare(fleet_table, single_table, val_a, val_b)
    record.update(single_cpu=single_cpu, single_wall_s_this_run=walls["single"], comparison=c)
    write_json(out / "compare.json", record)
    say(latency.format_metrics("fleet table on the held-out set", c["fleet_vs_val"]))
    say(latency.format_metrics("single-device table on the held-out set", c["single_vs_val"]))
    say(format_comparison(c))
    say(f"wrote {out / 'compare.json'}")
    return 0


def format_comparison(c: dict) -> str:
    """compare's figures as lines: the tables' difference against the A/A noise of the same networks, over the
    held-out set and per group of it (random configurations, the uniform ladder)."""
    def against(f):
        aa = f["aa_rms_rel_diff"]
        line = (f"predictions differ by {100 * f['tables_rms_rel_diff']:.2f}% RMS (largest "
                f"{100 * f['tables_max_rel_diff']:.2f}%)")
        if aa:
            line += (f" = {f['tables_rms_rel_diff'] / aa:.2f}x the A/A of the same networks timed twice on the "
                     f"single device ({100 * aa:.2f}% RMS, largest {100 * f['aa_max_rel_diff']:.2f}%, "
                     f"{f['aa_pairs']} pairs)")
        return line

    lines = [f"fleet vs single-device table on {c['configs']} held-out configurations: {against(c)}" + (
        f"; the fleet's median reference ran at {c['level_ratio']:.3f}x the single device's (divided out)"
        if c["level_ratio"] is not None else "; fitted on raw timings (the fits' drift choice): compared as they are")]
    if len(c["groups"]) > 1:
        lines += [f"  {latency.GROUP_NAMES[g]} ({f['configs']}): {against(f)}" for g, f in c["groups"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_cli(main))
