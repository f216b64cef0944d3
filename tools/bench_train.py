"""Per-step training time of the supernet vs. plain models at the same widths, interleaved in one run.

    .venv/bin/python tools/bench_train.py [--preset mobilenet_v1_cifar] [--batch 64] [--rounds 5] [--resolution R]
                                          [--pointwise auto|matmul|conv] [--mixed-precision]

Any preset (default mobilenet_v1_cifar, at its own resolution unless --resolution is given); everything below goes
through its architecture (the plain model its ``build``, the supernet its slimmable layers).
(a) one SGD step of the supernet at fixed widths (widths as a tensor: the sliced path) vs. a plain model at the
    same widths, at 1.0x and 1.5x of the preset. Two plain baselines: the deployable Keras model
    (the architecture's plain model, 1x1 Conv2D) and the supernet's own code traced with constant widths (static
    shapes, matmul pointwise): the latter isolates the cost of runtime widths.
(b) one full sandwich step (max + min + one random configuration, one optimizer step) vs. the sum of the three plain
    steps it contains. one-layer sampling: the random configuration runs at max width with per-example channel masks,
    so its plain counterpart is the max model. all-layers sampling (per batch, sliced): counterpart is the plain
    model at the mean random configuration (uniform 0.85x), approximate since the widths change every step.
    Also measured: all-layers with per-example masks (every layer masked), the alternative we did not pick.
--pointwise: how the supernet computes its pointwise convolutions (auto: matmul on a CPU, 1x1 conv where a GPU is
visible); --mixed-precision: every model in the policy of tfwidth's --mixed-precision (mixed_bfloat16 on a CPU,
mixed_float16 with loss scaling on a GPU). On a GPU, run it with each --pointwise to check that the default (conv)
is not the slower one (docs/scale.md, "Mixed precision and GPUs").
Bars: (a) <= 1.10x, (b) <= 1.15x. Times are medians over rounds; only same-run ratios mean anything here. The
spread of (a) is the range of its per-round ratios (each round times both steps back to back).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tfwidth  # noqa: F401,E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from tfwidth.arch import slim  # noqa: E402
from tfwidth.space import preset  # noqa: E402
from tfwidth.errors import run_cli  # noqa: E402
from tfwidth.supernet import Supernet  # noqa: E402
from tfwidth.training import loss_scaled, mixed_policy  # noqa: E402

PRECISION = None  # --mixed-precision: the policy every model here computes in


def plain_step(space, widths):
    with slim.precision_scope(PRECISION):
        model = space.architecture.build(space, widths)
    opt = loss_scaled(keras.optimizers.SGD(0.01, momentum=0.9), PRECISION)
    scaled = PRECISION == "mixed_float16"

    @tf.function(autograph=False)
    def step(x, y):
        with tf.GradientTape() as t:
            logits = tf.cast(model(x, training=True), tf.float32)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            scaled_loss = opt.get_scaled_loss(loss) if scaled else loss
        g = t.gradient(scaled_loss, model.trainable_variables)
        g = opt.get_unscaled_gradients(g) if scaled else g
        opt.apply_gradients(zip(g, model.trainable_variables))
        return loss
    return step


def supernet_fixed_step(net, opt, widths, static: bool):
    # (no loss scaling under mixed_float16: a timing, whose gradients need not be exact)
    w_const = tuple(int(v) for v in widths)

    @tf.function(autograph=False)
    def step(x, y, w):
        with tf.GradientTape() as t:
            # static: Python-int widths, shapes known at trace time like a plain model (one trace per config)
            logits = net.forward(x, w_const if static else w, True, bn_update=0.1)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        opt.apply_gradients(zip(t.gradient(loss, net.trainable_variables), net.trainable_variables))
        return loss
    return lambda x, y: step(x, y, tf.constant(w_const, tf.int32))


def sandwich(space, sampling, per_example_all=False, stats=True):
    net = Supernet(space, sampling=sampling, weight_decay=4e-5, label_smoothing=0.1, precision=PRECISION)
    if not stats:  # the same step without the width statistics (split means and the regression's X^T X)
        net._accumulate_stats = lambda idx, attribute, delta: None
    net.compile(optimizer=loss_scaled(keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True), PRECISION))
    net.optimizer.build(net.trainable_variables)
    if per_example_all:  # every layer random per example, through masks at max width
        def draw(seed, global_n, offset, n):
            L = space.num_layers
            idx = tf.transpose(tf.random.stateless_categorical(tf.math.log(net.sampling_probs), global_n, seed,
                                                               dtype=tf.int32))[offset:offset + n]
            return net._max_w, net._gather_widths(idx), idx, tf.ones([n, L], tf.bool)
        net.draw = draw
    fn = tf.function(net.train_step)
    return lambda x, y: fn((x, y))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="mobilenet_v1_cifar")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--resolution", type=int, default=None, help="default: the preset's")
    p.add_argument("--pointwise", choices=("auto", "matmul", "conv"), default="auto",
                   help="the supernet's pointwise form (auto: matmul on a CPU, 1x1 conv where a GPU is visible)")
    p.add_argument("--mixed-precision", action="store_true", help="every model in tfwidth's --mixed-precision "
                   "policy for this machine")
    a = p.parse_args(argv)
    global PRECISION
    PRECISION = mixed_policy() if a.mixed_precision else None
    slim.POINTWISE = a.pointwise
    space = preset(a.preset, resolution=a.resolution)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(a.batch, space.resolution, space.resolution, space.in_channels))
                    .astype(np.float32))
    y = tf.constant(rng.integers(0, space.classes, a.batch).astype(np.int32))

    w10, w15, wmin, w085 = space.uniform(1.0), space.max_widths, space.min_widths, space.uniform(0.85)
    net = Supernet(space, precision=PRECISION)
    opt = keras.optimizers.SGD(0.01, momentum=0.9)
    steps = {}
    for tag, w in (("1.0", w10), ("1.5", w15), ("min", wmin), ("0.85", w085)):
        steps[f"plain_keras_{tag}"] = plain_step(space, w)
        steps[f"plain_static_{tag}"] = supernet_fixed_step(net, opt, w, static=True)
    for tag, w in (("1.0", w10), ("1.5", w15)):
        steps[f"supernet_{tag}"] = supernet_fixed_step(net, opt, w, static=False)
    steps["sandwich_one_layer"] = sandwich(space, "one-layer")
    steps["sandwich_all_layers_batch"] = sandwich(space, "all-layers")
    steps["sandwich_all_layers_nostats"] = sandwich(space, "all-layers", stats=False)
    steps["sandwich_all_layers_example"] = sandwich(space, "one-layer", per_example_all=True)

    t0 = time.perf_counter()
    for name, f in steps.items():  # trace + warm up
        for _ in range(2):
            f(x, y)
    print(f"traced and warmed {len(steps)} step functions in {time.perf_counter() - t0:.0f} s; "
          f"batch {a.batch}, {space.name} at {space.resolution}px, {a.rounds} interleaved rounds; pointwise "
          f"{slim.pointwise_form()}, {PRECISION or 'float32'}, devices "
          f"{[d.name for d in tf.config.list_logical_devices()]}", flush=True)
    times = {k: [] for k in steps}
    for r in range(a.rounds):
        for name, f in steps.items():
            t = time.perf_counter()
            _sync(f(x, y))
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:<30} {1000 * v:8.1f} ms/step  {a.batch / v:7.1f} img/s")

    print("\n(a) supernet at fixed widths / plain at the same widths (bar <= 1.10)")
    for tag in ("1.0", "1.5"):
        print(f"  {tag}x: vs plain Keras (Conv2D 1x1) {med[f'supernet_{tag}'] / med[f'plain_keras_{tag}']:.3f} "
              f"{spread(times, f'supernet_{tag}', f'plain_keras_{tag}')}, "
              f"vs static-shape matmul {med[f'supernet_{tag}'] / med[f'plain_static_{tag}']:.3f} "
              f"{spread(times, f'supernet_{tag}', f'plain_static_{tag}')}")
    print("(b) sandwich step / sum of its plain steps (bar <= 1.15)")
    for base in ("keras", "static"):
        one = med[f"plain_{base}_1.5"] * 2 + med[f"plain_{base}_min"]
        allb = med[f"plain_{base}_1.5"] + med[f"plain_{base}_min"] + med[f"plain_{base}_0.85"]
        print(f"  vs plain {base:<6}: one-layer {med['sandwich_one_layer'] / one:.3f}  "
              f"all-layers (per batch) {med['sandwich_all_layers_batch'] / allb:.3f}  "
              f"all-layers (per example, masks) {med['sandwich_all_layers_example'] / one:.3f} of max+min+max")
    print(f"(c) all-layers sandwich with / without the width statistics (split means + the regression's normal "
          f"equations): {med['sandwich_all_layers_batch'] / med['sandwich_all_layers_nostats']:.3f}")
    return 0


def spread(times: dict, num: str, den: str) -> str:
    """'(per round a..b)': the range of the per-round ratios of two steps' times (lists of seconds, one per round)."""
    r = [n / d for n, d in zip(times[num], times[den])]
    return f"(per round {min(r):.3f}..{max(r):.3f})"


def _sync(out):
    # Pull one value to the host so the step has really finished before the clock stops.
    if isinstance(out, dict):
        out = out["loss"]
    return float(out)


if __name__ == "__main__":
    sys.exit(run_cli(main))
