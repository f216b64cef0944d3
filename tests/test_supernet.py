"""Supernet == plain MobileNetV1 with sliced weights; masking == slicing; widths never retrace."""
import numpy as np
import pytest

import tfwidth  # noqa: F401
import tensorflow as tf

from tfwidth.space import tiny_space
from tfwidth.supernet import Supernet

SPACE = tiny_space(resolution=8, levels=3, base=8, layers=4)


def _randomise_bn(model, rng):
    # Fresh BN (gamma 1, beta 0, mean 0, var 1) would hide slicing mistakes in the statistics.
    for b in model.bn_layers():
        c = b.max_channels
        b.gamma.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
        b.beta.assign(rng.normal(0, 0.2, c).astype(np.float32))
        b.moving_mean.assign(rng.normal(0, 0.2, c).astype(np.float32))
        b.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype(np.float32))


@pytest.fixture(scope="module")
def net():
    tf.random.set_seed(0)
    model = Supernet(SPACE)
    _randomise_bn(model, np.random.default_rng(0))
    return model


def _images(n=6, seed=1):
    return np.random.default_rng(seed).normal(size=(n, SPACE.resolution, SPACE.resolution, 3)).astype(np.float32)


CONFIGS = [SPACE.max_widths, SPACE.min_widths, (12, 4, 8, 12), (4, 12, 12, 8)]


@pytest.mark.parametrize("widths", CONFIGS)
def test_equals_plain_model(net, widths):
    x = _images()
    plain = net.to_plain(widths)
    for training in (False, True):
        got = net.forward(x, tf.constant(widths), training=training).numpy()
        want = plain(x, training=training).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_plain_has_layer_names_and_bn_stats(net):
    w = CONFIGS[2]
    plain = net.to_plain(w)
    np.testing.assert_array_equal(plain.get_layer("b2_pw_bn").moving_variance.numpy(),
                                  net.pw_bn[1].moving_variance.numpy()[:w[2]])
    assert plain.get_layer("b3_pw").kernel.shape == (1, 1, w[2], w[3])


@pytest.mark.parametrize("training", [False, True])
def test_masking_equals_slicing(net, training):
    x = _images()
    for w in CONFIGS:
        sliced = net.forward(x, tf.constant(w), training=training).numpy()
        ex = tf.constant(np.tile(w, (len(x), 1)), tf.int32)
        masked = net.forward(x, tf.constant(SPACE.max_widths), training=training, ex_widths=ex).numpy()
        np.testing.assert_allclose(masked, sliced, atol=1e-5, rtol=1e-5)


def test_per_example_masks_are_per_example(net):
    # Inference mode: each example's logits depend only on its own widths, so a mixed batch equals the sliced
    # results row by row.
    x = _images(4)
    ex = np.array([CONFIGS[i % len(CONFIGS)] for i in range(4)], np.int32)
    masked = net.forward(x, tf.constant(SPACE.max_widths), ex_widths=tf.constant(ex)).numpy()
    for i in range(4):
        np.testing.assert_allclose(masked[i], net.forward(x[i:i + 1], tf.constant(ex[i])).numpy()[0], atol=1e-5)


def test_changing_widths_does_not_retrace(net):
    x = _images(2)
    for w in CONFIGS + [SPACE.uniform(1.0)]:
        net.predict_widths(x, w)
    assert net._predict_fn.experimental_get_tracing_count() == 1


def test_set_sampling_validates(net):
    from tfwidth.errors import UsageError
    p = net.uniform_probs()
    net.set_sampling(p)
    with pytest.raises(UsageError, match="sum to 1"):
        net.set_sampling(p * 2)
    with pytest.raises(UsageError, match="shape"):
        net.set_sampling(p[:2])


def test_one_layer_draws_change_one_layer(net):
    seed = tf.constant([3, 7], tf.int64)
    widths, ex, idx, attribute = net.draw(seed, 64, 0, 64)
    ex, idx, attribute = ex.numpy(), idx.numpy(), attribute.numpy()
    assert (attribute.sum(1) == 1).all()
    mx = np.array(SPACE.max_widths)
    assert ((ex != mx) <= attribute).all()  # only the attributed layer may differ from max
    # stateless: same seed, same draw; the second half of a global draw is what replica 1 gets
    _, ex2, _, _ = net.draw(seed, 64, 32, 32)
    np.testing.assert_array_equal(ex2.numpy(), ex[32:])


def test_sampling_probs_are_respected(net):
    p = np.zeros_like(net.uniform_probs())
    p[:, 0] = 1.0  # always the narrowest
    net.set_sampling(p)
    try:
        _, ex, _, _ = net.draw(tf.constant([1, 2], tf.int64), 32, 0, 32)
        ex = ex.numpy()
        assert set(ex.ravel()) <= set(SPACE.min_widths) | set(SPACE.max_widths)
        assert (ex.min(1) == min(SPACE.min_widths)).all()
    finally:
        net.set_sampling(net.uniform_probs())


class _Calib:
    """The part of tfwidth.data.Data that recalibration and evaluation use."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def calibration(self, batches):
        return tf.data.Dataset.from_tensor_slices((self.x, self.y)).batch(len(self.x)).take(batches)

    @property
    def eval(self):
        return tf.data.Dataset.from_tensor_slices((self.x, self.y)).batch(4)


def test_recalibrate_bn_estimates_the_configuration_statistics(net):
    import tf_keras as keras
    x = _images(8, seed=5)
    w = CONFIGS[3]
    saved = net.bn_state()
    try:
        assert net.recalibrate_bn(w, _Calib(x, np.zeros(8, np.int32)), batches=1) == 1
        plain = net.to_plain(w)
        # calibration runs in training mode: upstream layers normalise with batch statistics
        pre_bn = keras.Model(plain.input, plain.get_layer("b2_pw").output)(x, training=True).numpy()
        n = pre_bn.shape[0] * pre_bn.shape[1] * pre_bn.shape[2]
        bn = net.pw_bn[1]
        np.testing.assert_allclose(bn.moving_mean.numpy()[:w[2]], pre_bn.mean((0, 1, 2)), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(bn.moving_variance.numpy()[:w[2]], pre_bn.var((0, 1, 2)) * n / (n - 1),
                                   atol=1e-5, rtol=1e-4)
        # channels the configuration does not use are reset, not left with another configuration's statistics
        assert (bn.moving_mean.numpy()[w[2]:] == 0).all() and (bn.moving_variance.numpy()[w[2]:] == 1).all()
    finally:
        net.set_bn_state(saved)


def test_evaluate_widths_restores_bn_statistics(net):
    x = _images(8, seed=6)
    y = np.argmax(net.forward(x, tf.constant(SPACE.max_widths)).numpy(), -1).astype(np.int32)
    before = net.bn_state()
    # with the current statistics, the max network agrees with its own predictions
    assert net.evaluate_widths(SPACE.max_widths, _Calib(x, y), calib_batches=0) == 1.0
    acc = net.evaluate_widths(CONFIGS[2], _Calib(x, y), calib_batches=1)
    assert 0.0 <= acc <= 1.0
    for (m0, v0), (m1, v1) in zip(before, net.bn_state()):
        np.testing.assert_array_equal(m0, m1)
        np.testing.assert_array_equal(v0, v1)


def test_tf_statistics_equal_numpy_statistics():
    from tfwidth.stats import WidthStats
    model = Supernet(SPACE, sampling="all-layers")
    rng = np.random.default_rng(3)
    ref = WidthStats(SPACE)
    for step in range(3):
        idx = np.stack([rng.integers(0, k, 5) for k in SPACE.num_choices], axis=1).astype(np.int32)
        mask = rng.random(idx.shape) < 0.6
        delta = rng.normal(size=5)
        model._accumulate_stats(tf.constant(idx), tf.constant(mask), tf.constant(delta, tf.float32))
        ref.update(idx, delta.astype(np.float32), mask)
        if step == 1:
            model.end_stats_epoch()
            ref.end_epoch()
    got = model.width_stats()
    for view in ("running", "window", "current"):
        for a, b in zip(got.normal_equations(view), ref.normal_equations(view)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
        for a, b in zip(got.costs(view), ref.costs(view)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum, ref.sum, rtol=1e-6, atol=1e-6)
