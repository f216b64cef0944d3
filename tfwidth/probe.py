"""Probe the trained supernet: the loss increase of random configurations on fixed images -> the solver's unaries.

The statistics gathered during training (tfwidth/stats.py) are each step's loss increase at a width drawn for that
step, so they mix the configuration with weights that are still changing. After training the weights are fixed:
every configuration here is measured on the *same* images, minus the max network's loss on them, so two
configurations differ only by their widths. The additive model is fitted to these measurements by the same
regression (WidthStats "probe" view), and ``costs(view="auto")`` prefers it.

BatchNorm runs in training mode (the batch's own statistics), as in the training statistic: no recalibration per
configuration, which would cost ~20 forward batches each. Configurations are drawn uniformly per layer (every width
of every layer gets ~N/K samples whatever the training's sampling was, AOWS included), seeded, so a probe is
reproducible.

    python -m tfwidth.probe --run RUN_DIR --dataset digits [--configs 500 --images 512]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from device_profiler import console
from device_profiler.checks import count
from tfwidth.errors import ArgumentParser, UsageError
from tfwidth.space import SearchSpace  # noqa: F401  (annotations)

CONFIGS = 500
IMAGES = 512


def draw_configs(space: SearchSpace, n: int, seed: int) -> np.ndarray:
    """[n, L] choice indices, uniform per layer, from ``seed`` alone."""
    rng = np.random.default_rng([int(seed), 0x9E0BE])
    return np.stack([rng.integers(0, k, size=n) for k in space.num_choices], axis=1)


def measure(model, batches, choices, progress: bool = False) -> tuple[np.ndarray, float]:
    """Mean true-label cross-entropy of each configuration over ``batches`` [(x, y)], minus the max network's on the
    same batches: (delta [N], max loss). One traced function serves every configuration (widths are a tensor)."""
    import tensorflow as tf
    space = model.space
    batches = [(tf.convert_to_tensor(x, tf.float32), tf.convert_to_tensor(y, tf.int32)) for x, y in batches]
    if not batches:
        raise UsageError("the probe got no images; use --images >= the batch size")

    @tf.function
    def loss(w):
        tot = tf.constant(0.0, tf.float64)
        for x, y in batches:
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(y, model.forward(x, w, training=True))
            tot += tf.cast(tf.reduce_sum(ce), tf.float64)
        return tot

    n = sum(int(y.shape[0]) for _, y in batches)
    base = float(loss(tf.constant(space.max_widths, tf.int32))) / n
    out = np.empty(len(choices))
    for i, c in enumerate(console.progress(choices, "probe configurations", unit="cfg", enabled=progress)):
        out[i] = float(loss(tf.constant(space.to_widths(tuple(int(v) for v in c)), tf.int32))) / n - base
    return out, base


def fixed_batches(data, images: int) -> list:
    """The first ``images`` training images (whole batches only: BatchNorm uses batch statistics), without
    augmentation, in the data's epoch-0 order."""
    out, got = [], 0
    for x, y in data.train_epoch(0, augment=False):
        if got >= images:
            break
        out.append((x.numpy(), y.numpy()))
        got += len(out[-1][1])
    return out


def data_batches(data, images: int) -> tuple[list, str]:
    """The probe's images and their description: the images ``data`` holds out of training when it holds some out
    (at most ``images`` of them, whole batches, at least one), else the first ``images`` training images."""
    if getattr(data, "holdout", 0):
        held = data.holdout_batches()
        return held[:max(1, -(-int(images) // data.batch_size))], f"{data.name}, held out of training"
    return fixed_batches(data, images), f"{data.name} train, no augmentation"


def probe_run(model, stats, batches, configs: int, seed: int, source: str, progress: bool = False,
              strategy=None) -> None:
    """Measure ``configs`` random configurations on ``batches`` and store them as ``stats``'s probe view. Under a
    multi-worker ``strategy`` (every worker calls this) each worker measures every n-th configuration and the
    measurements are gathered, so every worker ends with the whole probe."""
    if configs < 1:
        raise UsageError(f"--configs must be >= 1, got {configs}")
    t0 = time.time()
    choices = draw_configs(model.space, configs, seed)
    if strategy is None:
        delta, base = measure(model, batches, choices, progress)
    else:
        from tfwidth.training import sum_over_workers, worker_index
        k, n = worker_index(strategy)
        mine = np.arange(k, configs, n)
        part, base = measure(model, batches, choices[mine], progress)
        delta = np.zeros(configs)
        delta[mine] = part
        delta = sum_over_workers(strategy, delta)  # each configuration measured by one worker, zeros elsewhere
    stats.set_probe(choices, delta, {
        "configs": int(configs), "images": int(sum(len(y) for _, y in batches)), "source": source,
        "seed": int(seed), "epochs": int(stats.epochs), "max_loss": base, "seconds": round(time.time() - t0, 1)})


def is_current(stats, configs: int, seed: int, batches) -> bool:
    """These statistics hold a probe of the supernet at their own epoch count, with these settings and images."""
    i = stats.probe_info or {}
    return stats.has_probe() and stats.probe_choices is not None and i.get("epochs") == stats.epochs \
        and i.get("configs") == configs \
        and i.get("seed") == seed and i.get("images") == sum(len(y) for _, y in batches)


def probe_supernet(run_dir, dataset: str, *, configs: int = CONFIGS, images: int = IMAGES, batch_size: int = 128,
                   train_limit: int | None = None, seed: int = 0, holdout: int | None = None,
                   progress: bool = True):
    """The probe stage: measure ``configs`` random configurations of the supernet trained in ``run_dir`` on
    ``images`` images of ``dataset`` (its spec, tfwidth.data) in batches of ``batch_size`` (probe_run), and store
    them as RUN_DIR/stats.json's probe view. ``holdout`` and ``train_limit`` (None: what the run's checkpoint
    records) say which images the run held out of training: the probe measures those when there are some. Returns
    the statistics (WidthStats, saved); their ``probe_info`` says what was measured."""
    if configs < 1 or images < 1:
        raise UsageError("--configs and --images must be >= 1")
    run = Path(run_dir)
    if not (run / "stats.json").exists():
        raise UsageError(f"{run / 'stats.json'} does not exist; train first: python -m tfwidth.train --out {run}")
    from tfwidth.data import load_data
    from tfwidth.training import load_supernet
    from tfwidth.stats import WidthStats
    stats = WidthStats.load(run / "stats.json")
    space = stats.space
    model = load_supernet(run, space)
    from tfwidth.training import read_sidecar
    side = read_sidecar(run) or {}
    if holdout is None:
        holdout = int(side.get("holdout", 0))
    if train_limit is None:  # the held-out images are the last ones of the run's training subset
        train_limit = (side.get("args") or {}).get("train_limit")
    if holdout < 0:
        raise UsageError(f"--holdout must be >= 0, got {holdout}")
    data = load_data(dataset, space, batch_size, seed=seed, train_limit=train_limit, holdout=holdout)
    batches, source = data_batches(data, images)
    probe_run(model, stats, batches, configs, seed, source, progress=progress)
    stats.save(run / "stats.json")
    return stats


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m tfwidth.probe", description=(
        "Measure the loss increase of random width configurations of a trained supernet on fixed training images "
        "and store it in RUN_DIR/stats.json as the 'probe' view, which the solver then uses (tfwidth.train does this "
        "at the end of training; this command probes a run trained without it, or again with other settings)."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", required=True, help="run directory of `python -m tfwidth.train`")
    p.add_argument("--dataset", required=True, help="the dataset the run was trained on (digits, npz:PATH, ...)")
    p.add_argument("--configs", type=count(1, 10**6), default=CONFIGS, help="random configurations to measure")
    p.add_argument("--images", type=count(1), default=IMAGES, help="training images (whole batches) each is measured on")
    p.add_argument("--batch-size", type=count(1, 1 << 20), default=128, help="batch size (BatchNorm uses batch statistics)")
    p.add_argument("--train-limit", type=count(1), help="as the run was trained with (default: what its checkpoint "
                   "records)")
    p.add_argument("--seed", type=count(0), default=0, help="configuration draws and image order")
    p.add_argument("--holdout", type=count(0), help="measure on the last N training images, which the run held out "
                   "(tfwidth.train --probe-holdout); default: what the run's checkpoint records")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    run = Path(a.run)
    i = probe_supernet(run, a.dataset, configs=a.configs, images=a.images, batch_size=a.batch_size,
                       train_limit=a.train_limit, seed=a.seed, holdout=a.holdout, progress=not a.quiet).probe_info
    print(f"probed {i['configs']} configurations on {i['images']} images in {i['seconds']} s; "
          f"wrote the probe view into {run / 'stats.json'}")
    return 0


if __name__ == "__main__":
    from tfwidth.errors import run_cli
    sys.exit(run_cli(main))
