"""Soak: the profiler over many variants in one process, and the pipeline killed at random moments (issue 16.6).

    python tools/bench_soak.py --work soak --profiler                       # (a) ~5-10 min here
    python tools/bench_soak.py --work soak --kill --data cifar10.npz       # (b) an uninterrupted run + a killed one

(a) Profiler soak: one process times --variants configurations (random widths of the CIFAR-sized space, cut from one
    template by device_profiler, --runs timed invokes each) through device_profiler's Session/profile API, in chunks
    so that resident memory (VmRSS, /proc/self/status) is read at the start (after the first 100 variants, once warm),
    every 1,000 and at the end. PASS when end <= start * 1.1 + 8 MiB.
(b) Kill soak: the pipeline (python -m tfwidth.pipeline, CIFAR preset) on a slice of --data, its latency table fitted
    from --device-samples profiled once at the start (so the artefacts do not depend on timings), run once without
    interruption, then in another directory killed with SIGKILL --kills times at random (seeded) moments and started
    again until it completes (the moments spread over the run's length, as running time summed over the starts);
    the final artefacts (widths.json, table.json, run/stats.json, the exported report's
    accuracies, the supernet's weights), timing fields left out, are compared and printed equal / different.
    The pipeline is whatever tfwidth is first on the path (PYTHONPATH), run as subprocesses. --control runs it
    uninterrupted a second time and compares that too (whether the pipeline reproduces itself at all).

Everything goes to --work; the report (report.md, soak.json) too. The template, plan, device samples, data slice and
uninterrupted run are reused only when their cache key (tools/_cache.py: arguments, input digests, code) matches.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import _cache  # noqa: E402

PY = sys.executable
MIB = 1024 * 1024
FLAT_RATIO, FLAT_SLACK_MIB = 1.1, 8.0
PROFILER_CODE = ("device_profiler", "tfwidth/profile.py", "tfwidth/convert.py", "tfwidth/arch")
# Fields that hold a wall-clock figure or a moment: they differ between any two runs (and so are not compared).
TIMING_KEYS = {"seconds", "time", "wall_s", "invoke_s", "elapsed", "timestamp", "date", "created", "started",
               "finished", "hostname"}


def rss_bytes() -> int:
    """This process's resident set size now (VmRSS), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def run(argv, log=None, env=None) -> None:
    """A tfwidth CLI as a subprocess (this process keeps no TensorFlow); its output to ``log`` or ours."""
    out = open(log, "ab") if log else None
    try:
        rc = subprocess.call([PY, *map(str, argv)], stdout=out, stderr=subprocess.STDOUT if out else None, env=env)
    finally:
        if out:
            out.close()
    if rc:
        print(f"error: {' '.join(map(str, argv[:3]))} failed (exit {rc})" + (f"; see {_cache.relative(log)}" if log
                                                                             else ""), file=sys.stderr)
        raise SystemExit(1)


def env_with_path() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def template_and_plan(d: Path, count: int, seed: int, env) -> tuple[Path, Path]:
    """space.json, template.tflite (+ .json) and a random plan of ``count`` configurations in ``d``: made again
    unless their key (count, seed, the code that makes them) matches."""
    space, tpl, plan = d / "space.json", d / "template.tflite", d / "plan.json"
    parts = {"args": {"preset": "mobilenet_v1_cifar", "count": count, "seed": seed, "kind": "random"},
             "code": _cache.code_digest("tfwidth/profile.py", "tfwidth/convert.py", "tfwidth/arch")}
    rec = d / "template_plan.key.json"
    if _cache.check(rec, parts, "template and plan") and all(p.exists() for p in (space, tpl, plan)):
        return tpl, plan
    d.mkdir(parents=True, exist_ok=True)
    run(["-m", "tfwidth.space", "--preset", "mobilenet_v1_cifar", "-o", space], env=env)
    run(["-m", "tfwidth.profile", "template", "--space", space, "-o", tpl, "--seed", seed], env=env)
    run(["-m", "tfwidth.profile", "plan", "--space", space, "--count", count, "--kind", "random", "--seed", seed,
         "-o", plan], env=env)
    _cache.store(rec, parts, {"template": _cache.file_digest(tpl), "plan": _cache.file_digest(plan)})
    return tpl, plan


def flat_verdict(start: int, end: int) -> tuple[bool, str]:
    """Is resident memory flat? end <= start * FLAT_RATIO + FLAT_SLACK_MIB, stated with the numbers."""
    limit = start * FLAT_RATIO + FLAT_SLACK_MIB * MIB
    ok = end <= limit
    return ok, (f"{'PASS' if ok else 'FAIL'}: resident memory {start / MIB:.1f} MiB at the start, {end / MIB:.1f} MiB "
                f"at the end ({end / start:.3f}x, {(end - start) / MIB:+.1f} MiB); flat means end <= start x "
                f"{FLAT_RATIO} + {FLAT_SLACK_MIB:g} MiB = {limit / MIB:.1f} MiB")


def profiler_soak(a, work: Path) -> dict:
    d = work / "profiler"
    tpl, plan_path = template_and_plan(d, a.variants, a.seed, env_with_path())
    from device_profiler import runtime, timing, variants
    from device_profiler.session import Session, profile
    plan = json.loads(plan_path.read_text())
    out = d / "samples.jsonl"
    out.unlink(missing_ok=True)  # the point is one process timing them all: never resumed
    session = Session(variants.load(str(tpl)), runtime.select(), timing.Protocol(runs=a.runs, warmup_runs=2),
                      timing.pin([a.cpu]), seed=a.seed)
    marks = [100] + list(range(1000, a.variants, 1000)) + [a.variants]
    marks = sorted(m for m in set(marks) if m <= a.variants)
    print(f"profiler soak: {a.variants} variants of {plan['space_hash'] if 'space_hash' in plan else 'the space'}, "
          f"{a.runs} timed invokes each (+2 warm-up), 1 thread pinned to cpu {a.cpu}, runtime "
          f"{session.runtime.name} {session.runtime.version}; one process (pid {os.getpid()})", flush=True)
    print(f"{'variants':>8} {'RSS MiB':>8} {'elapsed s':>9} {'variants/s':>10}", flush=True)
    rows, t0, failed = [], time.perf_counter(), 0
    for m in marks:
        # profile() resumes from the file: each call times the next chunk of the same plan, as a restarted run would
        r = profile(session, {**plan, "configs": plan["configs"][:m]}, str(out), reference_every=25, progress=False)
        failed += r["failed"]
        el = time.perf_counter() - t0
        rows.append({"variants": m, "rss_bytes": rss_bytes(), "elapsed_s": el})
        print(f"{m:>8} {rows[-1]['rss_bytes'] / MIB:>8.1f} {el:>9.1f} {m / el:>10.1f}", flush=True)
    lines = sum(1 for _ in open(out))
    ok, verdict = flat_verdict(rows[0]["rss_bytes"], rows[-1]["rss_bytes"])
    print(verdict)
    print(f"{failed} variant(s) failed; {lines} lines in {_cache.relative(out)}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end")
    return {"variants": a.variants, "runs": a.runs, "cpu": a.cpu, "rows": rows, "failed": failed, "lines": lines,
            "flat": ok, "verdict": verdict, "load_avg_end": os.getloadavg()[0], "cores": os.cpu_count(),
            "runtime": f"{session.runtime.name} {session.runtime.version}"}


# ---------------------------------------------------------------------------------------------------------------------
# (b) kill soak

def data_slice(src: str, dst: Path, n_train: int, n_test: int) -> Path:
    """The first n_train / n_test images of an npz dataset (x_train, y_train, x_test, y_test), keyed by its digest."""
    parts = {"args": {"train": n_train, "test": n_test}, "inputs": {"data": _cache.file_digest(src)}}
    rec = dst.with_suffix(".key.json")
    if _cache.check(rec, parts, "data slice") and dst.exists():
        return dst
    import numpy as np
    raw = np.load(src)
    missing = {"x_train", "y_train", "x_test", "y_test"} - set(raw.files)
    if missing:
        _cache.usage_error(f"--data {src}: no {', '.join(sorted(missing))} in it; give an npz with x_train, "
                         f"y_train, x_test, y_test (e.g. cifar10.npz)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp.npz")
    np.savez(tmp, x_train=raw["x_train"][:n_train], y_train=raw["y_train"][:n_train], x_test=raw["x_test"][:n_test],
             y_test=raw["y_test"][:n_test])
    os.replace(tmp, dst)
    _cache.store(rec, parts, {"digest": _cache.file_digest(dst)})
    return dst


def device_samples(d: Path, count: int, seed: int, cpu: int, env) -> Path:
    """samples.jsonl timed once on this CPU (the pipeline then fits from it as from another device's samples)."""
    tpl, plan = template_and_plan(d, count, seed, env)
    out = d / "samples.jsonl"
    parts = {"args": {"cpu": cpu, "runs": 10}, "inputs": {"template": _cache.file_digest(tpl),
                                                          "plan": _cache.file_digest(plan)},
             "code": _cache.code_digest("device_profiler")}
    rec = d / "samples.key.json"
    if _cache.check(rec, parts, "device samples") and out.exists():
        return out
    out.unlink(missing_ok=True)
    run(["-m", "device_profiler", "--template", tpl, "--plan", plan, "--out", out, "--threads", 1, "--cpus", cpu,
         "--runs", 10, "--no-progress"], env=env)
    _cache.store(rec, parts, {"digest": _cache.file_digest(out)})
    return out


def pipeline_argv(a, work: Path, data: Path, samples: Path) -> list:
    return ["-m", "tfwidth.pipeline", "--work", work, "--dataset", f"npz:{data}", "--device-samples", samples,
            "--epochs", a.epochs, "--batch-size", a.batch_size, "--finetune-epochs", a.finetune_epochs,
            "--seed", a.seed, "--target-mult", 0.75, "--probe-configs", a.probe_configs]


def strip(obj, work: Path):
    """An artefact as compared: timing fields left out, this run's directory written as WORK."""
    if isinstance(obj, dict):
        return {k: strip(v, work) for k, v in obj.items()
                if k not in TIMING_KEYS and not k.endswith("_seconds") and not k.endswith("_time")}
    if isinstance(obj, list):
        return [strip(v, work) for v in obj]
    if isinstance(obj, str):
        return obj.replace(str(work.resolve()), "WORK").replace(str(work), "WORK")
    return obj


def first_difference(x, y, path="") -> str | None:
    """Where two JSON values first differ (a dotted path), or None."""
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            if k not in x or k not in y:
                return f"{path}.{k} only in one"
            d = first_difference(x[k], y[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(x, list) and isinstance(y, list):
        if len(x) != len(y):
            return f"{path} length {len(x)} vs {len(y)}"
        for i, (u, v) in enumerate(zip(x, y)):
            d = first_difference(u, v, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if x == y else f"{path}: {str(x)[:60]} vs {str(y)[:60]}"


def weights_diff(clean: Path, killed: Path) -> str:
    """The supernets' latest checkpoints tensor by tensor (TensorFlow's checkpoint reader, in a subprocess)."""
    code = r"""
import json, sys, numpy as np, tensorflow as tf
def latest(run):
    side = json.load(open(run + "/ckpt/checkpoint.json"))
    return tf.train.load_checkpoint(run + "/ckpt/" + side["checkpoint"])
a, b = latest(sys.argv[1]), latest(sys.argv[2])
na, nb = set(a.get_variable_to_shape_map()), set(b.get_variable_to_shape_map())
# the weights (and the model's width statistics); not optimizer slots, Keras metric accumulators, nor how many
# saves it took (save_counter)
names = sorted(n for n in na & nb if "OPTIMIZER_SLOT" not in n and "_metric_objs" not in n
               and not n.startswith("save_counter") and n != "_CHECKPOINTABLE_OBJECT_GRAPH")
diff = [n for n in names if not np.array_equal(a.get_tensor(n), b.get_tensor(n))]
print(json.dumps({"tensors": len(names), "different": len(diff), "only_one": len(na ^ nb), "first": diff[:3]}))
"""
    try:
        out = subprocess.run([PY, "-c", code, str(clean), str(killed)], capture_output=True, text=True,
                             env=env_with_path(), timeout=600)
        r = json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError) as e:
        return f"different (could not compare: {type(e).__name__})"
    if r["different"] == 0 and r["only_one"] == 0:
        return f"equal ({r['tensors']} tensors)"
    return (f"different ({r['different']} of {r['tensors']} tensors differ"
            + (f", {r['only_one']} in one only" if r["only_one"] else "") + (f"; e.g. {r['first'][0]}" if r["first"]
                                                                             else "") + ")")


def compare(clean: Path, killed: Path) -> dict:
    """artefact -> 'equal' or 'different (...)' between two pipeline work directories."""
    out = {}
    for name in ("widths.json", "table.json", "run/stats.json"):
        pa, pb = clean / name, killed / name
        if not (pa.exists() and pb.exists()):
            out[name] = f"different ({'missing in the killed run' if pa.exists() else 'missing'})"
            continue
        x, y = strip(json.loads(pa.read_text()), clean), strip(json.loads(pb.read_text()), killed)
        d = first_difference(x, y)
        out[name] = "equal" if d is None else f"different (first at {d.lstrip('.')})"
    reps = sorted(clean.glob("model_*.report.json"))
    if reps and (killed / reps[0].name).exists():
        x, y = json.loads(reps[0].read_text()), json.loads((killed / reps[0].name).read_text())
        acc = lambda r: (r.get("tflite", {}).get("top1"), r.get("keras", {}).get("top1"))  # noqa: E731
        out["export accuracy"] = "equal" if acc(x) == acc(y) else \
            f"different (top-1 .tflite/Keras {acc(x)} vs {acc(y)})"
    else:
        out["export accuracy"] = "different (no exported report in the killed run)" if reps else "different (none)"
    out["supernet weights"] = weights_diff(clean / "run", killed / "run")
    return out


def kill_soak(a, work: Path) -> dict:
    import numpy as np
    if not a.data:
        _cache.usage_error("--kill needs --data PATH (an npz with x_train, y_train, x_test, y_test, e.g. "
                         "cifar10.npz)")
    if not Path(a.data).is_file():
        _cache.usage_error(f"--data {a.data}: no such file; give the CIFAR-10 npz")
    env = env_with_path()
    d = work / "kill"
    data = data_slice(a.data, d / "data.npz", a.train_images, a.test_images)
    print(f"kill soak: pipeline on the first {a.train_images} training / {a.test_images} test images of "
          f"{Path(a.data).name}; device samples timed once at the start", flush=True)
    samples = device_samples(d / "device", a.plan_count, a.seed, a.cpu, env)

    clean = d / "uninterrupted"
    parts = {"args": {k: getattr(a, k) for k in ("epochs", "batch_size", "finetune_epochs", "seed", "probe_configs")},
             "inputs": {"data": _cache.file_digest(data), "samples": _cache.file_digest(samples)},
             "code": _cache.code_digest("tfwidth", "device_profiler")}
    rec = d / "uninterrupted.key.json"
    hit = _cache.load(rec, parts, "the uninterrupted run")
    if hit is None or not (clean / "widths.json").exists():
        shutil.rmtree(clean, ignore_errors=True)
        print("uninterrupted run ...", flush=True)
        t0 = time.time()
        run(pipeline_argv(a, clean, data, samples), log=d / "uninterrupted.log", env=env)
        hit = {"wall_s": time.time() - t0}
        _cache.store(rec, parts, hit)
    wall = hit["wall_s"]
    print(f"uninterrupted run: {wall:.0f} s", flush=True)

    killed = d / "killed"
    shutil.rmtree(killed, ignore_errors=True)
    log = d / "killed.log"
    log.unlink(missing_ok=True)
    schedule = kill_schedule(a.kill_seed, a.kills, wall)
    kills, starts, t_all = [], 0, time.time()
    while True:
        starts += 1
        with open(log, "ab") as f:
            f.write(f"\n=== start {starts} ===\n".encode())
            f.flush()
            proc = subprocess.Popen([PY, *map(str, pipeline_argv(a, killed, data, samples))], stdout=f,
                                    stderr=subprocess.STDOUT, env=env)
            at = schedule[len(kills)] if len(kills) < len(schedule) else None
            try:
                rc = proc.wait(timeout=at)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills.append(round(at, 1))
                print(f"  start {starts}: killed (SIGKILL) after {at:.1f} s", flush=True)
                continue
        print(f"  start {starts}: exited {rc}" + ("" if at is None else f" before its kill at {at:.1f} s"),
              flush=True)
        if rc != 0:
            if starts >= a.kills + 3:
                break
            continue  # a restart after a kill may fail once on what the kill left: that counts against resume
        break
    killed_wall = time.time() - t_all
    result = compare(clean, killed) if rc == 0 else {}
    control = None
    if a.control:  # is the pipeline deterministic at all? A second uninterrupted run of the same seed
        ctl = d / "control"
        shutil.rmtree(ctl, ignore_errors=True)
        print("control: a second uninterrupted run ...", flush=True)
        run(pipeline_argv(a, ctl, data, samples), log=d / "control.log", env=env)
        control = compare(clean, ctl)
        print("control (uninterrupted vs uninterrupted):")
        for k, v in control.items():
            print(f"  {k:<18} {v}")
    print(f"killed run: {len(kills)} kill(s) at {kills} s after their starts, {starts} start(s), exit {rc}, "
          f"{killed_wall:.0f} s in all")
    for k, v in result.items():
        print(f"  {k:<18} {v}")
    same = bool(result) and all(v.startswith("equal") for v in result.values())
    verdict = (f"{'PASS' if same and len(kills) == a.kills else 'FAIL'}: " + (
        f"after {len(kills)} kill(s)" + (f" (of {a.kills} scheduled: the run completed first)"
                                         if len(kills) < a.kills else "") + " the final artefacts are "
        + ("the same as" if same else "not all the same as") + " the uninterrupted run's" if rc == 0
        else f"the killed run did not complete (last exit {rc}; see {_cache.relative(log)})"))
    if control is not None:
        det = all(v.startswith("equal") for v in control.values())
        verdict += ("; two uninterrupted runs agree on every artefact" if det else
                    "; two uninterrupted runs differ too (" + ", ".join(k for k, v in control.items()
                                                                        if not v.startswith("equal")) + ")")
    print(verdict)
    return {"train_images": a.train_images, "test_images": a.test_images, "epochs": a.epochs,
            "uninterrupted_s": wall, "kills_at_s": kills, "starts": starts, "exit": rc, "killed_total_s": killed_wall,
            "artefacts": result, "control": control, "same": same and len(kills) == a.kills, "verdict": verdict}


def kill_schedule(seed: int, kills: int, wall: float, lo: float = 0.03, hi: float = 0.9,
                  min_gap: float = 3.0) -> list[float]:
    """Seconds after each (re)start at which to kill it: ``kills`` moments drawn uniformly over [lo, hi] of the
    uninterrupted run's wall time, as running time summed over the starts, so the kills spread over the whole run
    (a resumed run must still run at least as long as the part not yet done, so every one lands unless it skips
    work). At least ``min_gap`` s apart (a kill during the interpreter's start-up tests nothing)."""
    import numpy as np
    at = np.sort(np.random.default_rng(seed).uniform(lo, hi, kills)) * wall
    gaps = np.diff(np.concatenate([[0.0], at]))
    return [round(float(max(g, min_gap)), 1) for g in gaps]


def report_lines(res: dict) -> list[str]:
    """The soak's markdown report, every sentence from the numbers it states."""
    lines = ["## Soak (tools/bench_soak.py)", ""]
    p = res.get("profiler")
    if p:
        r0, r1 = p["rows"][0], p["rows"][-1]
        lines += [f"Profiler: {p['variants']:,} variants timed in one process ({p['runs']} timed invokes each, "
                  f"1 thread pinned to core {p['cpu']}, {p['runtime']}) in {r1['elapsed_s'] / 60:.1f} min; "
                  f"{p['failed']} failed. Resident memory (VmRSS) {r0['rss_bytes'] / MIB:.1f} MiB after the first "
                  f"{r0['variants']} variants, {r1['rss_bytes'] / MIB:.1f} MiB after {r1['variants']:,}: "
                  + p["verdict"].split(": ", 1)[0] + f" (flat: end <= start x {FLAT_RATIO} + {FLAT_SLACK_MIB:g} MiB). "
                  f"Load average {p['load_avg_end']:.1f} on {p['cores']} cores at the end.", "",
                  "| variants | RSS MiB | elapsed s |", "|---|---|---|"]
        lines += [f"| {r['variants']:,} | {r['rss_bytes'] / MIB:.1f} | {r['elapsed_s']:.0f} |" for r in p["rows"]]
        lines.append("")
    k = res.get("kill")
    if k:
        lines += [f"Kill soak: the pipeline on {k['train_images']} / {k['test_images']} CIFAR-10 images, "
                  f"{k['epochs']} epoch(s); uninterrupted {k['uninterrupted_s'] / 60:.1f} min; the same seed killed "
                  f"{len(k['kills_at_s'])} time(s) ({', '.join(f'{s:g}' for s in k['kills_at_s'])} s after each "
                  f"start), {k['starts']} start(s): " + k["verdict"], ""]
        lines += [f"- {name}: {v}" for name, v in k["artefacts"].items()]
        if k.get("control"):
            lines += ["", "Control, a second uninterrupted run against the first:", ""]
            lines += [f"- {name}: {v}" for name, v in k["control"].items()]
        lines.append("")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="bench_soak", help="work directory (default ./bench_soak)")
    p.add_argument("--profiler", action="store_true", help="run (a), the profiler soak")
    p.add_argument("--kill", action="store_true", help="run (b), the kill soak (needs --data)")
    p.add_argument("--variants", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=2, help="timed invokes per variant (default 2)")
    p.add_argument("--cpu", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="(b) CIFAR-10 npz (x_train, y_train, x_test, y_test)")
    # defaults: a few minutes for the uninterrupted run here (the probe at the end of training dominates: 500
    # configurations took ~8 of 10 minutes under load, hence --probe-configs)
    p.add_argument("--train-images", type=int, default=1000, help="(b) training images of the slice (default 1000)")
    p.add_argument("--test-images", type=int, default=200, help="(b) test images of the slice (default 200)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--probe-configs", type=int, default=100, help="(b) the pipeline's --probe-configs (default 100)")
    p.add_argument("--plan-count", type=int, default=100, help="(b) device samples timed once for the table")
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--kill-seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--control", action="store_true", help="(b) also run the pipeline uninterrupted a second time "
                   "and compare it with the first (does the pipeline reproduce itself at all?)")
    a = p.parse_args(argv)
    if not (a.profiler or a.kill):
        a.profiler = a.kill = True
    if a.kill and not a.data:
        p.error("--kill needs --data PATH (the CIFAR-10 npz); --profiler alone needs none")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    out = work / "soak.json"
    res = {}  # only what this invocation measured: an earlier part is in its own run's report
    if a.profiler:
        res["profiler"] = profiler_soak(a, work)
    if a.kill:
        res["kill"] = kill_soak(a, work)
    out.write_text(json.dumps(res, indent=1))
    (work / "report.md").write_text("\n".join(report_lines(res)))
    print(f"report: {_cache.relative(work / 'report.md')}")
    return 0 if all(r.get("flat", r.get("same", True)) for r in res.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
