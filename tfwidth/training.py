"""Training the slimmable supernet, and reading a training run directory: the library under `python -m tfwidth.train`
(tfwidth/train.py, which adds the probe of the trained supernet and the CLI) and the plain fine-tuning of
tfwidth/export.py (its learning-rate schedule, strategies, chief worker and reproducible graphs).

RUN_DIR receives space.json, stats.json (every epoch), log.jsonl (one JSON line per epoch), tb/ (TensorBoard),
ckpt/ (tf.train.Checkpoint of model, optimizer, statistics and sampler, plus checkpoint.json naming the space,
dataset and epoch) and summary.json (top-1 of the max, min and uniform-1.0 configurations after BN recalibration).

Resume is exact at epoch boundaries: the data order is a function of (seed, epoch), the random widths of
(seed, step), the learning rate of the step, and everything else is in the checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tfwidth  # noqa: F401  (selects Keras 2 before TensorFlow loads; TensorFlow itself is imported lazily)
from device_profiler import console
from tfwidth.artifacts import atomic_write_bytes, check_space, read_json, write_json
from tfwidth.errors import UsageError
from tfwidth.space import SearchSpace

SIDECAR = "checkpoint.json"


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

    With it on, the classifier's gradients differed in the last bits from one process to the next even on one
    thread with op determinism enabled (its rewriting of the sum of the three configurations' gradients is the
    likely varying order), and training amplifies that into different supernets; with it off, every process gave
    the same weights, at a price within the timing noise (measured: docs/benchmarks.md, "Kill soak"). A resumed or
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
    """The tf.distribute strategy for --strategy ``name``: default (one device), mirrored (this machine's devices)
    or multiworker (the cluster in TF_CONFIG)."""
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


def mixed_policy() -> str:
    """The tf_keras policy of --mixed-precision for the devices TensorFlow sees: mixed_float16 where a GPU is
    visible (its fast 16-bit units are float16's; the optimizer then scales the loss so that small gradients stay
    representable), mixed_bfloat16 on CPUs (float32's exponent range: no loss scaling needed)."""
    import tensorflow as tf
    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"


def loss_scaled(optimizer, precision: str | None):
    """``optimizer`` wrapped in tf_keras's LossScaleOptimizer (dynamic loss scaling) for mixed_float16, whose
    gradients would otherwise underflow; as it is for float32 and mixed_bfloat16."""
    if precision != "mixed_float16":
        return optimizer
    return _keras().mixed_precision.LossScaleOptimizer(optimizer)


def is_chief(strategy) -> bool:
    """Whether this process writes the run's files: the chief, or worker 0 of a cluster without one (every process
    of a single-machine strategy)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


def worker_index(strategy) -> tuple[int, int]:
    """(this worker's index, the number of workers) of a multi-worker strategy's cluster, the chief first; (0, 1) for
    a single-machine strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return 0, 1
    spec = resolver.cluster_spec().as_dict()
    tasks = [(job, i) for job in ("chief", "worker") for i in range(len(spec.get(job, [])))]
    return tasks.index((resolver.task_type, resolver.task_id)), len(tasks)


def sum_over_workers(strategy, values: np.ndarray) -> np.ndarray:
    """The sum over the workers of ``strategy`` of each one's ``values`` (a numpy array of one shape and dtype on
    every worker; collective: every worker must call it). How work split between the workers is gathered."""
    import tensorflow as tf
    if worker_index(strategy)[1] == 1:
        return np.asarray(values)
    given = []

    def value(ctx):  # the worker's first replica carries its values, any other local replica zeros
        mine = not given
        given.append(ctx.replica_id_in_sync_group)
        return tf.constant(values if mine else np.zeros_like(values))

    per_replica = strategy.experimental_distribute_values_from_function(value)
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()


def distributed_epochs(strategy, data, start: int, end: int, augment: bool = True):
    """Training batches of epochs [start, end) of ``data`` for ``strategy``: the dataset itself on one replica;
    otherwise a distributed dataset in which each worker's input pipeline reads and decodes only its own rows of
    every global batch (Data.train_epochs ``pipeline``) and hands its replicas consecutive per-replica batches, so
    that the replicas of one step together hold exactly the global batch one device would train on, and every
    example is seen once per epoch across the workers (sharded, not duplicated)."""
    if strategy.num_replicas_in_sync == 1:
        return data.train_epochs(start, end, augment)
    global_batch = data.batch_size

    def pipeline(ctx):
        return data.train_epochs(start, end, augment, pipeline=(ctx.input_pipeline_id, ctx.num_input_pipelines),
                                 batch=ctx.get_per_replica_batch_size(global_batch))

    return strategy.distribute_datasets_from_function(pipeline)


def save_checkpoint(ckpt, manager, number: int) -> str | None:
    """Save ``ckpt`` as checkpoint ``number``: the chief through its CheckpointManager (``manager``), returning the
    path; a worker that is not the chief (``manager`` None) still saves, since saving distributed variables can need
    every worker, but into a temporary directory it deletes at once (tf.distribute's documented pattern), so only
    the chief writes checkpoints. Returns None there."""
    if manager is not None:
        return manager.save(checkpoint_number=number)
    scratch = tempfile.mkdtemp(prefix="tfwidth-worker-ckpt-")
    try:
        ckpt.save(os.path.join(scratch, "ckpt"))  # as the chief's manager does, save_counter included
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return None


def checkpoint(**objects):
    """tf.train.Checkpoint of ``objects``, made inside the strategy's scope, with its save counter created now: made
    lazily at the first save, it would be a variable that only the workers saving through a manager create, and
    creating a variable is collective under a multi-worker strategy (the workers' collectives then mismatch)."""
    import tensorflow as tf
    ckpt = tf.train.Checkpoint(**objects)
    _ = ckpt.save_counter
    return ckpt


def read_sidecar(out_dir) -> dict | None:
    """The checkpoint record (space, dataset, epoch) of the run in ``out_dir``, or None before its first
    checkpoint."""
    p = Path(out_dir) / "ckpt" / SIDECAR
    return read_json(p, "checkpoint record") if p.exists() else None


def _class_count(data) -> int:
    c = data.classes
    return int(c) if isinstance(c, (int, np.integer)) else len(c)


def check_run(space: SearchSpace, data, out_dir, resume: bool, replicas: int,
              precision: str | None = None) -> dict | None:
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
    if side.get("precision", "float32") != (precision or "float32"):
        raise UsageError(f"checkpoint in {out_dir} was trained in {side.get('precision', 'float32')} but this run "
                         f"uses {precision or 'float32'}; resume with the same --mixed-precision setting")
    for key, now in (("batch_size", bs), ("seed", getattr(data, "seed", None))):
        if side.get(key) is not None and now is not None and side[key] != now:
            print(f"warning: resuming with {key} {now} where the run used {side[key]}: the continuation will not "
                  f"match an uninterrupted run", file=sys.stderr)
    return side


def train_supernet(space: SearchSpace, data, out_dir, epochs: int, *, lr: float = 0.05, warmup_epochs: float = 1.0,
          weight_decay: float = 4e-5, label_smoothing: float = 0.1, momentum: float = 0.9,
          sampling: str = "one-layer", random_configs: int = 1, seed: int = 0, strategy=None,
          resume: bool = False, extra_callbacks=(), calib_batches: int = 10, summary: bool = True,
          tensorboard: bool = True, validate: bool = True, verbose: int = 1,
          args: dict | None = None, precision: str | None = None) -> TrainResult:
    """Train a Supernet on ``data`` (tfwidth.data.Data) for ``epochs`` epochs in total, checkpointing each epoch.

    ``extra_callbacks`` run after the built-in epoch end (statistics rolled, stats.json and checkpoint written) and
    before TensorBoard and the log.jsonl line (so what they add to ``logs`` is logged): an AOWS callback reads
    ``self.model.width_stats()`` and sets the sampling with ``self.model.set_sampling(probs)`` (at on_epoch_begin or
    every K batches); the probabilities are a model variable, so checkpoints hold them.
    validate: log the max network's top-1 on data.eval each epoch (moving BN statistics, no recalibration).
    verbose: 0 silent, 1 a progress bar over the remaining steps and a line per epoch, 2 the lines only.
    precision: None (float32) or a mixed-precision policy (mixed_policy(); the supernet's layers compute in 16 bits,
    with loss scaling for mixed_float16); a resume must use the same.
    Returns the trained model, its training-time statistics, the summary and the epoch count (the probe of the
    trained supernet is the caller's: tfwidth.train.train).
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
    side = check_run(space, data, out, resume, strategy.num_replicas_in_sync, precision)
    chief = is_chief(strategy)
    start = int(side["epoch"]) if side else 0
    if start > epochs:
        raise UsageError(f"the checkpoint is at epoch {start}, beyond --epochs {epochs}; pass --epochs >= {start}")
    spe = data.steps_per_epoch

    if chief:
        space.save(out / "space.json")
    with strategy.scope():
        model = Supernet(space, weight_decay=weight_decay, label_smoothing=label_smoothing, sampling=sampling,
                         random_configs=random_configs, seed=seed, precision=precision)
        schedule = cosine_warmup(lr, int(round(warmup_epochs * spe)), epochs * spe)
        optimizer = loss_scaled(keras.optimizers.SGD(learning_rate=schedule, momentum=momentum, nesterov=True),
                                precision)
        model.compile(optimizer=optimizer)
        optimizer.build(model.trainable_variables)  # slots exist before restore: no deferred restoration
        ckpt = checkpoint(model=model, optimizer=optimizer)
        # Only the chief keeps checkpoints; the other workers save into scratch (save_checkpoint)
        manager = tf.train.CheckpointManager(ckpt, str(out / "ckpt"), max_to_keep=2) if chief else None
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
              "holdout": getattr(data, "holdout", 0), "precision": precision or "float32",
              "sampling": sampling, "args": args or {}}

    checkpointer, log_line = _epoch_end_callbacks(model, ckpt, manager, out, record, chief, optimizer, schedule)
    callbacks = [checkpointer, *extra_callbacks]
    if tensorboard and chief and _have_tensorboard():
        callbacks.append(keras.callbacks.TensorBoard(str(out / "tb"), write_graph=False, profile_batch=0))
    callbacks.append(log_line)
    if chief and verbose:
        callbacks.append(_progress_callback(start, epochs, spe, bar=verbose == 1))
    if start < epochs:
        # Keras's own progress bar redraws with carriage returns, which a log file keeps as one endless line: the
        # callback above shows tfwidth's (device_profiler.console.Progress) instead
        model.fit(distributed_epochs(strategy, data, start, epochs), epochs=epochs, initial_epoch=start, steps_per_epoch=spe,
                  validation_data=data.eval if validate else None, callbacks=callbacks, verbose=0)
    result = TrainResult(model, model.width_stats(), {}, epochs)
    if summary and chief:  # (only the chief writes it; the other workers' summary would be the same)
        result.summary = summarise(model, data, calib_batches)
        result.summary.update(space_hash=space.space_hash, dataset=data.name, epochs=epochs)
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
    """summary.json's content: top-1 of the supernet's max, min and uniform-1.0 configurations, each after BatchNorm
    recalibration on ``calib_batches`` batches."""
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


def _epoch_end_callbacks(model, ckpt, manager, out: Path, record: dict, chief: bool, optimizer, schedule):
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
            saved[epoch] = save_checkpoint(ckpt, manager, epoch + 1)

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


def _progress_callback(start: int, epochs: int, steps_per_epoch: int, bar: bool = True):
    """A Keras callback showing training from epoch ``start`` to ``epochs``: one progress bar over all the remaining
    steps (its ETA is the training's; with ``bar``), and a line of the epoch's figures at each epoch end."""
    keras = _keras()

    class Shown(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = console.Progress((epochs - start) * steps_per_epoch, f"training epochs {start + 1}-{epochs}",
                                        unit="step", enabled=bar)

        def on_train_batch_end(self, batch, logs=None):
            if logs and "loss" in logs:
                self.bar.postfix(loss=f"{float(logs['loss']):.3f}")
            self.bar.update()

        def on_epoch_end(self, epoch, logs=None):
            self.bar.write(f"epoch {epoch + 1}/{epochs}: " + "  ".join(
                f"{k} {float(v):.4g}" for k, v in (logs or {}).items()))

        def on_train_end(self, logs=None):
            self.bar.close()

    return Shown()


def run_space(run_dir: Path) -> tuple[dict | None, str | None]:
    """The space a run directory was made for (from any space-stamped JSON in it), and which file said so."""
    for name in ("space.json", "ckpt/checkpoint.json", "ckpt.json", "run.json", "stats.json"):
        p = run_dir / name
        if p.is_file():
            try:
                d = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(d, dict) and "space_hash" in d:
                return d, str(p)
    return None, None


def load_supernet(run_dir: Path, space: SearchSpace):
    """The supernet of a `python -m tfwidth.train --out RUN_DIR` run, at its last finished epoch."""
    import tensorflow as tf
    from tfwidth.supernet import Supernet
    side = read_sidecar(run_dir) if Path(run_dir).is_dir() else None
    if side is None or not side.get("checkpoint"):
        raise UsageError(f"run directory {run_dir} holds no supernet checkpoint ({Path(run_dir) / 'ckpt' / SIDECAR} "
                         f"is missing); train one with `python -m tfwidth.train --out {run_dir}`, or use --init "
                         f"scratch")
    check_space(side, space, f"supernet checkpoint in {run_dir}")
    model = Supernet(space)
    path = Path(run_dir) / "ckpt" / side["checkpoint"]
    try:
        tf.train.Checkpoint(model=model).restore(str(path)).expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"cannot read the supernet checkpoint {path} ({msg}); resume or redo the training") \
            from None
    return model
