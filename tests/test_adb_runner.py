"""The adb runner end to end, against a stand-in `adb` written here and put first on PATH.

The stand-in emulates `adb devices`, `-s`, `push`, `shell getprop`, `shell rm/test/sha256sum/taskset` and
`shell benchmark_model ...`: it runs the pushed variant with the local LiteRT interpreter (warm-up and timed runs as
the flags say) and prints benchmark_model's output (TF 2.x format with percentiles and INFO: prefixes), or its
"Failed to apply XNNPACK delegate" failure for the variants listed in its config. So push, run, parse, cleanup and
resume are all exercised here without a phone.
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, assert_usage_error, run_module

STANDIN = r'''
import hashlib, json, os, re, shlex, shutil, sys, time

STATE = os.environ["FAKE_ADB_DIR"]
cfg = json.load(open(os.path.join(STATE, "config.json")))
with open(os.path.join(STATE, "log.jsonl"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")


def fs(remote):
    return os.path.join(STATE, "fs", remote.lstrip("/"))


def exists(remote):
    return remote in cfg.get("files", []) or os.path.exists(fs(remote))


def stat_line(v):
    # tensorflow/tsl Stat::OutputToStream + StatWithPercentiles (integer microseconds; avg as a double)
    if not v:
        return "count=0"
    n, s = len(v), sorted(v)
    if min(v) == max(v):
        out = f"count={n} curr={v[-1]}" + ("(all same)" if n > 1 else "")
    else:
        avg = sum(v) / n
        std = int((sum(x * x for x in v) / n - avg * avg) ** 0.5)
        out = f"count={n} first={v[0]} curr={v[-1]} min={s[0]} max={s[-1]} avg={avg:.6g} std={std}"
    return out + f" p5={s[n * 5 // 100]} median={s[n * 50 // 100]} p95={s[n * 95 // 100]}"


def benchmark(binary, flags):
    if not exists(binary):
        return 127, f"/system/bin/sh: {binary}: not found\n"
    a = dict(f[2:].split("=", 1) for f in flags)
    graph = a["graph"]
    threads, warm, runs = int(a.get("num_threads", -1)), int(a.get("warmup_runs", 1)), int(a.get("num_runs", 50))
    wsecs, secs = float(a.get("warmup_min_secs", 0.5)), float(a.get("min_secs", 1.0))
    L = ["INFO: STARTING!", "INFO: Log parameter values verbosely: [0]", f"INFO: Min num runs: [{runs}]",
         f"INFO: Num threads: [{threads}]", f"INFO: Min warmup runs: [{warm}]", f"INFO: Graph: [{graph}]",
         f"INFO: #threads used for CPU inference: [{threads}]"]
    if not exists(graph):
        L += [f"ERROR: Could not open '{graph}'.", f"ERROR: Failed to mmap model {graph}", "Benchmarking failed."]
        return 1, "\n".join(L) + "\n"
    data = open(fs(graph), "rb").read()
    L.append(f"INFO: Loaded model {graph}")
    L.append("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    if hashlib.sha256(data).hexdigest() in cfg.get("fail_sha256", []):
        L += ["XNNPACK delegate created.", "Failed to apply XNNPACK delegate.", "Benchmarking failed."]
        return 1, "\n".join(L) + "\n"
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    t0 = time.perf_counter_ns()
    it = Interpreter(model_content=data, num_threads=max(threads, 1))
    it.allocate_tensors()
    init = (time.perf_counter_ns() - t0) // 1000
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.random.default_rng(0).standard_normal(d["shape"]).astype(d["dtype"]))
    L += [f"INFO: The input model file size (MB): {len(data) / 1e6:g}", f"INFO: Initialized session in {init / 1e3:g}ms."]
    phases = []
    for n, mins in ((warm, wsecs), (runs, secs)):
        L.append(f"INFO: Running benchmark for at least {n} iterations and at least {mins:g} seconds but terminate "
                 f"if exceeding 150 seconds.")
        v, start = [], time.perf_counter()
        while len(v) < n or time.perf_counter() - start < mins:
            t = time.perf_counter_ns()
            it.invoke()
            v.append((time.perf_counter_ns() - t) // 1000)
        L += ["INFO: " + stat_line(v), "INFO: "]
        phases.append(v)
    w, r = phases
    L.append(f"INFO: Inference timings in us: Init: {init}, First inference: {w[0] if w else 0}, Warmup (avg): "
             f"{(sum(w) / len(w)) if w else float('nan'):.6g}, Inference (avg): {sum(r) / len(r):.6g}")
    return 0, "\n".join(L) + "\n"


def shell(cmd):
    m = re.match(r"^(.*) 2>&1; echo (\S+)\$\?$", cmd, re.S)
    marker = None
    if m:
        cmd, marker = m.group(1), m.group(2)
    t = shlex.split(cmd)
    if t[0] == "getprop":
        rc, out = 0, cfg.get("props", {}).get(t[1], "") + "\n"
    elif t[0] == "rm":
        for p in t[1:]:
            if not p.startswith("-") and os.path.exists(fs(p)):
                os.unlink(fs(p))
        rc, out = 0, ""
    elif t[0] == "test":
        rc, out = (0 if exists(t[2]) else 1), ""
    elif t[0] == "sha256sum":
        rc, out = 0, hashlib.sha256(t[1].encode()).hexdigest() + "  " + t[1] + "\n"
    else:
        if t[0] == "taskset":
            if int(t[1], 16) >> cfg.get("cores", 8):
                print(f"{cmd}\n", file=sys.stderr)
                rc, out = 1, "taskset: sched_setaffinity: Invalid argument\n"
                t = None
            else:
                t = t[2:]
        if t is None:
            pass
        elif t[0] == "true":
            rc, out = 0, ""
        else:
            rc, out = benchmark(t[0], t[1:])
    sys.stdout.write(out)
    if marker:
        sys.stdout.write(f"{marker}{rc}\n")
    return rc


def main(argv):
    serial = None
    if argv[:1] == ["-s"]:
        serial, argv = argv[1], argv[2:]
    devices = cfg.get("devices", [])
    if argv[0] == "devices":
        print("List of devices attached")
        for s, st in devices:
            print(f"{s}\t{st}")
        print()
        return 0
    if serial is None:
        ready = [s for s, st in devices if st == "device"]
        if len(ready) != 1:
            print("adb: more than one device/emulator" if ready else "adb: no devices/emulators found", file=sys.stderr)
            return 1
        serial = ready[0]
    if serial not in dict(devices) or os.path.exists(os.path.join(STATE, "unplugged")):
        print(f"adb: device '{serial}' not found", file=sys.stderr)
        return 1
    if argv[0] == "push":
        os.makedirs(os.path.dirname(fs(argv[2])), exist_ok=True)
        shutil.copyfile(argv[1], fs(argv[2]))
        print(f"{argv[1]}: 1 file pushed, 0 skipped.")
        return 0
    if argv[0] == "shell":
        return shell(" ".join(argv[1:]))
    print(f"adb: unknown command {argv[0]}", file=sys.stderr)
    return 1


sys.exit(main(sys.argv[1:]))
'''

PROPS = {"ro.product.model": "Pixel 7", "ro.soc.model": "GS201", "ro.board.platform": "gs201",
         "ro.build.version.release": "14", "ro.build.version.sdk": "34", "ro.product.manufacturer": "Google",
         "ro.product.cpu.abi": "arm64-v8a"}
BINARY = "/data/local/tmp/benchmark_model"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny template + manifest and a 4-configuration plan, made once with the project's own CLIs (~10 s)."""
    d = tmp_path_factory.mktemp("adb_tiny")
    code = ("import tfwidth\nfrom tfwidth.space import tiny_space\n"
            f"tiny_space().save({str(d / 'space.json')!r})\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
    for args in (["template", "--space", d / "space.json", "-o", d / "template.tflite"],
                 ["plan", "--space", d / "space.json", "--count", "4", "--kind", "random", "--no-ladder", "-o", d / "plan.json"]):
        p = run_module("tfwidth.profile", *args)
        assert p.returncode == 0, p.stderr[-2000:]
    return d


class Phone:
    """The stand-in's state: config, the device's files, and the log of adb calls."""

    def __init__(self, root: Path, **cfg):
        self.root = root
        (root / "bin").mkdir(parents=True)
        (root / "fs").mkdir()
        adb = root / "bin" / "adb"
        adb.write_text(f"#!{sys.executable}\n" + STANDIN)
        adb.chmod(0o755)
        self.cfg = {"devices": [["R5CT1234", "device"]], "props": PROPS, "files": [BINARY], "cores": 8, **cfg}
        self.save()

    def save(self):
        (self.root / "config.json").write_text(json.dumps(self.cfg))

    def env(self, with_adb=True):
        path = str(self.root / "bin") + os.pathsep + os.environ.get("PATH", "") if with_adb else str(self.root / "fs")
        return {"PATH": path, "FAKE_ADB_DIR": str(self.root)}

    def calls(self):
        log = self.root / "log.jsonl"
        return [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []

    def left_on_device(self):
        return sorted(str(p.relative_to(self.root / "fs")) for p in (self.root / "fs").rglob("*") if p.is_file())


@pytest.fixture
def phone(tmp_path):
    return Phone(tmp_path / "phone")


def run_adb(tiny, phone, out, *extra, with_adb=True):
    return run_module("device_profiler", "--runner", "adb", "--template", tiny / "template.tflite",
                      "--plan", tiny / "plan.json", "--out", out, "--benchmark-binary", BINARY,
                      "--runs", 3, "--warmup-runs", 1, "--no-progress", *extra, env=phone.env(with_adb), timeout=300)


def read(out):
    return [json.loads(l) for l in Path(out).read_text().splitlines()]


def variant_sha(tiny, widths):
    from device_profiler import variants
    return hashlib.sha256(variants.load(tiny / "template.tflite").make(widths)).hexdigest()


def test_end_to_end_push_run_parse_cleanup_resume(tiny, phone, tmp_path):
    plan = json.loads((tiny / "plan.json").read_text())
    phone.cfg["fail_sha256"] = [variant_sha(tiny, plan["configs"][2])]
    phone.save()
    out = tmp_path / "samples.jsonl"
    p = run_adb(tiny, phone, out, "--threads", 1, "--cpus", "4-7", "--use-xnnpack", "--reference-every", 2,
                "--noise-threshold", 0)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = read(out)
    assert [(r["kind"], r["index"]) for r in recs] == [("reference", -1), ("sample", 0), ("sample", 1),
                                                       ("reference", -1), ("sample", 2), ("sample", 3),
                                                       ("reference", -1), ("noise", -1)]
    assert recs[-1]["repeats"] == 0 and recs[-1]["references"] == 3
    recs = recs[:-1]
    for r in recs:
        assert r["runtime"] == "benchmark_model" and r["threads"] == 1 and r["cpus"] == [4, 5, 6, 7]
        assert r["device"]["machine"] == "Pixel 7" and r["device"]["cpu"] == "GS201"
        assert r["device"]["os"] == "Android 14 (SDK 34)" and r["device"]["hostname"] == "R5CT1234"
        assert r["space_hash"] == plan["space_hash"] and r["format"] == "fp32"
        assert r["runtime_version"] == "sha256:" + hashlib.sha256(BINARY.encode()).hexdigest()[:16]
    ok = [r for r in recs if r["status"] == "ok"]
    assert len(ok) == 6, [r["error"] for r in recs]
    for r in ok:
        ms = r["ms"]
        assert ms["count"] == 3 and r["warmup_runs"] == 1 and 0 < ms["min"] <= ms["median"] <= ms["min"] + 3 * ms["mean"]
        assert ms["min"] <= ms["mean"] and r["benchmark_model"]["init_ms"] > 0
    bad = recs[4]
    assert bad["status"] == "failed" and bad["ms"] is None and bad["widths"] == plan["configs"][2]
    assert "Failed to apply XNNPACK delegate." in bad["error"] and "Benchmarking failed." in bad["error"]
    assert recs[5]["ref_ms"] == recs[3]["ms"]["min"] and recs[1]["ref_ms"] == recs[0]["ms"]["min"]
    # The command line on the phone: pinned, the protocol's warm-up and run counts, exactly N runs, XNNPACK.
    shells = [c[-1] for c in phone.calls() if c[2:3] == ["shell"] and BINARY + " --graph" in c[-1]]
    assert len(shells) == 7
    assert all(s.startswith(f"taskset f0 {BINARY} --graph=/data/local/tmp/tfwidth_") and "--num_runs=3 --min_secs=0"
               in s and "--warmup_runs=1" in s and "--num_threads=1" in s and "--use_xnnpack=true" in s for s in shells)
    pushes = [c for c in phone.calls() if c[2:3] == ["push"]]
    assert len(pushes) == 7 and phone.left_on_device() == []  # every pushed variant was removed
    # Resume: a run cut after its second line continues with nothing lost or duplicated.
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:17])  # a kill mid-line
    p = run_adb(tiny, phone, out, "--cpus", "4-7", "--use-xnnpack", "--reference-every", 2)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "truncated last line" in p.stderr
    again = read(out)
    assert sorted(r["index"] for r in again if r["kind"] == "sample") == [0, 1, 2, 3]
    assert len(phone.left_on_device()) == 0
    # Nothing left to do: nothing pushed.
    n = len([c for c in phone.calls() if c[2:3] == ["push"]])
    p = run_adb(tiny, phone, out, "--cpus", "4-7")
    assert p.returncode == 0 and len([c for c in phone.calls() if c[2:3] == ["push"]]) == n


def test_gpu_flag_and_serial(tiny, phone, tmp_path):
    phone.cfg["devices"] = [["emulator-5554", "device"], ["R5CT1234", "device"]]
    phone.save()
    out = tmp_path / "s.jsonl"
    p = run_adb(tiny, phone, out, "--serial", "R5CT1234", "--use-gpu", "--reference-every", 0)
    assert p.returncode == 0, p.stderr[-3000:]
    assert [(r["kind"], r["index"]) for r in read(out)] == [("sample", 0), ("sample", 1), ("sample", 2),
                                                            ("sample", 3), ("noise", -1)]
    cmds = [c for c in phone.calls() if c[:2] == ["-s", "R5CT1234"] and "--graph=" in c[-1]]
    assert len(cmds) == 4 and all("--use_gpu=true" in c[-1] and "taskset" not in c[-1] for c in cmds)
    assert not any(c[:2] == ["-s", "emulator-5554"] for c in phone.calls())


@pytest.mark.parametrize("setup, args, fragments", [
    ({"devices": []}, [], ["no Android device attached", "USB debugging"]),
    ({"devices": [["A1", "device"], ["B2", "device"]]}, [], ["2 devices are attached (A1, B2)", "--serial"]),
    ({"devices": [["A1", "unauthorized"]]}, [], ["A1 is unauthorized", "Allow USB debugging"]),
    ({}, ["--serial", "ZZZ"], ["device ZZZ is not attached", "R5CT1234"]),
    ({"files": []}, [], ["benchmark_model is not on the device at /data/local/tmp/benchmark_model", "adb push"]),
    ({"cores": 4}, ["--cpus", "4-7"], ["cannot pin to cores 4-7", "--cpus"]),
    ({}, ["--use-gpu", "--use-xnnpack"], ["not allowed with argument"]),
])
def test_errors_are_one_line(tiny, phone, tmp_path, setup, args, fragments):
    phone.cfg.update(setup)
    phone.save()
    out = tmp_path / "s.jsonl"
    p = run_adb(tiny, phone, out, *args)
    if "not allowed with argument" in fragments[0]:  # argparse's own mutually-exclusive error
        assert p.returncode == 2 and fragments[0] in p.stderr
    else:
        assert_usage_error(p, *fragments)
    assert not out.exists() or out.read_text() == ""
    assert phone.left_on_device() == []


def test_no_adb_on_path(tiny, phone, tmp_path):
    p = run_adb(tiny, phone, tmp_path / "s.jsonl", with_adb=False)
    assert_usage_error(p, "adb is not on PATH", "platform-tools")


def test_device_lost_mid_run_stops_resumably(tiny, phone, tmp_path, monkeypatch):
    from device_profiler import adb as adbmod, variants
    from device_profiler.session import load_plan, profile
    for k, v in phone.env().items():
        monkeypatch.setenv(k, v)
    maker = variants.load(tiny / "template.tflite")
    plan = load_plan(str(tiny / "plan.json"), maker)
    session = adbmod.open_session(maker, binary=BINARY, runs=2, warmup_runs=0)
    real_time, calls = session.bench.time, []

    def time_then_unplug(variant, tag):
        calls.append(tag)
        if len(calls) == 3:
            (phone.root / "unplugged").write_text("")
        return real_time(variant, tag)

    monkeypatch.setattr(session.bench, "time", time_then_unplug)
    out = tmp_path / "s.jsonl"
    with pytest.raises(adbmod.UsageError, match="lost device R5CT1234.*run the same command again"):
        profile(session, plan, str(out), reference_every=0, progress=False)
    session.close()
    assert [r["index"] for r in read(out)] == [0, 1]  # no failed samples written for an unplugged phone
    (phone.root / "unplugged").unlink()
    session = adbmod.open_session(maker, binary=BINARY, runs=2, warmup_runs=0)
    r = profile(session, plan, str(out), reference_every=0, progress=False)
    session.close()
    assert (r["timed"], r["skipped"], r["failed"]) == (2, 2, 0)
    assert [r["index"] for r in read(out)] == [0, 1, 2, 3] and phone.left_on_device() == []
