"""The architecture seam: what must not change when MobileNetV1 moves behind tfwidth.arch (issue 19, item 3).

Pinned: the presets' space hashes (every artefact records one); a supernet run directory written by the code before
the seam (commit BASE) loads, resumes and exports with identical outputs, and training is bit-equal to it. Then the
registry, and that an architecture's pieces agree with each other and nothing outside tfwidth/arch knows them."""
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tfwidth.space import preset, tiny_space

ROOT = Path(__file__).resolve().parents[1]
BASE = "9ace758"  # the last commit before the seam

# space_hash of each preset, computed by the code at BASE: the hash is what every artefact is checked against
PINNED = {
    ("mobilenet_v1", 224): "bebcee09900c904f",
    ("mobilenet_v1", 128): "d36fadeda57744c9",
    ("mobilenet_v1", 64): "d6a569be6787386b",
    ("mobilenet_v1_cifar", 32): "723350a3a4c77cc2",
    ("mobilenet_v1_cifar", 16): "a3d99f06f94a21d9",
}


@pytest.mark.parametrize("name,resolution", sorted(PINNED))
def test_preset_hashes_are_unchanged(name, resolution):
    assert preset(name, resolution=resolution).space_hash == PINNED[name, resolution]


def test_tiny_space_hashes_are_unchanged():
    assert tiny_space().space_hash == "7cb9257f98008b2b"
    assert tiny_space(layers=7, levels=5).space_hash == "292831ad635f79ab"


# ---- a run directory of the code before the seam ---------------------------------------------------------------
OLD_RUN = textwrap.dedent("""
    import sys
    import numpy as np
    from tfwidth.data import load_data
    from tfwidth.space import tiny_space
    from tfwidth.training import train_supernet
    space = tiny_space(resolution=8, levels=3, base=8, layers=4)
    npz, run, out = sys.argv[1:4]
    data = load_data("npz:" + npz, space, 16, seed=0)
    model = train_supernet(space, data, run, 1, lr=0.1, warmup_epochs=0.5, verbose=0, tensorboard=False,
                           validate=False, summary=False).model
    x = np.random.default_rng(3).normal(size=(5, 8, 8, 3)).astype(np.float32)
    widths = [space.max_widths, space.min_widths, space.random_widths(np.random.default_rng(4))]
    np.savez(out, x=x, widths=np.array(widths),
             logits=np.stack([model.predict_widths(x, w).numpy() for w in widths]),
             plain=np.stack([model.to_plain(w)(x, training=False).numpy() for w in widths]))
""")


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    """A run directory (1 epoch on random images) and reference outputs, written by the code at BASE."""
    tmp = tmp_path_factory.mktemp("old")
    try:
        blob = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", BASE, "tfwidth", "device_profiler"],
                              capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip(f"the code at {BASE} is not available (no git checkout)")
    (tmp / "old.tar").write_bytes(blob)
    with tarfile.open(tmp / "old.tar") as t:
        t.extractall(tmp / "code")
    rng = np.random.default_rng(0)
    np.savez(tmp / "tiny.npz", x_train=rng.integers(0, 256, (48, 8, 8, 3), dtype=np.uint8),
             y_train=np.arange(48) % 10, x_test=rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8),
             y_test=np.arange(10) % 10)
    env = dict(os.environ, PYTHONPATH=str(tmp / "code"))
    p = subprocess.run([sys.executable, "-c", OLD_RUN, str(tmp / "tiny.npz"), str(tmp / "run"), str(tmp / "ref.npz")],
                       cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return tmp


@pytest.mark.slow
def test_an_old_run_directory_loads_with_identical_outputs(old_run):
    from tfwidth.training import load_supernet
    space = tiny_space(resolution=8, levels=3, base=8, layers=4)
    ref = np.load(old_run / "ref.npz")
    model = load_supernet(old_run / "run", space)
    for w, logits, plain in zip(ref["widths"], ref["logits"], ref["plain"]):
        w = tuple(int(c) for c in w)
        np.testing.assert_array_equal(model.predict_widths(ref["x"], w).numpy(), logits)
        np.testing.assert_allclose(model.to_plain(w)(ref["x"], training=False).numpy(), plain, rtol=1e-6,
                                   atol=1e-6)


@pytest.mark.slow
def test_an_old_run_directory_resumes(old_run, tmp_path):
    """Resuming restores the model and the optimizer (assert_existing_objects_matched): every variable is found."""
    import shutil
    from tfwidth.data import load_data
    from tfwidth.training import train_supernet
    space = tiny_space(resolution=8, levels=3, base=8, layers=4)
    run = tmp_path / "run"
    shutil.copytree(old_run / "run", run)
    data = load_data(f"npz:{old_run / 'tiny.npz'}", space, 16, seed=0)
    res = train_supernet(space, data, run, 2, lr=0.1, warmup_epochs=0.5, verbose=0, tensorboard=False,
                         validate=False, summary=False, resume=True)
    assert json.loads((run / "ckpt" / "checkpoint.json").read_text())["epoch"] == 2
    assert int(res.model.stats_epochs.numpy()) == 2


@pytest.mark.slow
def test_training_is_bit_equal_to_the_code_before_the_seam(old_run, tmp_path):
    """The same epoch trained by this code: the same weights to the bit (same initial weights, same layer and
    variable order, same arithmetic), so the architecture moved without changing a number."""
    from tfwidth.data import load_data
    from tfwidth.training import train_supernet
    space = tiny_space(resolution=8, levels=3, base=8, layers=4)
    ref = np.load(old_run / "ref.npz")
    data = load_data(f"npz:{old_run / 'tiny.npz'}", space, 16, seed=0)
    model = train_supernet(space, data, tmp_path / "run", 1, lr=0.1, warmup_epochs=0.5, verbose=0, tensorboard=False,
                           validate=False, summary=False).model
    for w, logits in zip(ref["widths"], ref["logits"]):
        np.testing.assert_array_equal(model.predict_widths(ref["x"], tuple(int(c) for c in w)).numpy(), logits)


# ---- the registry ------------------------------------------------------------------------------------------------
def test_registry_finds_architectures_and_presets_by_name():
    from tfwidth import arch
    from tfwidth.errors import UsageError
    assert "mobilenet_v1" in arch.names()
    v1 = arch.get("mobilenet_v1")
    assert isinstance(v1, arch.Architecture) and preset("mobilenet_v1_cifar").architecture is v1
    assert tiny_space().architecture is arch.get(arch.DEFAULT_ARCH)
    got = arch.presets()
    assert got["mobilenet_v1"][0] == got["mobilenet_v1_cifar"][0] == "mobilenet_v1"
    assert {arch.DEFAULT_PRESET, arch.SPACE_PRESET} <= set(got)
    with pytest.raises(UsageError, match="unknown architecture 'resnet'; known: mobilenet_v1, mobilenet_v2"):
        arch.get("resnet")
    with pytest.raises(ValueError, match="taken"):
        arch.register(v1)


def test_a_space_records_a_non_default_architecture(monkeypatch):
    """A space of another architecture hashes its name (the default one's spaces leave it out, keeping their
    hashes), and its file says which architecture to read it with."""
    from tfwidth import arch
    from tfwidth.arch import base
    from tfwidth.errors import UsageError
    from tfwidth.space import SearchSpace

    class Other(type(arch.get("mobilenet_v1"))):
        name, presets = "other_chain", {}

    monkeypatch.setitem(base._REGISTRY, "other_chain", Other())
    v1 = tiny_space()
    other = SearchSpace(**{**v1.to_dict(), "arch": "other_chain"})
    assert "arch" not in v1.to_dict() and other.to_dict()["arch"] == "other_chain"
    assert other.space_hash != v1.space_hash and other.architecture.name == "other_chain"
    assert SearchSpace.from_dict(other.to_json()) == other
    with pytest.raises(UsageError, match="unknown architecture 'gone'"):
        SearchSpace.from_dict({**v1.to_dict(), "arch": "gone"})


def test_cli_lists_architectures_and_presets():
    from conftest import run_module
    p = run_module("tfwidth.space", "--list")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("mobilenet_v1  MobileNetV1")
    for (name, res), h in PINNED.items():
        if res == {"mobilenet_v1": 224, "mobilenet_v1_cifar": 32}[name]:
            assert any(l.split()[0] == name and l.endswith(f"hash {h}") for l in lines[1:]), (name, p.stdout)


# ---- nothing outside the architecture's module knows MobileNetV1 ---------------------------------------------------
# Its numbers and layer names, in the source text or as string constants. Allowed: its own module, and the package's
# __init__, which names the defaults (the architecture of spaces without one, the CLIs' default presets).
# (Another architecture's module may use the same layer names for its own layers.)
ALLOWED = {"tfwidth/arch/mobilenet_v1.py", "tfwidth/arch/mobilenet_v2.py", "tfwidth/arch/__init__.py"}
V1_TEXT = [r"32,\s*64,\s*128,\s*128,\s*256",  # the base widths
           r"2,\s*1,\s*2,\s*1,\s*2,\s*1,\s*2,\s*1,\s*1,\s*1,\s*1,\s*1,\s*2,\s*1",  # the ImageNet strides
           r"1,\s*1,\s*2,\s*1,\s*2,\s*1,\s*2,\s*1,\s*1,\s*1,\s*1,\s*1,\s*1,\s*1",  # the CIFAR strides
           r"b\{[^}]*\}_(dw|pw)", r"\bb\d+_(dw|pw)", r"conv_pw", r"stem_(conv|bn|relu)"]  # layer names


def _v1_constants():
    from tfwidth import arch
    layers = {"stem_conv", "stem_bn", "stem_relu", "classifier"}
    return layers | set(arch.presets()) | {"mobilenet_v1"}


def test_no_module_outside_the_architecture_names_mobilenet_v1():
    import ast
    import re
    names = _v1_constants()
    found = []
    for p in sorted((ROOT / "tfwidth").rglob("*.py")):
        rel = p.relative_to(ROOT).as_posix()
        if rel in ALLOWED:
            continue
        text = p.read_text()
        found += [f"{rel}: {m.group(0)!r}" for pat in V1_TEXT for m in re.finditer(pat, text)]
        found += [f"{rel}:{n.lineno}: {n.value!r}" for n in ast.walk(ast.parse(text))
                  if isinstance(n, ast.Constant) and isinstance(n.value, str)
                  and (n.value in names or re.fullmatch(r"_(dw|pw)(_bn|_relu)?", n.value))]
    assert not found, "MobileNetV1 specifics outside tfwidth/arch/mobilenet_v1.py:\n" + "\n".join(found)


def test_the_check_sees_what_it_looks_for():
    import re
    text = (ROOT / "tfwidth" / "arch" / "mobilenet_v1.py").read_text()
    assert all(re.search(pat, text) for pat in V1_TEXT if pat not in (r"conv_pw", r"\bb\d+_(dw|pw)"))
    assert re.search(V1_TEXT[3], 'f"b{i}_pw"') and re.search(V1_TEXT[4], '"b3_dw_bn"')
    assert {"stem_conv", "classifier", "mobilenet_v1_cifar"} <= _v1_constants()


# ---- an architecture's pieces agree with each other (every registered one, on each of its presets, made small) -----
def _small_presets():
    from tfwidth import arch
    return sorted(arch.presets())


def _small(name):
    return preset(name, resolution=32, min_mult=0.2, max_mult=0.5, levels=3)


@pytest.mark.parametrize("name", _small_presets())
def test_the_graph_the_costs_and_the_latency_terms_agree(name):
    space = _small(name)
    a, L, ks = space.architecture, space.num_layers, space.num_choices
    assert len(space.layer_names) == len(set(space.layer_names)) == L
    assert all(0 <= i < j < L for i, j in space.edges) and len(set(space.edges)) == len(space.edges)
    for cost in (space.param_chain(), space.mac_chain()):
        assert cost.edges == space.edges and [u.shape for u in cost.unary] == [(k,) for k in ks]
        assert [p.shape for p in cost.pairwise] == [(ks[i], ks[j]) for i, j in space.edges]
    terms = a.latency_terms(space)
    assert all(len(t.variables) == 1 or tuple(t.variables) in space.edges for t in terms)
    covered = sorted(i for _, at in a.table_layout(space)
                     for i in (range(len(terms))[at] if isinstance(at, slice) else [at]))
    assert covered == list(range(len(terms)))  # table.json holds every term once


@pytest.mark.slow
@pytest.mark.parametrize("name", _small_presets())
def test_the_plain_model_the_counts_the_template_and_the_supernet_agree(name):
    """params: the plain model's parameters with BatchNorm folded (4 per channel -> 1 bias); MACs: counted from its
    layers' shapes; the template map names exactly its conv and dense layers; the supernet's layers are its weighted
    layers and compute what it computes."""
    import tensorflow as tf
    import tf_keras as keras
    from tfwidth.supernet import Supernet
    space = _small(name)
    rng = np.random.default_rng(0)
    widths = space.random_widths(rng)
    plain = space.architecture.build(space, widths)
    bn = [l for l in plain.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert space.params(widths) == plain.count_params() - 3 * sum(l.gamma.shape[0] for l in bn)
    macs = 0
    for l in plain.layers:
        out = l.output_shape
        if isinstance(l, keras.layers.DepthwiseConv2D):
            macs += out[1] * out[2] * int(np.prod(l.kernel_size)) * out[3]
        elif isinstance(l, keras.layers.Conv2D):
            macs += out[1] * out[2] * int(np.prod(l.kernel.shape))
        elif isinstance(l, keras.layers.Dense):
            macs += int(np.prod(l.kernel.shape))
    assert space.macs(widths) == macs
    convs = {l.name for l in plain.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                                                             keras.layers.Dense))}
    assert set(space.architecture.layer_variables(space)) == convs
    tf.random.set_seed(0)
    net = Supernet(space)
    assert {l.name for l in net.slim_layers()} == {l.name for l in plain.layers if l.weights}
    x = rng.normal(size=(2, space.resolution, space.resolution, space.in_channels)).astype(np.float32)
    np.testing.assert_allclose(net.predict_widths(x, widths).numpy(), net.to_plain(widths)(x).numpy(),
                               rtol=1e-5, atol=1e-5)
