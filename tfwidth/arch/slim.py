"""Slimmable layers: each keeps its max-width weights and computes with the first c channels, c an int32 tensor.

The building blocks of every architecture's supernet (tfwidth.arch.<name>.slim_layers; the model and its training are
tfwidth/supernet.py). Stock Keras layers fix their channel count at build time, hence these small layers. Each one
becomes the plain layer of the same name (the architecture's ``build``) with ``corner`` of its weights, in the same
order: the slimmable convention, a narrow layer is the first channels of the wide one. ``decayed``: whether its
kernel takes the weight decay, as the plain builder gives that layer type a kernel regularizer.

Pointwise convolutions are reshape + matmul on a CPU, faster than a 1x1 Conv2D there (docs/benchmarks.md,
"Supernet training step"), and 1x1 convolutions where a GPU is visible (``POINTWISE``; docs/scale.md says how to
check which is faster on a GPU).

Mixed precision (``precision_scope``): the convolutions and the classifier compute in the policy's 16-bit type with
float32 weights (tf_keras casts them as they are read); BatchNorm always computes in float32 (its statistics are
sums over the batch), and the supernet casts its logits to float32 before any loss.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

import tfwidth  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

BN_EPSILON = 1e-3  # tf_keras BatchNormalization defaults, so the exported plain model behaves identically
BN_MOMENTUM = 0.9  # faster than Keras 0.99 so the max path's moving statistics are usable after short runs
# How SlimPointwise computes: "auto" (matmul on a CPU, a 1x1 conv where a GPU is visible), "matmul" or "conv"; read
# when a function is traced. TFWIDTH_POINTWISE sets it for any command; tools/bench_train.py --pointwise times both
POINTWISE = os.environ.get("TFWIDTH_POINTWISE", "auto")
MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")


@contextlib.contextmanager
def precision_scope(policy: str | None):
    """Layers built inside take tf_keras dtype policy ``policy`` (None, "float32" or one of MIXED_POLICIES: float32
    variables, 16-bit computation); the global policy is restored afterwards."""
    if policy in (None, "float32"):
        yield
        return
    if policy not in MIXED_POLICIES:
        raise ValueError(f"unknown precision {policy!r}; use one of {MIXED_POLICIES}")
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def pointwise_form() -> str:
    """How pointwise convolutions compute now: POINTWISE, with "auto" resolved by the devices TensorFlow sees."""
    if POINTWISE not in ("auto", "matmul", "conv"):
        raise ValueError(f"TFWIDTH_POINTWISE={POINTWISE!r}; use auto, matmul or conv")
    if POINTWISE != "auto":
        return POINTWISE
    return "conv" if tf.config.list_logical_devices("GPU") else "matmul"


def corner(weight: np.ndarray, shape) -> np.ndarray:
    """The first channels of ``weight`` along every axis, as an array of ``shape`` (leading axes of size 1 added
    when ``shape`` has more: a pointwise [in, out] kernel becomes a 1x1 conv's [1, 1, in, out])."""
    w = np.asarray(weight)
    w = w.reshape((1,) * (len(shape) - w.ndim) + w.shape)
    return w[tuple(slice(0, n) for n in shape)]


class SlimLayer(keras.layers.Layer):
    """A layer of the supernet; ``decayed``: its ``kernel`` takes the weight decay (convs and dense, as in the plain
    model; depthwise kernels and BatchNorm do not)."""
    decayed = False


class SlimConv(SlimLayer):
    """A full 3x3 conv (a stem, on the image) whose output channels are the first c of the max kernel."""

    decayed = True

    def __init__(self, in_channels: int, max_out: int, stride: int, init_seed=None, **kw):
        super().__init__(**kw)
        self.in_channels, self.max_out, self.stride, self.init_seed = in_channels, max_out, stride, init_seed

    def build(self, input_shape=None):
        self.kernel = self.add_weight("kernel", (3, 3, self.in_channels, self.max_out),
                                      initializer=keras.initializers.HeNormal(self.init_seed))
        self.built = True

    def call(self, x, c):
        return tf.nn.conv2d(x, self.kernel[:, :, :, :c], self.stride, "SAME")


class SlimDepthwise(SlimLayer):
    """3x3 depthwise conv on however many channels arrive (the previous variable's width)."""

    def __init__(self, max_channels: int, stride: int, init_seed=None, **kw):
        super().__init__(**kw)
        self.max_channels, self.stride, self.init_seed = max_channels, stride, init_seed

    def build(self, input_shape=None):
        self.kernel = self.add_weight("depthwise_kernel", (3, 3, self.max_channels, 1),
                                      initializer=keras.initializers.HeNormal(self.init_seed))
        self.built = True

    def call(self, x):
        c = tf.shape(x)[-1]
        return tf.nn.depthwise_conv2d(x, self.kernel[:, :, :c, :], [1, self.stride, self.stride, 1], "SAME")


class SlimPointwise(SlimLayer):
    """1x1 conv with the [c_in, c_out] corner of a [max_in, max_out] kernel: reshape + matmul, or a 1x1 conv
    (``pointwise_form``)."""

    decayed = True

    def __init__(self, max_in: int, max_out: int, init_seed=None, **kw):
        super().__init__(**kw)
        self.max_in, self.max_out, self.init_seed = max_in, max_out, init_seed

    def build(self, input_shape=None):
        self.kernel = self.add_weight("kernel", (self.max_in, self.max_out),
                                      initializer=keras.initializers.HeNormal(self.init_seed))
        self.built = True

    def call(self, x, c):
        s = tf.shape(x)
        kernel = self.kernel[:s[3], :c]
        if pointwise_form() == "conv":
            return tf.nn.conv2d(x, kernel[None, None], 1, "VALID")
        y = tf.matmul(tf.reshape(x, [-1, s[3]]), kernel)
        return tf.reshape(y, [s[0], s[1], s[2], c])


class SlimDense(SlimLayer):
    decayed = True

    def __init__(self, max_in: int, units: int, init_seed=None, **kw):
        super().__init__(**kw)
        self.max_in, self.units, self.init_seed = max_in, units, init_seed

    def build(self, input_shape=None):
        self.kernel = self.add_weight("kernel", (self.max_in, self.units),
                                      initializer=keras.initializers.GlorotUniform(self.init_seed))
        self.bias = self.add_weight("bias", (self.units,), initializer="zeros")
        self.built = True

    def call(self, x):
        return tf.matmul(x, self.kernel[:tf.shape(x)[-1]]) + self.bias


class SlimBatchNorm(SlimLayer):
    """BatchNorm over the first c channels.

    training=False: moving statistics. training=True: batch statistics (fused kernel when nothing is masked and there
    is a single replica; otherwise explicit moments, masked per example and summed across replicas, i.e. a
    synchronised BatchNorm, so that N devices compute what one device computes). ``update`` (a scalar, or None) moves
    the first c moving statistics towards the batch's: moving += update * (batch - moving), with the Bessel-corrected
    batch variance as tf_keras does.
    """

    def __init__(self, max_channels: int, **kw):
        kw.setdefault("dtype", "float32")  # also under a mixed-precision policy: inputs are cast to float32
        super().__init__(**kw)
        self.max_channels = max_channels

    def build(self, input_shape=None):
        c = (self.max_channels,)
        self.gamma = self.add_weight("gamma", c, initializer="ones")
        self.beta = self.add_weight("beta", c, initializer="zeros")
        self.moving_mean = self.add_weight("moving_mean", c, initializer="zeros", trainable=False,
                                           aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.moving_variance = self.add_weight("moving_variance", c, initializer="ones", trainable=False,
                                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.built = True

    def call(self, x, c, training=False, mask=None, update=None):
        gamma, beta = self.gamma[:c], self.beta[:c]
        if not training:
            return tf.nn.batch_normalization(x, self.moving_mean[:c], self.moving_variance[:c], beta, gamma,
                                             BN_EPSILON)
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        if mask is None and replicas == 1:
            y, mean, var_unbiased = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=BN_EPSILON,
                                                                     is_training=True)
        else:
            if mask is None:
                s = tf.shape(x)
                count = tf.fill([c], tf.cast(s[0] * s[1] * s[2], x.dtype))
                xm = x
            else:
                m4 = mask[:, None, None, :]
                count = tf.reduce_sum(mask, 0) * tf.cast(tf.shape(x)[1] * tf.shape(x)[2], x.dtype)
                xm = x * m4
            # One pass (sum and sum of squares): two fewer full-size elementwise ops forward and backward than
            # centring first, and a single all-reduce; pre-BN activations are O(1), so float32 cancellation is small.
            total = tf.reduce_sum(xm, [0, 1, 2])
            sq = tf.reduce_sum(xm * x, [0, 1, 2])
            if replicas > 1:
                total, sq, count = ctx.all_reduce("sum", [total, sq, count])
            n = tf.maximum(count, 1.0)
            mean = total / n
            var = tf.maximum(sq / n - tf.square(mean), 0.0)
            var_unbiased = var * n / tf.maximum(count - 1.0, 1.0)
            y = tf.nn.batch_normalization(x, mean, var, beta, gamma, BN_EPSILON)
        if update is not None:
            pad = [[0, self.max_channels - c]]
            self.moving_mean.assign_add(tf.pad((mean - self.moving_mean[:c]) * update, pad))
            self.moving_variance.assign_add(tf.pad((var_unbiased - self.moving_variance[:c]) * update, pad))
        return y
