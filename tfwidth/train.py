"""Train the slimmable supernet and record, per layer and width, how much loss that width costs.

    python -m tfwidth.train                      # offline demo: digits, mobilenet_v1_cifar at 16 px, a few epochs
    python -m tfwidth.train --space space.json --dataset npz:cifar10.npz --epochs 20 --batch-size 128 --out runs/a
    python -m tfwidth.train ... --out runs/a --resume   # after a kill: continue from the last finished epoch

RUN_DIR receives space.json, stats.json (every epoch), log.jsonl (one JSON line per epoch), tb/ (TensorBoard),
ckpt/ (tf.train.Checkpoint of model, optimizer, statistics and sampler, plus checkpoint.json naming the space,
dataset and epoch) and summary.json (top-1 of the max, min and uniform-1.0 configurations after BN recalibration).

Resume is exact at epoch boundaries: the data order is a function of (seed, epoch), the random widths of
(seed, step), the learning rate of the step, and everything else is in the checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

import tfwidth  # noqa: F401  (selects Keras 2 before TensorFlow loads; TensorFlow itself is imported lazily)
from tfwidth.artifacts import atomic_write_bytes, check_space, read_json, write_json
from device_profiler.checks import count, number, output_dir
from tfwidth.errors import ArgumentParser, UsageError
from tfwidth.space import SearchSpace, preset

SIDECAR = "checkpoint.json"
DEMO = dict(preset="mobilenet_v1_cifar", resolution=16, dataset="digits", epochs=6, batch_size=64,
            out="runs/train-demo")


@dataclasses.dataclass
class TrainResult:
    model: object  # tfwidth.supernet.Supernet
    stats: object  # tfwidth.stats.WidthStats
    summary: dict
    epochs_done: int


def _keras():
    import tf_keras as keras
    return keras


def reproducible_graphs() -> None:
    """Make a training step give the same bits in every process: turn off Grappler's arithmetic optimizer.

    Measured here (CIFAR preset, one sandwich step, 4 processes): with it on, the classifier's kernel and bias
    gradients differed by ~4e-9 from one process to the next even on one thread with op determinism enabled (every
    other weight equal; its rewriting of the sum of the three configurations' gradients is the likely varying order),
    and training amplifies that into different supernets; with it off, every process gave the same weights. The price
    is within the timing noise here (tools/bench_determinism.py; docs/benchmarks.md, "Kill soak"). A resumed or
    re-run training can then reproduce an uninterrupted one exactly (tools/bench_soak.py --kill)."""
    import tensorflow as tf
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})


def cosine_warmup(base_lr: float, warmup_steps: int, total_steps: int):
    """Linear warm-up to base_lr, then cosine to 0; a function of the optimizer step, so resume continues it."""
    import tensorflow as tf
    keras = _keras()

    class CosineWarmup(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            w = float(max(warmup_steps, 0))
            warm = base_lr * (step + 1.0) / max(w, 1.0)
            progress = tf.clip_by_value((step - w) / max(total_steps - w, 1.0), 0.0, 1.0)
            cos = 0.5 * base_lr * (1.0 + tf.cos(math.pi * progress))
            return tf.where(step < w, warm, cos)

        def get_config(self):
            return {"base_lr": base_lr, "warmup_steps": warmup_steps, "total_steps": total_steps}

    return CosineWarmup()


def make_strategy(name: str):
    import tensorflow as tf
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UsageError("--strategy multiworker needs the TF_CONFIG environment variable describing the "
                             "cluster (see tf.distribute.MultiWorkerMirroredStrategy); set it on every worker")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UsageError(f"unknown strategy {name!r}; use default, mirrored or multiworker")


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


def read_sidecar(out_dir) -> dict | None:
    p = Path(out_dir) / "ckpt" / SIDECAR
    return read_json(p, "checkpoint record") if p.exists() else None


def _class_count(data) -> int:
    c = data.classes
    return int(c) if isinstance(c, (int, np.integer)) else len(c)


def check_run(space: SearchSpace, data, out_dir, resume: bool, replicas: int) -> dict | None:
    """Every refusal happens here, before anything in out_dir is written."""
    bs = getattr(data, "batch_size", None)
    if bs is not None:
        if bs < replicas:
            raise UsageError(f"batch size {bs} is smaller than the {replicas} devices of the strategy; use "
                             f"--batch-size >= {replicas}")
        if bs % replicas:
            raise UsageError(f"batch size {bs} does not split evenly over {replicas} devices; use a multiple of "
                             f"{replicas}")
    if _class_count(data) != space.classes:
        raise UsageError(f"dataset {data.name} has {_class_count(data)} classes but the space has {space.classes}; "
                         f"make a space with --classes {_class_count(data)}")
    side = read_sidecar(out_dir)
    if side is None:
        if resume:
            raise UsageError(f"--resume: {out_dir} has no checkpoint ({Path(out_dir) / 'ckpt' / SIDECAR}); "
                             f"drop --resume to start a new run there")
        return None
    if not resume:
        raise UsageError(f"{out_dir} already holds a training run (checkpoint at epoch {side.get('epoch')}); pass "
                         f"--resume to continue it, or choose another --out")
    check_space(side, space, f"checkpoint in {out_dir}")
    if side.get("dataset") != data.name:
        raise UsageError(f"checkpoint in {out_dir} was trained on dataset {side.get('dataset')} but --dataset gives "
                         f"{data.name}; resume with the same dataset or start a new --out")
    if side.get("holdout", 0) != getattr(data, "holdout", 0):
        raise UsageError(f"checkpoint in {out_dir} held {side.get('holdout', 0)} training images out for the probe "
                         f"but this run holds {getattr(data, 'holdout', 0)}; resume with the same --probe-holdout "
                         f"and --probe-images")
    for key, now in (("batch_size", bs), ("seed", getattr(data, "seed", None))):
        if side.get(key) is not None and now is not None and side[key] != now:
            print(f"warning: resuming with {key} {now} where the run used {side[key]}: the continuation will not "
                  f"match an uninterrupted run", file=sys.stderr)
    return side


def train(space: SearchSpace, data, out_dir, epochs: int, *, lr: float = 0.05, warmup_epochs: float = 1.0,
          weight_decay: float = 4e-5, label_smoothing: float = 0.1, momentum: float = 0.9,
          sampling: str = "one-layer", random_configs: int = 1, seed: int = 0, strategy=None,
          resume: bool = False, extra_callbacks=(), calib_batches: int = 10, summary: bool = True,
          tensorboard: bool = True, validate: bool = True, verbose: int = 1,
          args: dict | None = None, probe_configs: int = 0, probe_images: int = 512) -> TrainResult:
    """Train a Supernet on ``data`` (tfwidth.data.Data) for ``epochs`` epochs in total, checkpointing each epoch.

    ``extra_callbacks`` run after the built-in epoch end (statistics rolled, stats.json and checkpoint written) and
    before TensorBoard and the log.jsonl line (so what they add to ``logs`` is logged): an AOWS callback reads
    ``self.model.width_stats()`` and sets the sampling with ``self.model.set_sampling(probs)`` (at on_epoch_begin or
    every K batches); the probabilities are a model variable, so checkpoints hold them.
    validate: log the max network's top-1 on data.eval each epoch (moving BN statistics, no recalibration).
    probe_configs: after the last epoch, measure that many random configurations of the trained supernet on
    ``probe_images`` fixed training images (tfwidth/probe.py; the held-out ones if ``data`` holds some out) into
    stats.json's probe view, which the solver prefers; a probe already there for this epoch count and these settings
    is kept.
    """
    import tensorflow as tf
    keras = _keras()
    from tfwidth.supernet import Supernet
    reproducible_graphs()

    if epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {epochs}")
    if random_configs < 0:
        raise UsageError(f"--random-configs must be >= 0, got {random_configs}")
    strategy = strategy or tf.distribute.get_strategy()
    out = Path(out_dir)
    side = check_run(space, data, out, resume, strategy.num_replicas_in_sync)
    chief = _is_chief(strategy)
    # Non-chief workers must take part in saving (it is collective) but write to a scratch directory.
    write_dir = out if chief else out / f".worker{strategy.cluster_resolver.task_id}"
    start = int(side["epoch"]) if side else 0
    if start > epochs:
        raise UsageError(f"the checkpoint is at epoch {start}, beyond --epochs {epochs}; pass --epochs >= {start}")
    spe = data.steps_per_epoch

    if chief:
        space.save(out / "space.json")
    with strategy.scope():
        model = Supernet(space, weight_decay=weight_decay, label_smoothing=label_smoothing, sampling=sampling,
                         random_configs=random_configs, seed=seed)
        schedule = cosine_warmup(lr, int(round(warmup_epochs * spe)), epochs * spe)
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=momentum, nesterov=True)
        model.compile(optimizer=optimizer)
        optimizer.build(model.trainable_variables)  # slots exist before restore: no deferred restoration
        ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)
        manager = tf.train.CheckpointManager(ckpt, str(write_dir / "ckpt"), max_to_keep=2)
        if side:
            path = str(out / "ckpt" / side["checkpoint"])
            try:
                ckpt.restore(path).assert_existing_objects_matched()
            except (tf.errors.OpError, AssertionError, ValueError) as e:
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise UsageError(f"cannot read the checkpoint {path} ({msg}); start a new --out, or delete "
                                 f"{out / 'ckpt'} to train {out} afresh") from None
            if int(model.stats_epochs.numpy()) != start:
                raise UsageError(f"checkpoint {path} holds {int(model.stats_epochs.numpy())} epochs of statistics "
                                 f"but {SIDECAR} says {start}; the run directory is inconsistent: start a new --out")
    if chief:
        _trim_log(out / "log.jsonl", start)
    record = {"kind": "train_checkpoint", "space_hash": space.space_hash, "space": space.to_json(),
              "dataset": data.name, "batch_size": getattr(data, "batch_size", None), "seed": seed,
              "holdout": getattr(data, "holdout", 0),
              "sampling": sampling, "args": args or {}}

    checkpointer, log_line = _epoch_end_callbacks(model, manager, write_dir, record, chief, optimizer, schedule)
    callbacks = [checkpointer, *extra_callbacks]
    if tensorboard and _have_tensorboard():
        callbacks.append(keras.callbacks.TensorBoard(str(write_dir / "tb"), write_graph=False, profile_batch=0))
    callbacks.append(log_line)
    if start < epochs:
        model.fit(data.train_epochs(start, epochs), epochs=epochs, initial_epoch=start, steps_per_epoch=spe,
                  validation_data=data.eval if validate else None, callbacks=callbacks, verbose=verbose)
    stats = model.width_stats()
    if probe_configs and chief:
        from tfwidth import probe
        from tfwidth.stats import WidthStats
        old = WidthStats.load(out / "stats.json", space) if (out / "stats.json").exists() else None
        batches, source = probe.data_batches(data, probe_images)
        if old is not None and old.epochs == stats.epochs and probe.is_current(old, probe_configs, seed, batches):
            stats = old
        else:
            probe.probe_run(model, stats, batches, probe_configs, seed, source, progress=verbose == 1)
            stats.save(out / "stats.json")
    result = TrainResult(model, stats, {}, epochs)
    if summary:
        result.summary = summarise(model, data, calib_batches)
        result.summary.update(space_hash=space.space_hash, dataset=data.name, epochs=epochs)
        if chief:
            write_json(out / "summary.json", result.summary)
    return result


def _have_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
        return True
    except ImportError:
        print("warning: the tensorboard package is not installed: no TensorBoard logs (pip install tensorboard)",
              file=sys.stderr)
        return False


def summarise(model, data, calib_batches: int) -> dict:
    space = model.space
    configs = {"max": space.max_widths, "min": space.min_widths, "uniform_1.0": space.uniform(1.0)}
    top1 = {k: model.evaluate_widths(w, data, calib_batches=calib_batches) for k, w in configs.items()}
    return {"kind": "train_summary", "top1": top1, "widths": {k: list(w) for k, w in configs.items()},
            "calib_batches": calib_batches}


def _trim_log(path: Path, epoch: int) -> None:
    """On resume, drop log lines of epochs the checkpoint does not contain (written after it, before the kill)."""
    if not path.exists():
        return
    keep = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l).get("epoch", 0) <= epoch]
    atomic_write_bytes(path, "".join(l + "\n" for l in keep).encode())


def _epoch_end_callbacks(model, manager, out: Path, record: dict, chief: bool, optimizer, schedule):
    """Two callbacks: the first (before any extra callback) rolls the statistics and writes stats.json and the
    checkpoint; the last writes the epoch's log line, so that values extra callbacks add to `logs` (e.g. AOWS's
    temperature) are in log.jsonl, and then the sidecar that commits the epoch. A kill before the sidecar resumes from
    the previous epoch (whose log lines _trim_log keeps), so no epoch's log line is lost or written twice.
    Built on demand: importing this module (--help) loads no TensorFlow."""
    keras = _keras()
    saved = {}

    class Checkpointer(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            model.end_stats_epoch()
            if chief:
                model.width_stats().save(out / "stats.json")
            saved[epoch] = manager.save(checkpoint_number=epoch + 1)

    class LogLine(keras.callbacks.Callback):
        t0 = time.time()

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.time()

        def on_epoch_end(self, epoch, logs=None):
            if not chief:
                return
            lr = float(schedule(optimizer.iterations.read_value()))  # of the next step
            line = {"kind": "epoch", "space_hash": record["space_hash"], "epoch": epoch + 1,
                    "step": int(optimizer.iterations.numpy()), "lr": lr, "seconds": round(time.time() - self.t0, 2),
                    **{k: float(v) for k, v in (logs or {}).items()}}
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")
                f.flush()
            write_json(out / "ckpt" / SIDECAR, dict(record, epoch=epoch + 1, checkpoint=Path(saved.pop(epoch)).name))

    return Checkpointer(), LogLine()


# ---- CLI ----------------------------------------------------------------------------------------------------------
def aows_callbacks(a, space: SearchSpace, total_steps: int, data) -> tuple:
    if not a.aows:
        if a.latency or a.target_ms is not None:
            raise UsageError("--latency and --target-ms only matter with --aows; add --aows or drop them")
        return ()
    if not a.latency or a.target_ms is None:
        raise UsageError("--aows needs --latency table.json and --target-ms T (the target to focus training on)")
    from tfwidth import mrf
    from tfwidth.aows import AOWSCallback
    from tfwidth.latency import LatencyTable
    table = LatencyTable.load(a.latency, space)
    lat = table.chain()
    fastest = mrf.min_total(lat)[1]
    if a.target_ms < fastest:
        raise UsageError(f"--target-ms {a.target_ms:g} is below the fastest predicted configuration "
                         f"({fastest:.4f} ms); raise it")
    probe_batches = None
    if a.aows_probe_configs:
        from tfwidth import probe
        probe_batches, _ = probe.data_batches(data, a.aows_probe_images)
    return (AOWSCallback(space, lat, a.target_ms, total_steps, a.out, every=a.aows_every,
                         probe_batches=probe_batches, probe_configs=a.aows_probe_configs or 1, seed=a.seed),)


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m tfwidth.train", description=(
        "Train the slimmable MobileNetV1 supernet (sandwich rule with in-place distillation) and measure, for each "
        "layer and width, the loss increase over the full network: RUN_DIR/stats.json, which the solver reads. "
        "With no arguments: a short offline demo (digits, mobilenet_v1_cifar at 16 px)."),
        epilog=("RUN_DIR gets space.json, stats.json (per layer and width: mean loss increase over the max network), "
                "log.jsonl, tb/ (TensorBoard), ckpt/ (tf.train.Checkpoint + checkpoint.json) and summary.json. "
                "After a kill, run the same command with --resume: training continues from the last finished "
                "epoch exactly as if uninterrupted."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--space", help="space.json (default: the mobilenet_v1_cifar preset at 16 px, for the demo)")
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

    space = SearchSpace.load(a.space) if a.space else preset(DEMO["preset"], resolution=DEMO["resolution"])
    if a.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {a.batch_size}")
    if a.probe_configs < 0 or a.probe_images < 1 or a.aows_probe_configs < 0 or a.aows_probe_images < 1:
        raise UsageError("--probe-configs and --aows-probe-configs must be >= 0, --probe-images and "
                         "--aows-probe-images >= 1")
    strategy = make_strategy(a.strategy)
    if a.batch_size < strategy.num_replicas_in_sync:
        raise UsageError(f"batch size {a.batch_size} is smaller than the {strategy.num_replicas_in_sync} devices of "
                         f"the strategy; use --batch-size >= {strategy.num_replicas_in_sync}")
    from tfwidth.data import load_data
    data = load_data(a.dataset, space, a.batch_size, seed=a.seed, train_limit=a.train_limit,
                     eval_limit=a.eval_limit, holdout=a.probe_images if a.probe_holdout else 0)
    print(space.describe().splitlines()[0])
    print(data.describe())
    callbacks = aows_callbacks(a, space, a.epochs * data.steps_per_epoch, data)
    res = train(space, data, a.out, a.epochs, lr=a.lr, warmup_epochs=a.warmup_epochs, weight_decay=a.weight_decay,
                label_smoothing=a.label_smoothing, sampling=a.sampling, random_configs=a.random_configs,
                seed=a.seed, strategy=strategy, resume=a.resume, calib_batches=a.calib_batches,
                verbose=0 if a.quiet else 1, args=vars(a), extra_callbacks=callbacks,
                probe_configs=a.probe_configs, probe_images=a.probe_images)
    top1 = res.summary["top1"]
    print(f"top-1 after BN recalibration ({a.calib_batches} batches): "
          + ", ".join(f"{k} {100 * v:.1f}%" for k, v in top1.items()))
    print(f"wrote {a.out}/stats.json, log.jsonl, summary.json, ckpt/, tb/")
    return 0


if __name__ == "__main__":
    from tfwidth.errors import run_cli
    sys.exit(run_cli(main))
