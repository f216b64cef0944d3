import json

import numpy as np
import pytest

from tests.conftest import assert_usage_error, run_module
from tfwidth.artifacts import check_space
from tfwidth.errors import SpaceMismatch, UsageError
from tfwidth.space import SearchSpace, preset, round_channels, tiny_space


def test_default_space_matches_the_paper():
    s = preset("mobilenet_v1")
    assert s.num_layers == 14
    assert s.base_widths == (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)
    assert s.choices[0] == (8, 16, 24, 32, 40, 48)  # first layer 8..48 in steps of 8
    assert s.choices[1] == (16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96)
    assert s.choices[13][0] == 208 and s.choices[13][-1] == 1536 and len(s.choices[13]) == 14
    assert s.max_widths[13] == 1536 and s.uniform(1.0) == s.base_widths
    assert s.feature_sizes()[-1] == 7 and s.resolution == 224 and s.classes == 1000


def test_cifar_preset_ends_on_small_maps():
    s = preset("mobilenet_v1_cifar")
    assert s.resolution == 32 and s.classes == 10 and s.feature_sizes()[-1] in (2, 4)


def test_rounding_and_dedup():
    assert round_channels(6.4, 8) == 8 and round_channels(3, 8) == 8  # never below the divisor
    assert round_channels(12, 8) == 16 and round_channels(11.9, 8) == 8  # half rounds up
    for ch, b in zip(preset("mobilenet_v1").choices, preset("mobilenet_v1").base_widths):
        assert list(ch) == sorted(set(ch)) and all(c % 8 == 0 and c >= 8 for c in ch)
        expect = sorted({max(8, int(np.floor(b * m / 8 + 0.5)) * 8) for m in np.linspace(0.2, 1.5, 14)})
        assert list(ch) == expect


def _brute_count(space, widths, kind):
    """Straight-line parameter/MAC count of a deployed MobileNetV1 (BN folded) to check the chain form."""
    sizes = space.feature_sizes()
    p = m = 0
    p += 27 * widths[0] + widths[0]
    m += sizes[0] ** 2 * 27 * widths[0]
    for i in range(1, len(widths)):
        cin, cout, hw = widths[i - 1], widths[i], sizes[i] ** 2
        p += 9 * cin + cin + cin * cout + cout
        m += hw * 9 * cin + hw * cin * cout
    p += widths[-1] * space.classes + space.classes
    m += widths[-1] * space.classes
    return p if kind == "params" else m


def test_params_and_macs_equal_direct_count():
    s = preset("mobilenet_v1")
    rng = np.random.default_rng(0)
    for w in [s.max_widths, s.min_widths, s.uniform(1.0)] + [s.random_widths(rng) for _ in range(20)]:
        assert s.params(w) == _brute_count(s, w, "params")
        assert s.macs(w) == _brute_count(s, w, "macs")
    # MobileNetV1 1.0 at 224: the well-known ~569 M MACs and ~4.2 M parameters
    assert abs(s.macs(s.uniform(1.0)) / 1e6 - 569) < 5
    assert abs(s.params(s.uniform(1.0)) / 1e6 - 4.2) < 0.1


def test_json_round_trip_and_hash(tmp_path):
    s = preset("mobilenet_v1_cifar", resolution=48)
    s.save(tmp_path / "s.json")
    t = SearchSpace.load(tmp_path / "s.json")
    assert t == s and t.space_hash == s.space_hash and t.choices == s.choices
    # the hash is a stable function of the definition: pinned so a change to it is deliberate
    assert preset("mobilenet_v1").space_hash == "bebcee09900c904f"
    assert preset("mobilenet_v1", levels=13).space_hash != preset("mobilenet_v1").space_hash


def test_edited_space_file_is_refused(tmp_path):
    d = preset("mobilenet_v1").to_json()
    d["resolution"] = 160
    (tmp_path / "s.json").write_text(json.dumps(d))
    with pytest.raises(UsageError, match="edited"):
        SearchSpace.load(tmp_path / "s.json")


def test_mismatch_names_both_hashes():
    a, b = preset("mobilenet_v1"), preset("mobilenet_v1_cifar")
    with pytest.raises(SpaceMismatch) as e:
        check_space({"space_hash": a.space_hash}, b, "stats")
    assert a.space_hash in str(e.value) and b.space_hash in str(e.value)


def test_validate_names_the_bad_width():
    s = tiny_space()
    with pytest.raises(UsageError, match="not a choice"):
        s.validate((9,) + s.max_widths[1:])
    with pytest.raises(UsageError, match="width variables"):
        s.validate(s.max_widths[:-1])
    assert s.to_widths(s.to_indices(s.max_widths)) == s.max_widths


def test_cli_lists_14_layers_and_writes_json(tmp_path):
    p = run_module("tfwidth.space", "--preset", "mobilenet_v1", "-o", tmp_path / "space.json")
    assert p.returncode == 0, p.stderr
    rows = [l for l in p.stdout.splitlines() if l.startswith(("stem", "block"))]
    assert len(rows) == 14 and rows[0].split()[-6:] == ["8", "16", "24", "32", "40", "48"]
    assert SearchSpace.load(tmp_path / "space.json") == preset("mobilenet_v1")


def test_cli_bad_input():
    assert_usage_error(run_module("tfwidth.space", "--preset", "resnet"), "unknown preset")
    assert_usage_error(run_module("tfwidth.space", "--min-mult", "2", "--max-mult", "1"), "multipliers")
