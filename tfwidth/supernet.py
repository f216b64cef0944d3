"""The supernet: one set of max-width weights of the space's architecture, run at any per-layer widths without
retracing.

Every layer keeps its maximum-width weights and computes with the first c channels, where c is an int32 *tensor*:
one traced function serves every configuration (a Python-int width would retrace per configuration, ~5 s here).
The layers (tfwidth.arch.slim) and how they connect are the architecture's (``slim_layers``, ``slim_forward``);
this module is what every architecture shares: widths, BatchNorm statistics, sampling, training, export.

Two ways to vary widths, both inside one trace:
  * per batch (``widths``, shape [L]): kernels are sliced; the cost is that of the plain model at those widths;
  * per example (``ex_widths``, shape [N, L], each row <= ``widths``): computation runs at ``widths`` and every layer's
    output is multiplied by a channel mask; BatchNorm batch statistics are taken over the examples that use each
    channel, so a batch whose rows all equal w gives exactly the sliced result at w.

BatchNorm: moving statistics are updated only when asked (the max path during training, and `recalibrate_bn`),
since statistics shared across widths are wrong for sub-networks; evaluate any other configuration after
recalibration (`evaluate_widths` does that on a copy of the statistics and restores them afterwards).

Training (``train_step``, so model.fit, callbacks and tf.distribute work): sandwich rule, one optimizer step on the
summed gradients of the max configuration on the (smoothed) true labels, the min configuration and random
configuration(s) on the max network's detached soft predictions (in-place distillation, soft cross-entropy).
Random widths are drawn statelessly from (seed, optimizer step) and from ``sampling_probs`` ([L, Kmax], uniform by
default; AOWS sets it with ``set_sampling``). The width statistic is each example's loss on the true labels at the
random configuration minus the max network's, split evenly over the layers it is attributed to, accumulated in
variables (so checkpoints hold it) and rolled per epoch by ``end_stats_epoch``; ``width_stats()`` -> WidthStats.
The training loop and checkpointing live in tfwidth/training.py, the CLI in tfwidth/train.py.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

import tfwidth  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from tfwidth.arch.slim import BN_MOMENTUM, SlimBatchNorm, SlimLayer, corner, precision_scope
from tfwidth.errors import UsageError
from tfwidth.space import SearchSpace
from tfwidth.stats import WidthStats


def _relu6(x):
    return tf.nn.relu6(x)


# ---- the model ----------------------------------------------------------------------------------------------------
class Supernet(keras.Model):
    """The slimmable network of a SearchSpace's architecture. ``model(x)`` runs at ``active_widths`` (set_widths,
    default max); ``forward(x, widths, ...)`` at explicit widths. Layer names match the architecture's plain model
    (``space.architecture.build``)."""

    def __init__(self, space: SearchSpace, *, weight_decay: float = 0.0, label_smoothing: float = 0.0,
                 sampling: str = "one-layer", random_configs: int = 1, seed: int = 0, name: str = "supernet",
                 precision: str | None = None):
        """``precision``: None (float32) or a mixed-precision policy of tfwidth.arch.slim.MIXED_POLICIES for the
        layers (float32 weights, logits and statistics either way); under mixed_float16 compile with a tf_keras
        LossScaleOptimizer, which train_step then uses to scale the losses."""
        super().__init__(name=name)
        self.precision = precision or "float32"
        if sampling not in ("one-layer", "all-layers"):
            raise UsageError(f"unknown sampling {sampling!r}; use one-layer or all-layers")
        self.space = space
        self.weight_decay, self.label_smoothing = float(weight_decay), float(label_smoothing)
        self.sampling, self.random_configs, self.seed = sampling, int(random_configs), int(seed)
        L = space.num_layers
        self.kmax = max(space.num_choices)
        # Initial weights are a function of the seed (one initializer seed per layer), so runs are reproducible.
        init = iter(range(self.seed * 1000 + 1, self.seed * 1000 + 1000))
        # The architecture's layers become attributes under its names: checkpoints key variables by these paths.
        with precision_scope(precision):
            for attr, layers in space.architecture.slim_layers(space, init).items():
                setattr(self, attr, layers)
            for layer in self.slim_layers():
                layer.build(None)

        # Choice tables, padded to Kmax by repeating the last (max) choice so gathers never go out of range.
        table = np.array([list(c) + [c[-1]] * (self.kmax - len(c)) for c in space.choices], np.int32)
        self._choice_table = tf.constant(table)
        self._max_idx = tf.constant([k - 1 for k in space.num_choices], tf.int32)
        self._max_w = tf.constant(space.max_widths, tf.int32)
        self._min_w = tf.constant(space.min_widths, tf.int32)
        # Bookkeeping variables are written with values every replica computes alike (or already summed over the
        # replicas): under a tf.distribute strategy the first replica's write is kept.
        first_replica = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.active_widths = self.add_weight("active_widths", (L,), tf.int32, trainable=False,
                                             aggregation=first_replica,
                                             initializer=keras.initializers.Constant(space.max_widths))
        # AOWS (tfwidth/aows.py) sets these per epoch or every K steps via set_sampling(); uniform by default.
        self.sampling_probs = self.add_weight("sampling_probs", (L, self.kmax), tf.float32, trainable=False,
                                              aggregation=first_replica,
                                              initializer=keras.initializers.Constant(self.uniform_probs()))
        # Width statistics live in variables so they are in every checkpoint: cur_* accumulate per step (summed over
        # replicas), and at each epoch end roll into the running totals and the last-epoch window.
        shape = (L, self.kmax)
        for n in ("cur_sum", "cur_count", "sum", "count", "window_sum", "window_count"):
            setattr(self, f"stats_{n}", self.add_weight(f"stats_{n}", shape, tf.float64, trainable=False,
                                                        initializer="zeros", aggregation=first_replica))
        D = L * self.kmax  # the regression's normal equations (tfwidth/stats.py), same three views
        for n in ("cur", "", "window_"):
            setattr(self, f"stats_{n}xtx", self.add_weight(f"stats_{n}xtx", (D, D), tf.float64, trainable=False,
                                                           initializer="zeros", aggregation=first_replica))
            setattr(self, f"stats_{n}xty", self.add_weight(f"stats_{n}xty", (D,), tf.float64, trainable=False,
                                                           initializer="zeros", aggregation=first_replica))
        self.stats_epochs = self.add_weight("stats_epochs", (), tf.int64, trainable=False, initializer="zeros",
                                            aggregation=first_replica)
        self.train_trace_count = 0
        # train_step and test_step return metric results, already taken over every replica: Keras must keep them as
        # they are. Its default under a multi-worker strategy sums the step's outputs over the workers, which gave
        # two workers twice the validation loss and top-1 of one.
        self.distribute_reduction_method = "first"
        self._metric_objs = {n: keras.metrics.Mean(n) for n in ("loss", "max_loss", "min_loss", "rand_loss")}
        self._metric_objs["max_top1"] = keras.metrics.SparseCategoricalAccuracy("max_top1")
        self._predict_fn = None
        self._calib_fn = None

    # ---- widths -------------------------------------------------------------------------------------------------
    def uniform_probs(self) -> np.ndarray:
        p = np.zeros((self.space.num_layers, self.kmax), np.float32)
        for l, k in enumerate(self.space.num_choices):
            p[l, :k] = 1.0 / k
        return p

    def set_widths(self, widths: Sequence[int]) -> None:
        """Make ``widths`` (checked against the space) the configuration ``call`` runs: how a Keras caller
        evaluates one sub-network with model(x) or model.evaluate."""
        self.active_widths.assign(np.asarray(self.space.validate(widths), np.int32))

    def set_sampling(self, probs) -> None:
        """Per layer, the distribution over its width choices that random configurations are drawn from ([L, Kmax],
        rows sum to 1, zero beyond a layer's choice count). Call from a callback; it takes effect at the next step
        without retracing."""
        p = np.asarray(probs, np.float64)
        if p.shape != (self.space.num_layers, self.kmax):
            raise UsageError(f"sampling probabilities have shape {p.shape}, expected {(self.space.num_layers, self.kmax)}")
        for l, k in enumerate(self.space.num_choices):
            if (p[l] < 0).any() or not np.isfinite(p[l]).all() or p[l, k:].any() or abs(p[l].sum() - 1) > 1e-4:
                raise UsageError(f"sampling probabilities of {self.space.layer_names[l]} must be finite, >= 0, sum "
                                 f"to 1 and be zero beyond its {k} choices")
        self.sampling_probs.assign((p / p.sum(1, keepdims=True)).astype(np.float32))

    # ---- forward ------------------------------------------------------------------------------------------------
    def forward(self, x, widths, training=False, ex_widths=None, bn_update=None):
        """Logits at per-layer ``widths`` ([L] int32); per-example ``ex_widths`` ([N, L], <= widths) masks channels.

        ``widths`` as a tuple of Python ints gives static shapes but retraces per configuration (benchmarks only)."""
        if not (isinstance(widths, (tuple, list)) and all(isinstance(w, int) for w in widths)):
            widths = tf.convert_to_tensor(widths, tf.int32)
        L = self.space.num_layers
        if ex_widths is None:
            masks = [None] * L
        else:
            masks = [tf.sequence_mask(ex_widths[:, l], widths[l], dtype=x.dtype) for l in range(L)]

        def post(h, bn, l, relu=True):
            h = bn(h, widths[l], training, masks[l], bn_update)
            h = _relu6(h) if relu else h
            return h if masks[l] is None else h * masks[l][:, None, None, :]

        # float32 logits under any precision: losses, soft targets and statistics are computed in float32
        return tf.cast(self.space.architecture.slim_forward(self.space, self, x, widths, post), tf.float32)

    def call(self, inputs, training=False):
        # Batch statistics in training mode, but moving statistics move only in train_step / recalibrate_bn.
        return self.forward(inputs, self.active_widths, training=bool(training))

    def slim_layers(self) -> list:
        """The architecture's layers, in the order Keras tracks them."""
        return [layer for layer in self.layers if isinstance(layer, SlimLayer)]

    def bn_layers(self):
        return [layer for layer in self.slim_layers() if isinstance(layer, SlimBatchNorm)]

    def regularization(self):
        if not self.weight_decay:
            return tf.constant(0.0)
        kernels = [layer.kernel for layer in self.slim_layers() if layer.decayed]
        return self.weight_decay * tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels])

    # ---- sampling -----------------------------------------------------------------------------------------------
    def _gather_widths(self, idx):
        """Choice indices [..., L] -> channel counts."""
        flat = tf.reshape(self._choice_table, [-1])
        return tf.gather(flat, tf.range(self.space.num_layers) * self.kmax + idx)

    def draw(self, seed, global_n, offset, n):
        """Random configuration(s) for this step: (slice widths [L], per-example widths [n, L] or None,
        choice indices [n, L], attribution mask [n, L]). Draws are stateless in ``seed`` and made for the global
        batch, then this replica's rows are taken, so N devices draw what one device draws."""
        L = self.space.num_layers
        logits = tf.math.log(self.sampling_probs)  # zero-probability choices -> -inf, never drawn
        if self.sampling == "one-layer":
            choice = tf.transpose(tf.random.stateless_categorical(logits, global_n, seed, dtype=tf.int32))
            layer = tf.random.stateless_uniform([global_n], tf.random.experimental.stateless_fold_in(seed, 1),
                                                minval=0, maxval=L, dtype=tf.int32)
            which = tf.one_hot(layer, L, on_value=True, off_value=False)
            idx = tf.where(which, choice, self._max_idx[None, :])[offset:offset + n]
            return self._max_w, self._gather_widths(idx), idx, which[offset:offset + n]
        # all-layers: one configuration per batch, sliced (see tools/bench_train.py for why not per example)
        idx = tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int32)[:, 0]
        widths = self._gather_widths(idx)
        return widths, None, tf.tile(idx[None], [n, 1]), tf.ones([n, L], tf.bool)

    def _accumulate_stats(self, idx, attribute, delta):
        L, K = self.space.num_layers, self.kmax
        flat = tf.reshape(tf.range(L)[None, :] * K + idx, [-1])
        a = tf.cast(attribute, tf.float64)
        # Split each example's increase evenly over its attributed layers, as WidthStats.update does, so the sum of
        # per-layer costs over a configuration estimates its loss increase under either sampling.
        share = tf.cast(delta, tf.float64) / tf.maximum(tf.reduce_sum(a, 1), 1.0)
        w = tf.reshape(a, [-1])
        d = tf.reshape(share[:, None] * a, [-1])
        s = tf.math.unsorted_segment_sum(d, flat, L * K)
        c = tf.math.unsorted_segment_sum(w, flat, L * K)
        # the whole configuration of every example, whatever it is attributed to
        X = tf.reduce_sum(tf.one_hot(tf.range(L)[None, :] * K + idx, L * K, dtype=tf.float64), axis=1)
        xtx = tf.matmul(X, X, transpose_a=True)
        xty = tf.linalg.matvec(X, tf.cast(delta, tf.float64), transpose_a=True)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            s, c, xtx, xty = ctx.all_reduce("sum", [s, c, xtx, xty])
        self.stats_cur_sum.assign_add(tf.reshape(s, [L, K]))
        self.stats_cur_count.assign_add(tf.reshape(c, [L, K]))
        self.stats_curxtx.assign_add(xtx)
        self.stats_curxty.assign_add(xty)

    # ---- training -----------------------------------------------------------------------------------------------
    @property
    def metrics(self):
        return list(self._metric_objs.values())

    def train_step(self, data):
        x, y = data[0], tf.cast(data[1], tf.int32)
        self.train_trace_count += 1
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync
        rid = tf.cast(ctx.replica_id_in_sync_group, tf.int32) if replicas > 1 else 0
        n = tf.shape(x)[0]
        global_n = n * replicas
        gn = tf.cast(global_n, tf.float32)
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])
        tv = self.trainable_variables
        classes = self.space.classes
        scaled = isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer)

        def gradients(tape, loss):  # float16: the loss scaled up inside the tape, the gradients scaled back
            if not scaled:
                return tape.gradient(loss, tv)
            return self.optimizer.get_unscaled_gradients(tape.gradient(loss, tv))

        def scale(loss):
            return self.optimizer.get_scaled_loss(loss) if scaled else loss

        def mean(v):  # per-example -> this replica's share of the global mean (gradients are summed over replicas)
            return tf.reduce_sum(v) / gn

        with tf.GradientTape() as tape:
            logits_max = self.forward(x, self._max_w, True, bn_update=1.0 - BN_MOMENTUM)
            target = tf.one_hot(y, classes)
            if self.label_smoothing:
                target = target * (1 - self.label_smoothing) + self.label_smoothing / classes
            ce_max = tf.nn.softmax_cross_entropy_with_logits(target, logits_max)
            loss_max = mean(ce_max) + self.regularization() / replicas
            loss_max = scale(loss_max)
        grads = gradients(tape, loss_max)
        soft = tf.stop_gradient(tf.nn.softmax(logits_max))
        true_max = tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits_max)

        def sub(widths, ex_widths=None):
            with tf.GradientTape() as t:
                logits = self.forward(x, widths, True, ex_widths=ex_widths)
                per_ex = tf.nn.softmax_cross_entropy_with_logits(soft, logits)  # in-place distillation
                loss = scale(mean(per_ex))
            g = gradients(t, loss)
            return logits, per_ex, [a + b for a, b in zip(grads, g)]

        _, min_per_ex, grads = sub(self._min_w)
        rand_total = tf.zeros_like(min_per_ex)
        for r in range(self.random_configs):
            widths, ex_widths, idx, attribute = self.draw(tf.random.experimental.stateless_fold_in(seed, 100 + r),
                                                          global_n, rid * n, n)
            logits_r, per_ex, grads = sub(widths, ex_widths)
            rand_total += per_ex
            # The statistic: loss increase on the true labels over the max network, per example.
            self._accumulate_stats(idx, attribute, tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits_r) - true_max)
        self.optimizer.apply_gradients(zip(grads, tv))

        m = self._metric_objs
        m["max_loss"].update_state(ce_max)
        m["min_loss"].update_state(min_per_ex)
        m["rand_loss"].update_state(rand_total / max(self.random_configs, 1))
        m["loss"].update_state(ce_max + min_per_ex + rand_total)
        m["max_top1"].update_state(y, logits_max)
        return {k: v.result() for k, v in m.items()}

    def test_step(self, data):
        x, y = data[0], tf.cast(data[1], tf.int32)
        logits = self.forward(x, self._max_w, False)
        self._metric_objs["max_loss"].update_state(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        self._metric_objs["max_top1"].update_state(y, logits)
        return {k: self._metric_objs[k].result() for k in ("max_loss", "max_top1")}

    # ---- statistics ---------------------------------------------------------------------------------------------
    def end_stats_epoch(self) -> None:
        """Roll the epoch's accumulators into the running totals and the window (cross-replica context)."""
        cur_s, cur_c = self.stats_cur_sum.read_value(), self.stats_cur_count.read_value()
        self.stats_sum.assign_add(cur_s)
        self.stats_count.assign_add(cur_c)
        self.stats_window_sum.assign(cur_s)
        self.stats_window_count.assign(cur_c)
        self.stats_cur_sum.assign(tf.zeros_like(cur_s))
        self.stats_cur_count.assign(tf.zeros_like(cur_c))
        for part in ("xtx", "xty"):
            cur = getattr(self, f"stats_cur{part}").read_value()
            getattr(self, f"stats_{part}").assign_add(cur)
            getattr(self, f"stats_window_{part}").assign(cur)
            getattr(self, f"stats_cur{part}").assign(tf.zeros_like(cur))
        self.stats_epochs.assign_add(1)

    def width_stats(self) -> WidthStats:
        """The width statistics accumulated in the model's variables (running, last-epoch window and current
        epoch, split means and normal equations), as a WidthStats the solver and AOWS read."""
        st = WidthStats(self.space)
        st.sum, st.count = self.stats_sum.numpy(), np.rint(self.stats_count.numpy()).astype(np.int64)
        st.window_sum = self.stats_window_sum.numpy()
        st.window_count = np.rint(self.stats_window_count.numpy()).astype(np.int64)
        st.cur_sum = self.stats_cur_sum.numpy()
        st.cur_count = np.rint(self.stats_cur_count.numpy()).astype(np.int64)
        st.epochs = int(self.stats_epochs.numpy())
        st.running_xtx, st.running_xty = self.stats_xtx.numpy(), self.stats_xty.numpy()
        st.window_xtx, st.window_xty = self.stats_window_xtx.numpy(), self.stats_window_xty.numpy()
        st.current_xtx, st.current_xty = self.stats_curxtx.numpy(), self.stats_curxty.numpy()
        return st

    # ---- evaluation ---------------------------------------------------------------------------------------------
    def predict_widths(self, x, widths):
        """Inference-mode logits at ``widths`` (one trace for all widths)."""
        if self._predict_fn is None:
            self._predict_fn = tf.function(lambda x, w: self.forward(x, w, training=False))
        return self._predict_fn(tf.convert_to_tensor(x, tf.float32),
                                tf.constant(self.space.validate(widths), tf.int32))

    def bn_state(self) -> list:
        """Every BatchNorm's (moving mean, moving variance), to restore with ``set_bn_state`` after evaluating a
        recalibrated configuration."""
        return [(b.moving_mean.numpy(), b.moving_variance.numpy()) for b in self.bn_layers()]

    def set_bn_state(self, state) -> None:
        for b, (m, v) in zip(self.bn_layers(), state):
            b.moving_mean.assign(m)
            b.moving_variance.assign(v)

    def recalibrate_bn(self, widths: Sequence[int], data, batches: int = 20) -> int:
        """Reset the moving statistics of the channels used at ``widths`` and re-estimate them as the exact average
        of ``batches`` training batches' statistics (as universally slimmable networks do). Returns batches used."""
        w = tf.constant(self.space.validate(widths), tf.int32)
        if self._calib_fn is None:
            self._calib_fn = tf.function(lambda x, w, f: self.forward(x, w, training=True, bn_update=f))
        for b in self.bn_layers():
            b.moving_mean.assign(tf.zeros_like(b.moving_mean))
            b.moving_variance.assign(tf.ones_like(b.moving_variance))
        k = 0
        for batch in data.calibration(batches):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            self._calib_fn(tf.convert_to_tensor(x, tf.float32), w, tf.constant(1.0 / (k + 1), tf.float32))
            k += 1
        return k

    def evaluate_widths(self, widths: Sequence[int], data, calib_batches: int = 20) -> float:
        """Top-1 on ``data.eval`` at ``widths`` after BN recalibration; the model's moving statistics are restored
        afterwards. calib_batches=0 evaluates with the current statistics."""
        saved = self.bn_state()
        try:
            if calib_batches:
                self.recalibrate_bn(widths, data, calib_batches)
            correct = total = 0
            for x, y in data.eval:
                pred = tf.argmax(self.predict_widths(x, widths), -1, output_type=tf.int32)
                correct += int(tf.reduce_sum(tf.cast(pred == tf.cast(y, tf.int32), tf.int32)))
                total += int(tf.shape(y)[0])
        finally:
            self.set_bn_state(saved)
        return correct / max(total, 1)

    # ---- export -------------------------------------------------------------------------------------------------
    def to_plain(self, widths: Sequence[int], weight_decay: float = 0.0) -> keras.Model:
        """The architecture's plain tf_keras model at ``widths`` (same layer names) with the sliced weights and the
        BN statistics currently held here: each plain layer takes the ``corner`` of its namesake's weights."""
        w = self.space.validate(widths)
        plain = self.space.architecture.build(self.space, w, weight_decay=weight_decay)
        mine = {layer.name: layer for layer in self.slim_layers()}
        theirs = {layer.name for layer in plain.layers if layer.weights}
        if theirs != set(mine):
            raise ValueError(f"the plain model's weighted layers {sorted(theirs ^ set(mine))} have no namesake on "
                             f"both sides: the architecture's build and slim_layers disagree")
        for name, layer in mine.items():
            target = plain.get_layer(name)
            target.set_weights([corner(v.numpy(), t.shape) for v, t in zip(layer.weights, target.weights)])
        return plain
