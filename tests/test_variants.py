"""Variants cut from the template by flatbuffer patching equal a normal conversion of the same-width model."""
import numpy as np
import pytest

import tfwidth  # noqa: F401
from device_profiler.errors import UsageError
from device_profiler.variants import VariantMaker, read_tensors
from tfwidth.profile import convert, make_template, sliced_model, template_model, unshare_constants, build_manifest
from tfwidth.errors import UsageError as HostUsageError
from tfwidth.space import tiny_space
from conftest import run_tflite

pytestmark = pytest.mark.slow
SPACE = tiny_space()


def structure(model_bytes):
    """Op types with their input/output tensor shapes, in execution order."""
    from tensorflow.lite.python import schema_py_generated as S
    m = S.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    shapes = [tuple(t["shape"]) for t in read_tensors(model_bytes)[0]]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in m.operatorCodes]
    return [(codes[op.opcodeIndex], tuple(shapes[i] for i in op.inputs if i >= 0), tuple(shapes[i] for i in op.outputs))
            for op in m.subgraphs[0].operators]


def configs(rng, n):
    return [SPACE.min_widths] + [SPACE.random_widths(rng) for _ in range(n)]


@pytest.fixture(scope="module")
def keras_max():
    return template_model(SPACE, seed=3)


def check_variants_equal_conversions(space, model, fmt, rng, random_configs=1):
    """The template of ``model`` (its space's max-width plain model) cut to the narrowest and ``random_configs``
    random configurations: each variant has the op types and tensor shapes of the same-width model converted
    directly, and computes what it computes on 200 random images (fp32: to 1e-4; int8: the same argmax on >= 99%)."""
    tflite, manifest = make_template(space, fmt, seed=3, model=model)
    maker = VariantMaker(tflite, manifest)
    x = rng.standard_normal((200, space.resolution, space.resolution, 3)).astype(np.float32)
    assert maker._layout is not None, "the compact writer should understand the converter's layout"
    for widths in [space.min_widths] + [space.random_widths(rng) for _ in range(random_configs)]:
        variant = maker.make(widths)
        reference = convert(sliced_model(model, space, widths), fmt, seed=3)
        assert structure(variant) == structure(reference), widths
        a, b = run_tflite(variant, x), run_tflite(reference, x)
        if fmt == "fp32":
            assert np.abs(a - b).max() <= 1e-4, widths
        else:
            assert (a.argmax(1) == b.argmax(1)).mean() >= 0.99, widths


@pytest.mark.parametrize("fmt", ["fp32", "int8"])
def test_variant_equals_converted_sliced_model(keras_max, fmt):
    check_variants_equal_conversions(SPACE, keras_max, fmt, np.random.default_rng(0))


def test_merged_constants_are_duplicated_before_slicing():
    import tf_keras as keras
    from tensorflow.lite.python import schema_py_generated as S
    model = template_model(SPACE, seed=1)
    for layer in model.layers:  # the same BatchNorm everywhere: every folded bias is [0.25, 0.25, ...]
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([np.ones(c), np.full(c, 0.25), np.zeros(c), np.ones(c)])
    raw = convert(model, "fp32")
    m = S.ModelT.InitFromPackedBuf(bytearray(raw), 0)
    biases = [op.inputs[2] for op in m.subgraphs[0].operators if len(op.inputs) > 2]
    assert len(set(biases)) < len(biases), "the trap did not trigger: the converter kept the equal biases apart"
    with pytest.raises(HostUsageError, match="two width variables"):
        build_manifest(m, SPACE, "fp32")
    unshared = unshare_constants(raw)
    m2 = S.ModelT.InitFromPackedBuf(bytearray(unshared), 0)
    tensors2, buffers2 = read_tensors(unshared)
    operands = [i for op in m2.subgraphs[0].operators for i in op.inputs[1:] if i >= 0]
    assert len(operands) == len(set(operands))
    assert len({tensors2[i]["buffer"] for i in operands}) == len(operands)
    assert all(b["pos"] % 16 == 0 for b in buffers2 if b["len"])
    rng = np.random.default_rng(5)
    x = rng.standard_normal((20, SPACE.resolution, SPACE.resolution, 3)).astype(np.float32)
    np.testing.assert_array_equal(run_tflite(unshared, x), run_tflite(raw, x))
    manifest = build_manifest(m2, SPACE, "fp32")
    maker = VariantMaker(unshared, manifest)
    for widths in configs(rng, 1)[1:]:
        ref = convert(sliced_model(model, SPACE, widths), "fp32")
        assert structure(maker.make(widths)) == structure(ref)
        assert np.abs(run_tflite(maker.make(widths), x) - run_tflite(ref, x)).max() <= 1e-4


def test_compact_and_in_place_writers_agree(keras_max):
    tflite, manifest = make_template(SPACE, "fp32", seed=3, model=keras_max)
    compact = VariantMaker(tflite, manifest)
    in_place = VariantMaker(tflite, manifest)
    in_place._layout, in_place._work = None, bytearray(tflite)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, SPACE.resolution, SPACE.resolution, 3)).astype(np.float32)
    np.testing.assert_array_equal(run_tflite(compact.make(SPACE.max_widths), x), run_tflite(tflite, x))
    for widths in configs(rng, 5):
        a, b = compact.make(widths), in_place.make(widths)
        assert len(a) < len(b) == len(tflite)
        assert structure(a) == structure(b)
        np.testing.assert_array_equal(run_tflite(a, x), run_tflite(b, x))


def test_corrupted_template_and_foreign_manifest_are_refused(keras_max):
    tflite, manifest = make_template(SPACE, "fp32", seed=3, model=keras_max)
    with pytest.raises(UsageError, match="does not match its manifest"):
        VariantMaker(tflite[:-100], manifest)
    no_sha = dict(manifest, tflite_sha256=None)
    with pytest.raises(UsageError, match="not a readable .tflite"):
        VariantMaker(b"\x00" * 64, no_sha)
    other = dict(no_sha, tensors={k: dict(v, name="other") for k, v in manifest["tensors"].items()})
    with pytest.raises(UsageError, match="regenerate both"):
        VariantMaker(tflite, other)
    maker = VariantMaker(tflite, manifest)
    with pytest.raises(UsageError, match="not a choice"):
        maker.make((7,) + SPACE.max_widths[1:])
    with pytest.raises(UsageError, match="width variables"):
        maker.make(SPACE.max_widths[:-1])
