"""tfwidth.profile: plans (biased Viterbi coverage against brute force) and the template/plan CLIs."""
import itertools
import json

import numpy as np
import pytest

import tfwidth  # noqa: F401
from tfwidth.errors import UsageError, run_cli
from tfwidth.profile import biased_configs, main, make_plan
from tfwidth.space import preset, tiny_space

SPACE = tiny_space()


def entry_counts(space, configs):
    k = space.num_choices
    unary0, head = np.zeros(k[0]), np.zeros(k[-1])
    pairs = [np.zeros((k[i], k[i + 1])) for i in range(len(k) - 1)]
    for w in configs:
        idx = space.to_indices(w)
        unary0[idx[0]] += 1
        head[idx[-1]] += 1
        for i, p in enumerate(pairs):
            p[idx[i], idx[i + 1]] += 1
    return unary0, head, pairs


def cost(space, counts, widths):
    unary0, head, pairs = counts
    idx = space.to_indices(widths)
    return unary0[idx[0]] + head[idx[-1]] + sum(p[idx[i], idx[i + 1]] for i, p in enumerate(pairs))


def test_biased_picks_the_least_measured_configuration_every_step():
    configs = biased_configs(SPACE, 40, np.random.default_rng(0))
    every = list(itertools.product(*SPACE.choices))
    for k in range(len(configs)):
        counts = entry_counts(SPACE, configs[:k])
        assert cost(SPACE, counts, configs[k]) == min(cost(SPACE, counts, w) for w in every), k


def test_biased_covers_every_table_entry_of_the_default_space():
    space = preset("mobilenet_v1", resolution=128)
    most = max(a * b for a, b in zip(space.num_choices, space.num_choices[1:]))
    unary0, head, pairs = entry_counts(space, biased_configs(space, most, np.random.default_rng(1)))
    assert unary0.min() >= 1 and head.min() >= 1
    assert all(p.min() >= 1 for p in pairs)
    # the same number of uniform random configurations leaves entries unmeasured
    rng = np.random.default_rng(1)
    _, _, rpairs = entry_counts(space, [space.random_widths(rng) for _ in range(most)])
    assert any(p.min() == 0 for p in rpairs)


def test_plan_contents_and_reproducibility():
    a = make_plan(SPACE, 10, "random", seed=4, ladder=False)
    b = make_plan(SPACE, 10, "random", seed=4, ladder=False)
    assert a == b
    assert set(a) == {"kind", "space_hash", "space", "plan_kind", "seed", "ladder", "reference", "configs"}
    assert a["kind"] == "plan" and a["space_hash"] == SPACE.space_hash and len(a["configs"]) == 10
    for w in a["configs"] + [a["reference"]]:
        SPACE.validate(w)
    assert a["reference"] == list(SPACE.uniform(1.0))
    assert make_plan(SPACE, 10, "biased", seed=4)["configs"] != make_plan(SPACE, 10, "biased", seed=5)["configs"]
    with pytest.raises(UsageError, match="count"):
        make_plan(SPACE, 0)


def test_every_plan_times_the_ladder_first_and_no_configuration_twice():
    space = preset("mobilenet_v1", resolution=64)
    ladder = [list(w) for w in space.ladder()]
    assert len(ladder) == space.levels and ladder[0] == list(space.min_widths) and ladder[-1] == list(space.max_widths)
    assert all(list(space.uniform(m)) in ladder for m in space.multipliers)
    for kind in ("stratified", "biased", "random"):
        plan = make_plan(space, 50, kind, seed=3)
        assert plan["configs"][:len(ladder)] == ladder and plan["ladder"] is True
        assert len({tuple(c) for c in plan["configs"]}) == len(plan["configs"])
        if kind == "random":  # random plans draw the same configurations after the ladder as without it
            assert make_plan(space, 50, kind, seed=3, ladder=False)["configs"] == plan["configs"][len(ladder):]


def test_stratified_plans_spread_over_the_latency_range_and_cover_every_level():
    """The same number of configurations: the stratified plan reaches far closer to both ends of the MAC range than
    the coverage-only one (whose configurations all sit near the middle), and still uses every level of every layer."""
    space = preset("mobilenet_v1", resolution=128)
    lo, hi = space.macs(space.min_widths), space.macs(space.max_widths)
    frac = {}
    for kind in ("stratified", "biased"):
        configs = make_plan(space, 300, kind, seed=0, ladder=False)["configs"]
        m = (np.array([space.macs(w) for w in configs]) - lo) / (hi - lo)
        frac[kind] = (np.mean(m < 0.1), np.mean(m > 0.6))
        for i, ch in enumerate(space.choices):
            assert {c[i] for c in configs} == set(ch), (kind, i)
    assert frac["stratified"][0] >= 0.05 and frac["stratified"][1] >= 0.05
    assert frac["biased"][0] <= 0.01 and frac["biased"][1] <= 0.01


def test_plan_cli(tmp_path, capsys):
    sp = tmp_path / "space.json"
    SPACE.save(sp)
    out = tmp_path / "plan.json"
    assert run_cli(main, ["plan", "--space", str(sp), "--count", "5", "--seed", "2", "-o", str(out)]) == 0
    plan = json.loads(out.read_text())
    assert plan["plan_kind"] == "stratified" and plan["configs"][:len(SPACE.ladder())] == [list(w) for w in SPACE.ladder()]
    assert len(plan["configs"]) <= 5 + len(SPACE.ladder())
    assert run_cli(main, ["plan", "--space", str(sp), "--count", "5", "--reference", "8,8,8,9",
                          "-o", str(tmp_path / "bad.json")]) == 2
    assert "block3 width 9 is not a choice" in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists()
    assert run_cli(main, ["plan", "--space", str(sp), "--count", "0", "-o", str(tmp_path / "bad.json")]) == 2
    assert run_cli(main, ["template", "--space", str(sp), "-o", str(tmp_path / "t.bin")]) == 2
    assert "should end in .tflite" in capsys.readouterr().err


@pytest.mark.slow
def test_template_cli_writes_tflite_and_manifest(tmp_path):
    sp = tmp_path / "space.json"
    SPACE.save(sp)
    out = tmp_path / "template.tflite"
    assert run_cli(main, ["template", "--space", str(sp), "-o", str(out)]) == 0
    manifest = json.loads((tmp_path / "template.json").read_text())
    assert manifest["kind"] == "template" and manifest["format"] == "fp32"
    assert manifest["space_hash"] == SPACE.space_hash
    assert [v["name"] for v in manifest["variables"]] == list(SPACE.layer_names)
    roles = {c["role"] for v in manifest["variables"] for c in v["cuts"]}
    assert roles == {"weight", "bias", "activation"}
    for var, v in enumerate(manifest["variables"]):
        for c in v["cuts"]:
            assert manifest["tensors"][str(c["tensor"])]["shape"][c["axis"]] == SPACE.max_widths[var]
    assert out.read_bytes()[4:8] == b"TFL3"
