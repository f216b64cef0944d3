"""tools/fleet_profile.py on a tiny template: two shards on this machine's cores in parallel, the merge, the
comparison with one device, and a re-run after a kill resuming each shard (issue 22)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, assert_usage_error
from tfwidth.artifacts import atomic_write_bytes, write_json
from tfwidth.profile import make_plan, make_template
from tfwidth.space import tiny_space

sys.path.insert(0, str(ROOT / "tools"))
import fleet_profile  # noqa: E402

SPACE = tiny_space()
FAST = ["--", "--runs", "3", "--warmup-runs", "1", "--precision", "0", "--reference-every", "4"]
# two devices: two cores where this process may run on two, else twice the one it has (the merge is what is tested)
CORES = (sorted(os.sched_getaffinity(0)) * 2)[:2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fleet")
    tflite, manifest = make_template(SPACE, "fp32", seed=0)
    atomic_write_bytes(d / "template.tflite", tflite)
    write_json(d / "template.json", manifest)
    write_json(d / "plan.json", make_plan(SPACE, 16, "biased", seed=0, ladder=False))
    write_json(d / "val_plan.json", make_plan(SPACE, 6, "random", seed=1, ladder=False))
    return d


def fleet(files, out, *extra):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "fleet_profile.py"), "--template", "template.tflite",
                           "--plan", "plan.json", "--cpus", ",".join(map(str, CORES)), "--out", str(out), *extra,
                           *FAST], cwd=files, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def indices(path):
    return [r["index"] for r in map(json.loads, Path(path).read_text().splitlines()) if r["kind"] == "sample"]


def test_shards_in_parallel_merge_fit_compare_and_resume(files, tmp_path):
    out = tmp_path / "fleet"
    r = fleet(files, out, "--validation-plan", "val_plan.json")
    assert r.returncode == 0, r.stderr + r.stdout
    shards = [out / "shard-0-of-2.jsonl", out / "shard-1-of-2.jsonl"]
    assert [sorted(indices(s)) for s in shards] == [list(range(0, 16, 2)), list(range(1, 16, 2))]
    # the merge: every record of both shards, each plan index once
    merged = (out / "fleet.jsonl").read_text().splitlines()
    assert merged == [json.dumps(json.loads(line), separators=(",", ":"))
                      for s in shards for line in s.read_text().splitlines()]
    assert sorted(indices(out / "fleet.jsonl")) == list(range(16))
    assert "merged 16 samples of 16 (8 + 8)" in r.stdout and "wrote " + str(out / "table_fleet.json") in r.stdout
    rec = json.loads((out / "compare.json").read_text())
    c = rec["comparison"]
    assert rec["cpus"] == CORES and c["configs"] == 6 and c["aa_pairs"] == 6 and c["tables_rms_rel_diff"] >= 0
    assert "fleet vs single-device table on 6 held-out configurations: predictions differ by" in r.stdout
    assert (len(rec["devices"] or []) == 2) == (CORES[0] != CORES[1])  # two cores are two devices in the fit's report
    assert sorted(indices(out / "single.jsonl")) == list(range(16)) and len(indices(out / "val_b.jsonl")) == 6

    # killed while shard 1 wrote its third line: two lines and half of one are left
    kept = shards[1].read_text().splitlines(keepends=True)
    shards[1].write_text("".join(kept[:2]) + kept[2][: len(kept[2]) // 2])
    before0, left = shards[0].read_bytes(), [r["index"] for r in map(json.loads, kept[:2]) if r["kind"] == "sample"]
    (out / "fleet.jsonl").unlink()
    r = fleet(files, out, "--validation-plan", "val_plan.json")
    assert r.returncode == 0, r.stderr + r.stdout
    assert shards[0].read_bytes().startswith(before0) and shards[1].read_text().startswith("".join(kept[:2]))
    assert sorted(indices(shards[1])) == list(range(1, 16, 2)) and sorted(indices(out / "fleet.jsonl")) == list(range(16))
    assert f"timed {8 - len(left)} configurations (0 failed), skipped {len(left)} already" in r.stdout
    # shard 0, both held-out timings and the single device had nothing left; each says only this run's outcome
    assert r.stdout.count("timed 0 configurations") == 4 and f"shard 0/2 on cpu {CORES[0]}: timed 0 configurations" in r.stdout
    assert sorted(indices(out / "single.jsonl")) == list(range(16))


def test_bad_input_and_foreign_shards(files, tmp_path):
    assert_usage_error(fleet(files, tmp_path / "o", "--cpus", "0,4000"), "core 4000 does not exist")
    assert_usage_error(fleet(files, tmp_path / "o", "--cpus", "none"), "--cpus names the devices")
    assert_usage_error(fleet(files, tmp_path / "o", "--plan", "template.json"), "is not a plan")
    # a profiler's own refusal, named with its shard and log
    assert_usage_error(fleet(files, tmp_path / "o", "--template", "missing.tflite"), "shard 0/2 on cpu",
                       "failed: template missing.tflite does not exist", "shard-0-of-2.log")
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps({"kind": "sample", "index": 0}) + "\n")
    b.write_text(json.dumps({"kind": "sample", "index": 2}) + "\n")
    with pytest.raises(fleet_profile.UsageError, match="plan index 2, which is shard 0's of 2, not shard 1's"):
        fleet_profile.merge([a, b], tmp_path / "m.jsonl")
    assert not (tmp_path / "m.jsonl").exists()
