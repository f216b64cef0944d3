"""Train the slimmable supernet and record, per layer and width, how much loss that width costs.

    python -m tfwidth.train                      # offline demo: digits, mobilenet_v1_cifar at 16 px, a few epochs
    python -m tfwidth.train --space space.json --dataset npz:cifar10.npz --epochs 20 --batch-size 128 --out runs/a
    python -m tfwidth.train ... --out runs/a --resume   # after a kill: continue from the last finished epoch

RUN_DIR's contents and the exact resume: tfwidth/training.py (the training loop this CLI drives). After training,
the probe of the trained supernet (tfwidth/probe.py) goes into stats.json's probe view.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import tfwidth  # noqa: F401  (selects Keras 2 before TensorFlow loads; TensorFlow itself is imported lazily)
from device_profiler import console
from device_profiler.checks import count, number, output_dir
from tfwidth.arch import DEFAULT_PRESET
from tfwidth.errors import ArgumentParser, UsageError
from tfwidth.space import SearchSpace, add_space_options, preset, space_from_args
from tfwidth.training import TrainResult, make_strategy, train_supernet

DEMO = dict(preset=DEFAULT_PRESET, resolution=16, dataset="digits", epochs=6, batch_size=64,
            out="runs/train-demo")


def train(space: SearchSpace, data, out_dir, epochs: int, *, probe_configs: int = 0, probe_images: int = 512,
          seed: int = 0, strategy=None, verbose: int = 1, **kw) -> TrainResult:
    """tfwidth.training.train_supernet (the keyword arguments are its), then the probe: ``probe_configs`` random
    configurations of the trained supernet measured on ``probe_images`` fixed training images (tfwidth/probe.py; the
    held-out ones if ``data`` holds some out) into stats.json's probe view, which the solver prefers; a probe already
    there for this epoch count and these settings is kept. Returns the training's result with those statistics."""
    import tensorflow as tf
    from tfwidth import probe
    from tfwidth.stats import WidthStats
    from tfwidth.training import is_chief
    result = train_supernet(space, data, out_dir, epochs, seed=seed, strategy=strategy, verbose=verbose, **kw)
    strategy = strategy or tf.distribute.get_strategy()
    if probe_configs:
        # Every worker of a multi-worker strategy measures its share of the configurations (probe_run gathers
        # them); the chief writes stats.json. The run directory is shared, so every worker sees the same old probe.
        chief = is_chief(strategy)
        out, stats = Path(out_dir), result.stats
        old = WidthStats.load(out / "stats.json", space) if (out / "stats.json").exists() else None
        batches, source = probe.data_batches(data, probe_images)
        if old is not None and old.epochs == stats.epochs and probe.is_current(old, probe_configs, seed, batches):
            result.stats = old
        else:
            probe.probe_run(result.model, stats, batches, probe_configs, seed, source,
                            progress=verbose == 1 and chief, strategy=strategy)
            if chief:
                stats.save(out / "stats.json")
    return result


def aows_callback(space: SearchSpace, data, table, target_ms: float, total_steps: int, out_dir, *, every: int = 0,
                  probe_configs: int = 200, probe_images: int = 256, probe_holdout: bool = True, seed: int = 0):
    """The AOWS sampler for a supernet trained ``total_steps`` steps into ``out_dir``: widths drawn from the marginals
    of the solver's MRF for ``target_ms`` on the latency table ``table`` (tfwidth/aows.py), updated every ``every``
    steps (0: at each epoch start). ``probe_configs`` > 0: each update after the warm-up measures that many random
    configurations on ``probe_images`` images (the ones ``data`` holds out when it holds some and ``probe_holdout``,
    else its first training images, tfwidth/probe.py); 0: the statistics accumulated over training. Refuses a target
    below the table's fastest configuration. Pass it to ``train`` in ``extra_callbacks``."""
    from tfwidth import mrf, probe
    from tfwidth.aows import AOWSCallback
    lat = table.chain()
    fastest = mrf.min_total(lat)[1]
    if target_ms < fastest:
        raise UsageError(f"--target-ms {target_ms:g} is below the fastest predicted configuration "
                         f"({fastest:.4f} ms); raise it")
    probe_batches = None
    if probe_configs:
        probe_batches = (probe.data_batches(data, probe_images)[0] if probe_holdout
                         else probe.fixed_batches(data, probe_images))
    return AOWSCallback(space, lat, target_ms, total_steps, out_dir, every=every, probe_batches=probe_batches,
                        probe_configs=probe_configs or 1, seed=seed)


# ---- CLI ----------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m tfwidth.train", description=(
        "Train the slimmable supernet of the space's architecture (sandwich rule with in-place distillation) and "
        "measure, for each "
        "layer and width, the loss increase over the full network: RUN_DIR/stats.json, which the solver reads. "
        "With no arguments: a short offline demo (digits, mobilenet_v1_cifar at 16 px)."),
        epilog=("RUN_DIR gets space.json, stats.json (per layer and width: mean loss increase over the max network), "
                "log.jsonl, tb/ (TensorBoard), ckpt/ (tf.train.Checkpoint + checkpoint.json) and summary.json. "
                "After a kill, run the same command with --resume: training continues from the last finished "
                "epoch exactly as if uninterrupted."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_space_options(p, default=f"the {DEMO['preset']} preset at {DEMO['resolution']} px, for the demo")
    p.add_argument("--dataset", default=DEMO["dataset"], help="digits, npz:PATH, folder:PATH or tfds:NAME")
    p.add_argument("--epochs", type=count(1, 10**5), default=DEMO["epochs"], help="total epochs (also when resuming)")
    p.add_argument("--batch-size", type=count(1, 1 << 20), default=DEMO["batch_size"], help="global batch size")
    p.add_argument("--out", default=DEMO["out"], type=output_dir, help="run directory")
    p.add_argument("--lr", type=number(0, 100, lo_open=True), default=0.05, help="peak learning rate (SGD, Nesterov momentum)")
    p.add_argument("--warmup-epochs", type=number(0, 10**5), default=1.0, help="linear warm-up, then cosine decay to 0")
    p.add_argument("--weight-decay", type=number(0, 1), default=4e-5, help="L2 on conv and classifier kernels")
    p.add_argument("--label-smoothing", type=number(0, 1, hi_open=True), default=0.1, help="on the max network's true-label loss")
    p.add_argument("--sampling", choices=("one-layer", "all-layers"), default="all-layers",
                   help="all-layers: every layer random, one configuration per batch (the default: it trains the "
                        "mid-width networks the solver picks; one-layer leaves them weak after short runs); "
                        "one-layer: per example, one random layer gets a random width, the others stay at max "
                        "(its loss increase is that layer's alone)")
    p.add_argument("--random-configs", type=count(0, 1000), default=1, help="random configurations per step (sandwich)")
    p.add_argument("--seed", type=count(0), default=0, help="data order, augmentation and width draws")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last finished epoch")
    p.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default",
                   help="tf.distribute strategy; multiworker reads TF_CONFIG")
    p.add_argument("--mixed-precision", action="store_true", help="compute in 16 bits with float32 weights: "
                   "mixed_float16 with loss scaling where a GPU is visible, mixed_bfloat16 on CPUs (a resume must "
                   "use the same). For GPUs and CPUs with bfloat16 units: several times slower on a CPU that "
                   "emulates bfloat16 (docs/scale.md)")
    p.add_argument("--calib-batches", type=count(1, 10**6), default=10, help="BN recalibration batches for the final summary")
    p.add_argument("--train-limit", type=count(1), help="use only the first N training images")
    p.add_argument("--eval-limit", type=count(1), help="use only the first N evaluation images")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--probe-configs", type=count(0, 10**6), default=500, help="after training, measure this many random "
                   "configurations of the trained supernet on fixed images; the solver uses these measurements "
                   "(stats.json 'probe' view: far less noisy than the training-time statistics). 0: skip")
    p.add_argument("--probe-images", type=count(1), default=512, help="training images the probe measures each "
                   "configuration on (whole batches)")
    p.add_argument("--probe-holdout", action="store_true", help="keep the last --probe-images training images "
                   "out of training and probe on them: the costs then measure images the supernet never saw "
                   "(worth it when training images are plentiful; the live AOWS probe uses them too)")
    g = p.add_argument_group("AOWS: adaptive width sampling from the MRF marginals after a warm-up")
    g.add_argument("--aows", action="store_true", help="sample widths from the marginals of the solver's MRF for "
                   "--target-ms on --latency, at the paper's falling temperature (needs both)")
    g.add_argument("--latency", help="table.json from `python -m tfwidth.latency fit`")
    g.add_argument("--target-ms", type=number(0, 1e6, lo_open=True), help="the latency target training should focus on")
    g.add_argument("--aows-every", type=count(0), default=0, help="update the distributions every K steps "
                   "(0: at each epoch start)")
    g.add_argument("--aows-probe-configs", type=count(0, 10**6), default=200, help="live probe: each update after the "
                   "warm-up measures this many random configurations of the supernet as it is then "
                   "(tfwidth/probe.py) and takes the costs from them (~0.1 s each per 256 CIFAR images here); "
                   "0: the statistics accumulated over training instead, which drift as training goes (the paper's; "
                   "on the CIFAR benchmark AOWS then trailed OWS, see docs/benchmarks.md)")
    g.add_argument("--aows-probe-images", type=count(1), default=256, help="training images each live-probe "
                   "configuration is measured on")
    a = p.parse_args(argv)
    t0 = time.perf_counter()

    space = space_from_args(a, default=lambda: preset(DEMO["preset"], resolution=DEMO["resolution"]))
    if a.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {a.batch_size}")
    if a.probe_configs < 0 or a.probe_images < 1 or a.aows_probe_configs < 0 or a.aows_probe_images < 1:
        raise UsageError("--probe-configs and --aows-probe-configs must be >= 0, --probe-images and "
                         "--aows-probe-images >= 1")
    strategy = make_strategy(a.strategy)
    from tfwidth.training import mixed_policy
    precision = mixed_policy() if a.mixed_precision else None
    if a.batch_size < strategy.num_replicas_in_sync:
        raise UsageError(f"batch size {a.batch_size} is smaller than the {strategy.num_replicas_in_sync} devices of "
                         f"the strategy; use --batch-size >= {strategy.num_replicas_in_sync}")
    from tfwidth.data import load_data
    data = load_data(a.dataset, space, a.batch_size, seed=a.seed, train_limit=a.train_limit,
                     eval_limit=a.eval_limit, holdout=a.probe_images if a.probe_holdout else 0)
    print(space.describe().splitlines()[0])
    print(data.describe())
    callbacks = ()
    if not a.aows:
        if a.latency or a.target_ms is not None:
            raise UsageError("--latency and --target-ms only matter with --aows; add --aows or drop them")
    elif not a.latency or a.target_ms is None:
        raise UsageError("--aows needs --latency table.json and --target-ms T (the target to focus training on)")
    else:
        from tfwidth.latency import LatencyTable
        from tfwidth.training import is_chief
        # every worker samples alike (same statistics, same probe); the chief alone logs aows.jsonl
        callbacks = (aows_callback(space, data, LatencyTable.load(a.latency, space), a.target_ms,
                                   a.epochs * data.steps_per_epoch, a.out if is_chief(strategy) else None,
                                   every=a.aows_every,
                                   probe_configs=a.aows_probe_configs, probe_images=a.aows_probe_images,
                                   seed=a.seed),)
    res = train(space, data, a.out, a.epochs, lr=a.lr, warmup_epochs=a.warmup_epochs, weight_decay=a.weight_decay,
                label_smoothing=a.label_smoothing, sampling=a.sampling, random_configs=a.random_configs,
                seed=a.seed, strategy=strategy, resume=a.resume, calib_batches=a.calib_batches,
                verbose=0 if a.quiet else 1, args=vars(a), extra_callbacks=callbacks, precision=precision,
                probe_configs=a.probe_configs, probe_images=a.probe_images)
    from tfwidth.training import is_chief, worker_index
    if not is_chief(strategy):
        print(f"worker {worker_index(strategy)[0]}: training done; the chief wrote {a.out}")
        return 0
    top1 = res.summary["top1"]
    print(f"top-1 after BN recalibration ({a.calib_batches} batches): "
          + ", ".join(f"{k} {100 * v:.1f}%" for k, v in top1.items()))
    out = Path(a.out)
    print(console.wrote([out / n for n in ("stats.json", "log.jsonl", "summary.json", "ckpt", "tb")],
                        time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    from tfwidth.errors import run_cli
    sys.exit(run_cli(main))
