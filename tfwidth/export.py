"""widths.json -> a trained, quantized, verified and timed .tflite (plus the plain .keras model and report.json).

    python -m tfwidth.export --widths widths.json --run RUN_DIR --dataset D [--init supernet|scratch] [--epochs N]
                             [--format fp32|fp16|int8|qat] [--latency table.json] -o model.tflite

Steps: rebuild the architecture's plain model (tfwidth.arch, standard tf_keras layers only) at the solved widths;
initialise it from the supernet (sliced weights + BatchNorm re-estimated for these widths) or from scratch; train it
(cosine schedule with warm-up, label smoothing, optional distillation from the supernet's max network, resumable
with --resume, on any tf.distribute strategy of tfwidth.train with --strategy, progress bars, optional TensorBoard);
for qat, fine-tune again with fake quantization; convert; check the .tflite against Keras on evaluation images; time it
with the device profiler's protocol; compare with the latency table. Outputs are written last and atomically, so a
failed or interrupted export leaves nothing half-written beside the output path (training checkpoints live in
RUN_DIR/export/).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shutil
import sys
import time
import tempfile
from pathlib import Path

import numpy as np

import tfwidth  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from tfwidth.artifacts import check_space, json_bytes, read_json, write_json, write_set
from tfwidth.convert import FORMATS, INTEGER_FORMATS, IO_TYPES, LiteModel, agreement, check_format, convert, \
    keras_logits, latency_format, quantize_for_training, top1
from device_profiler import console
from device_profiler.checks import cores, count, cpu_list, number, output_dir, output_file
from tfwidth.errors import ArgumentParser, UsageError, run_cli
from tfwidth.host import measure_latency
from tfwidth.space import SearchSpace
from tfwidth.training import load_supernet, run_space

# The bars for Keras vs .tflite agreement, per format (fp16 weights round logits to ~1e-3 relative).
FP32_MAX_ABS_DIFF = 1e-4
FP16_MAX_ABS_DIFF = 5e-2
INT8_MIN_TOP1_AGREEMENT = 0.95
LATENCY_TOLERANCE = 0.05


# ---- inputs -------------------------------------------------------------------------------------------------------
def load_widths(path) -> tuple[SearchSpace, tuple, dict]:
    """widths.json -> (its space, its validated widths, the document)."""
    d = read_json(path, "widths file")
    if d.get("kind", "widths") != "widths" or "widths" not in d:
        raise UsageError(f"{path} is not a widths file (kind {d.get('kind')!r}); pass the widths.json written by "
                         f"`python -m tfwidth.solve`")
    if not isinstance(d.get("space"), dict):
        raise UsageError(f"widths file {path} embeds no space; regenerate it with `python -m tfwidth.solve`")
    space = SearchSpace.from_dict(d["space"])
    check_space(d, space, f"widths file {path}")
    widths = space.validate(d["widths"], what=f"widths file {path}")
    return space, widths, d


def load_latency_table(path, space: SearchSpace):
    """The LatencyTable at ``path`` for ``space`` (a table of another space is refused); a UsageError when this
    installation has no tfwidth.latency."""
    try:
        from tfwidth.latency import LatencyTable
    except ImportError:
        raise UsageError("--latency needs tfwidth.latency, which this installation lacks; drop --latency") from None
    return LatencyTable.load(path, space)  # refuses a table of another space, naming both hashes


# ---- training -----------------------------------------------------------------------------------------------------
def make_optimizer(schedule, weight_decay: float, momentum: float = 0.9):
    """SGD with Nesterov momentum on the learning-rate ``schedule``, with decoupled ``weight_decay`` on conv and
    dense kernels only (0: none): the optimizer of the export's fine-tuning."""
    import tf_keras as keras
    opt = keras.optimizers.SGD(schedule, momentum=momentum, nesterov=True, weight_decay=weight_decay or None,
                               jit_compile=False)
    if weight_decay:
        # Decoupled decay on conv/dense kernels only: shrinking BN scales or biases is not regularisation.
        opt.exclude_from_weight_decay(var_names=["_bn", "bias", "gamma", "beta"])
    return opt


def replica_copy(model, strategy, precision: str | None = None):
    """The model rebuilt inside ``strategy.scope()`` with the same weights, so that its variables are mirrored; with
    more than one replica every BatchNorm (also inside a QAT wrapper) is synchronised over the replicas, so N devices
    compute the statistics of the global batch, as one device would. ``precision``: a mixed-precision policy every
    layer of the copy takes (its weights stay float32; tf_keras's BatchNormalization computes in float32 anyway).
    The model itself is left as it was."""
    import contextlib

    import tf_keras as keras
    sync = strategy.num_replicas_in_sync > 1

    def clone(layer):
        cfg = layer.get_config()
        inner = cfg.get("layer") if isinstance(cfg.get("layer"), dict) else {}
        for c in (cfg if isinstance(layer, keras.layers.BatchNormalization) else None,
                  inner.get("config") if inner.get("class_name") == "BatchNormalization" else None):
            if c is not None and sync:
                c["synchronized"] = True
        if precision not in (None, "float32") and "dtype" in cfg and not isinstance(layer, keras.layers.InputLayer):
            cfg["dtype"] = precision
        return layer.__class__.from_config(cfg)

    quantized = any(type(l).__module__.startswith("tensorflow_model_optimization") for l in model.layers)
    if quantized:
        import tensorflow_model_optimization as tfmot
        scope = tfmot.quantization.keras.quantize_scope()
    else:
        scope = contextlib.nullcontext()
    with strategy.scope(), scope:
        net = keras.models.clone_model(model, clone_function=clone)
        net.set_weights(model.get_weights())
    return net


def train_plain(model, data, *, epochs: int, lr: float = 0.05, warmup_epochs: float = 0.0,
                label_smoothing: float = 0.1, weight_decay: float = 4e-5, teacher=None, distill_weight: float = 0.5,
                temperature: float = 4.0, ckpt_dir: Path | None = None, resume: bool = False,
                tensorboard: str | None = None, desc: str = "train", progress: bool = True,
                eval_each_epoch: bool = True, signature: dict | None = None, strategy=None,
                precision: str | None = None) -> list[dict]:
    """Train a plain Keras model in place for ``epochs`` epochs of ``data``; one checkpoint per epoch in ckpt_dir.

    The export's fine-tuning loop (``fine_tune``), for a fixed-width model of standard layers; the supernet's
    training is tfwidth.train.train.

    With ``teacher`` the loss is (1 - a) * CE(labels) + a * T^2 * KL(teacher_T || student_T) (Hinton et al.).
    ``signature``: what the checkpoint belongs to; resuming a checkpoint of something else is refused, and so is
    ``resume`` when ckpt_dir holds no checkpoint. ``strategy``: a tf.distribute strategy (tfwidth.train.make_strategy);
    the model is trained as a copy in its scope (replica_copy) and the weights are copied back at the end. The loss
    is averaged over the global batch, so any number of replicas computes what one device computes.
    ``precision``: None (float32) or a mixed-precision policy (tfwidth.training.mixed_policy) the copy trained
    computes in; logits are cast to float32 before the loss, mixed_float16 scales the loss (LossScaleOptimizer), and
    the weights copied back are float32.
    Returns one dict per epoch trained now (loss, train_top1, eval_top1, lr).
    """
    import tensorflow as tf

    from tfwidth.training import checkpoint, cosine_warmup, distributed_epochs, is_chief, loss_scaled, \
        reproducible_graphs, save_checkpoint
    if epochs <= 0:
        return []
    reproducible_graphs()
    default = tf.distribute.get_strategy()
    strategy = strategy or default
    mixed = precision not in (None, "float32")
    net = model if strategy is default and not mixed else replica_copy(model, strategy, precision)
    guide = None if teacher is None or strategy is default else replica_copy(teacher, strategy)
    guide = teacher if guide is None else guide
    chief = is_chief(strategy)
    steps = data.steps_per_epoch
    global_batch = data.batch_size
    with strategy.scope():
        schedule = cosine_warmup(lr, int(round(warmup_epochs * steps)), epochs * steps)
        opt = loss_scaled(make_optimizer(schedule, weight_decay), precision)
        opt.build(net.trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
        ckpt = checkpoint(model=net, optimizer=opt, epoch=epoch_var)
    manager = None
    start = 0
    if ckpt_dir is not None:
        ckpt_dir = Path(ckpt_dir)
        sidecar = ckpt_dir / "checkpoint.json"
        sig = dict(signature or {}, epochs=int(epochs), lr=lr, warmup_epochs=warmup_epochs,
                   **({"precision": precision} if mixed else {}),
                   label_smoothing=label_smoothing, weight_decay=weight_decay, distill=teacher is not None)
        if resume:
            if not sidecar.is_file():
                raise UsageError(f"--resume: no checkpoint in {ckpt_dir}; drop --resume to start fresh")
            old = read_json(sidecar, "export checkpoint sidecar")
            diff = sorted(k for k in set(sig) | set(old.get("signature", {}))
                          if sig.get(k) != old.get("signature", {}).get(k))
            if diff:
                raise UsageError(f"the checkpoint in {ckpt_dir} was made with other settings ({', '.join(diff)} "
                                 f"differ); rerun with the same options, or without --resume to start over")
            latest = tf.train.latest_checkpoint(str(ckpt_dir))
            if latest:
                try:
                    ckpt.restore(latest).assert_existing_objects_matched()
                except (tf.errors.OpError, AssertionError, ValueError) as e:
                    raise UsageError(f"cannot read the checkpoint {latest} ({str(e).strip().splitlines()[0]}); "
                                     f"drop --resume to train afresh") from None
                start = int(epoch_var.numpy())
                print(f"{desc}: resumed at epoch {start}/{epochs} from {latest}")
        if chief:  # only the chief keeps checkpoints; the other workers save into scratch (save_checkpoint)
            if not resume and ckpt_dir.exists():
                shutil.rmtree(ckpt_dir)
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            manager = tf.train.CheckpointManager(ckpt, str(ckpt_dir), max_to_keep=1)
            write_json(sidecar, {"kind": "export_checkpoint", "signature": sig})

    classes = net.output_shape[-1]
    ce = tf.keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing,
                                                 reduction=tf.keras.losses.Reduction.NONE)
    T, a = float(temperature), float(distill_weight)
    scaled = precision == "mixed_float16"

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            logits = tf.cast(net(x, training=True), tf.float32)
            per_example = ce(tf.one_hot(y, classes), logits)
            if guide is not None:
                soft = tf.nn.softmax(guide(x, training=False) / T)
                kd = tf.reduce_sum(soft * (tf.math.log(soft + 1e-12) - tf.nn.log_softmax(logits / T)), -1)
                per_example = (1.0 - a) * per_example + a * T * T * kd
            # This replica's share of the global-batch mean: the optimizer sums the replicas' gradients.
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if net.losses:
                total = loss + tf.nn.scale_regularization_loss(tf.add_n([tf.cast(l, tf.float32) for l in net.losses]))
            else:
                total = loss
            if scaled:
                total = opt.get_scaled_loss(total)
        grads = tape.gradient(total, net.trainable_variables)
        if scaled:
            grads = opt.get_unscaled_gradients(grads)
        opt.apply_gradients(zip(grads, net.trainable_variables))
        correct = tf.reduce_sum(tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == y, tf.float32))
        return loss, correct

    @tf.function
    def step(x, y):
        loss, correct = strategy.run(replica_step, args=(x, y))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None))

    writer = tf.summary.create_file_writer(tensorboard) if tensorboard and chief else None
    history = []
    for epoch in range(start, epochs):
        losses, correct, seen = [], 0.0, 0
        batches = distributed_epochs(strategy, data, epoch, epoch + 1)
        with console.Progress(steps, f"{desc} epoch {epoch + 1}/{epochs}", unit="step",
                              enabled=progress and chief) as bar:
            for x, y in batches:
                loss, c = step(x, y)
                losses.append(float(loss))
                correct += float(c)
                seen += global_batch
                bar.postfix(loss=f"{np.mean(losses[-20:]):.3f}")
                bar.update()
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "train_top1": correct / max(seen, 1),
               "lr": float(schedule(opt.iterations))}
        if eval_each_epoch:
            xe, ye = data.eval_arrays()
            rec["eval_top1"] = top1(keras_logits(net, xe), ye)
        history.append(rec)
        if chief:
            print(f"{desc} epoch {epoch + 1}/{epochs}: " + "  ".join(
                f"{k} {v:.4g}" for k, v in rec.items() if k != "epoch"))
        if writer is not None:
            with writer.as_default(step=epoch + 1):
                for k, v in rec.items():
                    if k != "epoch":
                        tf.summary.scalar(f"{desc}/{k}", v)
            writer.flush()
        epoch_var.assign(epoch + 1)
        if ckpt_dir is not None:
            save_checkpoint(ckpt, manager, epoch + 1)
    if net is not model:
        model.set_weights(net.get_weights())
    return history


def recalibrate_plain_bn(model, data, batches: int) -> int:
    """Re-estimate every BatchNorm's moving statistics of a plain Keras model as the exact average of ``batches``
    training batches' statistics (momentum k/(k+1) at batch k), as the supernet does after slicing. A short
    fine-tune leaves them mostly at their momentum-0.99 starting point; this makes evaluation match the weights."""
    import tf_keras as keras
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    saved = [l.momentum for l in bns]
    for l in bns:
        l.moving_mean.assign(np.zeros(l.moving_mean.shape, np.float32))
        l.moving_variance.assign(np.ones(l.moving_variance.shape, np.float32))
    k = 0
    try:
        for x, _ in data.calibration(batches):
            for l in bns:
                l.momentum = k / (k + 1.0)
            model(x, training=True)
            k += 1
    finally:
        for l, m in zip(bns, saved):
            l.momentum = m
    return k


# ---- initialisation -------------------------------------------------------------------------------------------
def initial_model(space: SearchSpace, widths, init: str, run_dir: Path, data, *, calib_batches: int = 20,
                  distill: bool = False, seed: int = 0):
    """(plain model at widths, teacher or None). supernet: sliced weights, BN re-estimated for these widths."""
    import tf_keras as keras
    keras.utils.set_random_seed(seed)
    if init == "scratch":
        if distill:
            raise UsageError("--distill needs a supernet to distil from; use it with --init supernet")
        return space.architecture.build(space, widths), None
    supernet = load_supernet(run_dir, space)
    teacher = None
    if distill:
        supernet.recalibrate_bn(space.max_widths, data, calib_batches)
        teacher = supernet.to_plain(space.max_widths)
        teacher.trainable = False
    supernet.recalibrate_bn(widths, data, calib_batches)
    return supernet.to_plain(widths), teacher


@dataclasses.dataclass
class FineTuned:
    """What ``fine_tune`` made: the float Keras model (BatchNorm re-estimated after training), the model to convert
    (the same, or its quantization-aware copy for qat), the teacher it was distilled from (or None), each epoch's
    figures of the float and QAT training, the batches BatchNorm was re-estimated on, and the learning rate and
    warm-up it trained with."""
    model: object
    deployed: object
    teacher: object
    history: list
    qat_history: list
    recalibrated: int
    lr: float
    warmup_epochs: float


def fine_tune(space: SearchSpace, widths, data, *, init: str = "supernet", run_dir=None, epochs: int = 1,
              fmt: str = "fp32", lr: float | None = None, warmup_epochs: float | None = None,
              label_smoothing: float = 0.1, weight_decay: float = 4e-5, distill: bool = False,
              distill_weight: float = 0.5, temperature: float = 4.0, qat_epochs: int = 1, calib_batches: int = 20,
              seed: int = 0, checkpoints=None, signature: dict | None = None, resume: bool = False, strategy=None,
              tensorboard: str | None = None, progress: bool = True, eval_each_epoch: bool = True,
              precision: str | None = None) -> FineTuned:
    """The export's training recipe, on ``data`` (tfwidth.data): the plain model at ``widths`` initialised as
    ``init`` says (initial_model: the supernet in ``run_dir``, or scratch), trained ``epochs`` epochs
    (``train_plain``; ``lr`` default 0.01 for supernet, 0.05 for scratch, x batch/64; ``warmup_epochs`` default 0
    for supernet, min(1, epochs/10) for scratch; optional distillation from the supernet's max network), BatchNorm
    re-estimated on ``calib_batches`` batches after any training, and for ``fmt`` qat ``qat_epochs`` more with fake
    quantization at a tenth of the rate. ``checkpoints``: the directory of the training's checkpoints (train/ and
    qat/ below it; None: none), which ``resume`` continues and ``signature`` (what they belong to) guards.
    ``precision``: the float training's (train_plain); QAT's fake quantization trains in float32. Returns the models
    and the training's figures (FineTuned)."""
    model, teacher = initial_model(space, widths, init, run_dir, data, calib_batches=calib_batches, distill=distill,
                                   seed=seed)
    lr = lr if lr is not None else (0.01 if init == "supernet" else 0.05) * data.batch_size / 64
    warm = warmup_epochs if warmup_epochs is not None else (0.0 if init == "supernet" else min(1.0, epochs / 10))
    common = dict(label_smoothing=label_smoothing, weight_decay=weight_decay, tensorboard=tensorboard,
                  progress=progress, strategy=strategy, eval_each_epoch=eval_each_epoch, teacher=teacher,
                  distill_weight=distill_weight, temperature=temperature)
    work = None if checkpoints is None else Path(checkpoints)
    history = train_plain(model, data, epochs=epochs, lr=lr, warmup_epochs=warm, desc="train", signature=signature,
                          ckpt_dir=None if work is None else work / "train", resume=resume, precision=precision,
                          **common)
    # Also after a resume that found the training finished: the restored weights need their statistics too.
    recalibrated = recalibrate_plain_bn(model, data, calib_batches) if epochs and calib_batches else 0
    deployed, qat_history = model, []
    if fmt == "qat":
        deployed = quantize_for_training(model)
        qat_history = train_plain(deployed, data, epochs=qat_epochs, lr=lr * 0.1, warmup_epochs=0.0, desc="qat",
                                  signature=dict(signature or {}, float_epochs=epochs),
                                  ckpt_dir=None if work is None else work / "qat",
                                  resume=resume and work is not None and (work / "qat" / "checkpoint.json").is_file(),
                                  **common)
    return FineTuned(model, deployed, teacher, history, qat_history, recalibrated, lr, warm)


# ---- latency ------------------------------------------------------------------------------------------------------
def latency_section(measured: dict, table, table_path, fmt: str, widths, target_ms) -> dict:
    """The report's latency part: the ``measured`` timing of the exported model, the latency table's prediction
    for ``widths`` (None without a table) and their ratio, the target, the table entries no sample pinned down, a
    warning where the table was profiled in another format or the timing differs from it in threads or runtime, and
    the command that times the model on the device."""
    out = {"measured": measured, "target_ms": target_ms, "compared_format": latency_format(fmt),
           "device_hint": f"on the device: python -m device_profiler --template <the {latency_format(fmt)} "
                          f"template.tflite> --benchmark {','.join(map(str, widths))} --threads 1 --cpus 0"}
    if table is None:
        out.update(table=None, table_format=None, predicted_ms=None, ratio=None, warning=None)
        return out
    pred = float(table.predict(widths))
    out.update(table=str(table_path), table_format=table.format, table_runtime=getattr(table, "runtime", None),
               table_threads=getattr(table, "threads", None), table_statistic=getattr(table, "statistic", None),
               predicted_ms=pred, warning=None)
    unconstrained = table.unconstrained_on(widths) if hasattr(table, "unconstrained_on") else []
    # Entries no sample pinned down are regularised guesses: the prediction is least trustworthy there.
    out["unconstrained_terms"] = [f"{u['term']} {tuple(u['widths'])}" for u in unconstrained]
    ms = measured.get("ms", {}).get("min") if measured.get("status") == "ok" else None
    out["ratio"] = ms / pred if ms and pred > 0 else None
    warnings = []
    if table.format != latency_format(fmt):
        warnings.append(f"the latency table was profiled in {table.format} but the model is {fmt} (timed as "
                        f"{latency_format(fmt)}): its prediction does not apply; profile a "
                        f"{latency_format(fmt)} template for this target")
    if measured.get("status") == "ok":
        if getattr(table, "threads", None) not in (None, measured.get("threads")):
            warnings.append(f"timed with {measured.get('threads')} thread(s) but the table was profiled with "
                            f"{table.threads}: pass --threads {table.threads}")
        if getattr(table, "runtime", None) not in (None, measured.get("runtime")):
            warnings.append(f"timed with {measured.get('runtime')} but the table was profiled with {table.runtime}")
    out["warning"] = "; ".join(warnings) or None
    return out


# ---- report ---------------------------------------------------------------------------------------------------
def tolerance(fmt: str) -> dict:
    """The agreement bar of the .tflite against Keras for ``fmt``: max |logit difference| for float formats, top-1
    agreement for integer ones."""
    if fmt == "fp32":
        return {"max_abs_logit_diff": FP32_MAX_ABS_DIFF}
    if fmt == "fp16":
        return {"max_abs_logit_diff": FP16_MAX_ABS_DIFF}
    return {"top1_agreement": INT8_MIN_TOP1_AGREEMENT}


def within(agree: dict, tol: dict) -> bool:
    """Whether the measured agreement ``agree`` meets every bar in ``tol`` (``tolerance``)."""
    ok = True
    if "max_abs_logit_diff" in tol:
        ok &= agree["max_abs_logit_diff"] <= tol["max_abs_logit_diff"]
    if "top1_agreement" in tol:
        ok &= agree["top1_agreement"] >= tol["top1_agreement"]
    return bool(ok)


def format_report(r: dict) -> str:
    """The export report ``r`` as the lines the CLI prints: accuracy, agreement with Keras, latency."""
    lat, ag = r["latency"], r["agreement"]
    m = lat["measured"]

    def ms(v):
        return "-" if v is None else f"{v:.3f} ms"
    rows = [
        ("widths", " ".join(map(str, r["widths"]))),
        ("init / epochs", f"{r['init']} / {r['epochs']}" + (" + distill" if r["distill"] else "")
         + (f" + {r['qat_epochs']} QAT" if r["format"] == "qat" else "")),
        ("format", f"{r['format']} ({r['tflite']['input_dtype']} in, {r['tflite']['output_dtype']} out)"),
        ("top-1 Keras", f"{100 * r['keras']['top1']:.2f} %  ({r['keras']['model']})"),
        ("top-1 .tflite", f"{100 * r['tflite']['top1']:.2f} %  ({r['tflite']['runtime']} "
                          f"{r['tflite']['runtime_version']}, {r['eval_images']} images)"),
        ("agreement", f"max |dlogit| {ag['max_abs_logit_diff']:.3g}, top-1 agreement "
                      f"{100 * ag['top1_agreement']:.2f} %  ({'ok' if ag['within_tolerance'] else 'OUT OF TOLERANCE'}"
                      f": {', '.join(f'{k} {v}' for k, v in ag['tolerance'].items())})"),
        ("latency here", ms(m.get("ms", {}).get("min")) + (f"  ({m['statistic']}, {m['threads']} thread(s), "
                                                           f"cpus {m['cpus']}, {m['runtime']})"
                                                           if m.get("status") == "ok"
                                                           else f"  ({m.get('status')}: {m.get('error')})")),
        ("latency table", ms(lat["predicted_ms"]) + (f"  ({lat['table']}, {lat['table_format']}; ratio "
                                                     f"{lat['ratio']:.3f})" if lat["ratio"] else
                                                     (f"  ({lat['table']}, {lat['table_format']})"
                                                      if lat["table"] else "  (no --latency table)"))),
        ("target", ms(lat["target_ms"])),
        ("size", f"{r['size_bytes'] / 1024:.1f} KiB"),
        ("params / MACs", f"{r['params'] / 1e6:.3f} M / {r['macs'] / 1e6:.2f} M"),
        ("confirm", lat["device_hint"]),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    if lat.get("warning"):
        lines.append(f"warning: {lat['warning']}")
    if not ag["within_tolerance"]:
        lines.append(f"warning: the .tflite disagrees with Keras beyond the {r['format']} tolerance")
    return "\n".join(lines)


# ---- saving ---------------------------------------------------------------------------------------------------
def keras_bytes(model) -> bytes:
    """The model as a .keras archive (standard layers only: loads with tf_keras.models.load_model, no tfwidth)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.keras")
        model.save(path)
        return Path(path).read_bytes()


def export_work_dir(run_dir, init: str, widths) -> Path:
    """Where the export of these widths from this run keeps its training checkpoints (train/ and qat/ below it)."""
    return Path(run_dir) / "export" / f"{init}-{'-'.join(map(str, widths))}"


def default_paths(output: Path) -> tuple[Path, Path]:
    """Where the .keras model and the report go beside the .tflite ``output``."""
    return output.with_suffix(".keras"), output.with_name(output.stem + ".report.json")


# ---- CLI ------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m tfwidth.export", description=(
        "Turn solved widths (widths.json) into a deployable .tflite: rebuild a plain tf_keras MobileNetV1 at those "
        "widths, initialise it from the trained supernet (or from scratch), fine-tune it, quantize and convert it, "
        "check the .tflite against Keras, time it here with the device profiler's protocol and compare with the "
        "latency table. Writes MODEL.tflite, MODEL.keras and MODEL.report.json (atomically, at the end)."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--widths", required=True, help="widths.json from `python -m tfwidth.solve`")
    p.add_argument("--run", required=True, help="run directory: the supernet's (--init supernet); export "
                   "checkpoints go to RUN/export/")
    p.add_argument("--dataset", required=True, help="digits, npz:PATH, folder:PATH or tfds:NAME")
    p.add_argument("-o", "--output", required=True, type=output_file, help="the .tflite to write")
    p.add_argument("--init", default="supernet", help="supernet: sliced supernet weights + BN re-estimation, then "
                   "fine-tune (cheap); scratch: random init, train --epochs (the paper's protocol)")
    p.add_argument("--epochs", type=count(0, 10**5), default=1, help="training epochs after initialisation (0: none)")
    p.add_argument("--format", default="fp32", help=f"one of {', '.join(FORMATS)}")
    p.add_argument("--io", default="float", help="I/O type of int8/qat models: float (as the profiled int8 "
                   "template; same input as every format) or int8 (integer end to end, for integer-only "
                   "accelerators)")
    p.add_argument("--latency", help="table.json from `python -m tfwidth.latency fit`, to compare latency with")
    p.add_argument("--keras-out", type=output_file, help="where to save the Keras model (default: OUTPUT with .keras)")
    p.add_argument("--report", type=output_file, help="where to write the report (default: OUTPUT stem + .report.json)")
    t = p.add_argument_group("training (as tfwidth.train)")
    t.add_argument("--batch-size", type=count(1, 1 << 20), default=64)
    t.add_argument("--lr", type=number(0, 100, lo_open=True), default=None, help="peak learning rate (default: 0.01 for --init "
                   "supernet, 0.05 for scratch, x batch/64)")
    t.add_argument("--warmup-epochs", type=number(0, 10**5), default=None, help="linear warm-up (default: 0 for supernet, "
                   "min(1, epochs/10) for scratch)")
    t.add_argument("--label-smoothing", type=number(0, 1, hi_open=True), default=0.1)
    t.add_argument("--weight-decay", type=number(0, 1), default=4e-5)
    t.add_argument("--distill", action="store_true", help="also distil from the supernet's max network")
    t.add_argument("--distill-weight", type=number(0, 1), default=0.5)
    t.add_argument("--temperature", type=number(0, 1000, lo_open=True), default=4.0)
    t.add_argument("--qat-epochs", type=count(0, 10**5), default=1, help="quantization-aware fine-tuning epochs (--format qat)")
    t.add_argument("--calib-batches", type=count(0, 10**6), default=20, help="batches to re-estimate BN after slicing")
    t.add_argument("--resume", action="store_true", help="continue the export training of an interrupted run "
                   "(its checkpoints are in RUN/export/)")
    t.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default",
                   help="tf.distribute strategy, as tfwidth.train; multiworker reads TF_CONFIG")
    t.add_argument("--mixed-precision", action="store_true", help="fine-tune in 16 bits with float32 weights, as "
                   "tfwidth.train (mixed_float16 with loss scaling on a GPU, mixed_bfloat16 on CPUs); the exported "
                   "model is float32 either way")
    t.add_argument("--tensorboard", type=output_dir, help="write TensorBoard scalars to this directory")
    t.add_argument("--seed", type=count(0), default=0)
    t.add_argument("--train-limit", type=count(1), help="use only the first N training images")
    t.add_argument("--eval-limit", type=count(1), help="evaluate on the first N evaluation images")
    t.add_argument("--no-progress", action="store_true")
    q = p.add_argument_group("quantization and timing")
    q.add_argument("--representative", type=count(0, 10**6), default=200, help="training images to calibrate int8 with")
    q.add_argument("--threads", type=count(1, 1024), help="interpreter threads when timing (default: the table's, else 1)")
    q.add_argument("--runs", type=count(1, 10**6), default=20, help="timed invokes per interpreter (the profiler's default)")
    q.add_argument("--warmup", type=count(0, 10**6), default=2, help="untimed invokes first (the profiler's default)")
    q.add_argument("--repeats", type=count(1, 1000), default=5, help="fresh interpreters; the median of their minima is "
                   "reported")
    q.add_argument("--cpus", default="0", type=cpu_list, help="cores to pin the timing to, as the profiler's --cpus (e.g. 0), or "
                   "none; use the table's setting")
    q.add_argument("--no-measure", action="store_true", help="skip timing (e.g. on a loaded build machine)")
    return p


@dataclasses.dataclass
class ExportReport:
    """What ``export_model`` did: the report (report.json's document: widths, training, Keras and .tflite top-1,
    agreement, the latency section, sizes) and the paths it wrote: the .tflite, the plain .keras model and the
    report. On a worker of a multi-worker strategy that is not the chief nothing is converted or written:
    ``report`` is None and ``worker`` its task id."""
    report: dict | None
    tflite: Path
    keras: Path
    report_path: Path
    worker: int | None = None

    @property
    def latency(self) -> dict | None:
        return None if self.report is None else self.report["latency"]

    @property
    def tflite_top1(self) -> float | None:
        return None if self.report is None else self.report["tflite"]["top1"]

    @property
    def keras_top1(self) -> float | None:
        return None if self.report is None else self.report["keras"]["top1"]


def export_model(widths, run_dir, dataset: str, output, *, init: str = "supernet", epochs: int = 1,
                 fmt: str = "fp32", io: str = "float", latency=None, keras_out=None, report=None,
                 batch_size: int = 64, lr: float | None = None, warmup_epochs: float | None = None,
                 label_smoothing: float = 0.1, weight_decay: float = 4e-5, distill: bool = False,
                 distill_weight: float = 0.5, temperature: float = 4.0, qat_epochs: int = 1,
                 calib_batches: int = 20, resume: bool = False, strategy: str = "default",
                 tensorboard: str | None = None, seed: int = 0, train_limit: int | None = None,
                 eval_limit: int | None = None, progress: bool = True, representative: int = 200,
                 threads: int | None = None, runs: int = 20, warmup: int = 2, repeats: int = 5, cpus=(0,),
                 measure: bool = True, mixed_precision: bool = False) -> ExportReport:
    """The export stage: the widths of the widths.json at ``widths`` as a deployable ``output`` .tflite. Rebuilds the
    plain model, initialises and trains it on ``dataset`` (a tfwidth.data spec) with ``fine_tune``'s recipe (the
    supernet of ``run_dir`` for init supernet; checkpoints in RUN_DIR/export/, continued with ``resume``; on the
    tf.distribute ``strategy`` of tfwidth.training.make_strategy), converts it to ``fmt`` (``io``: int8 in and out
    for integer formats; ``representative`` training images calibrate int8), checks the .tflite against Keras on the
    evaluation images, times it here with the profiler's protocol (``threads``, default the table's; ``runs``,
    ``warmup``, ``repeats``, pinned to ``cpus``; not with ``measure`` False) and compares with the latency table at
    ``latency``; ``mixed_precision``: fine-tune in 16 bits (tfwidth.training.mixed_policy). Writes ``output``, the
    plain model (``keras_out``, default OUTPUT with .keras) and the report
    (``report``, default OUTPUT stem + .report.json) last and atomically, the report last of all. Returns them
    (ExportReport)."""
    check_format(fmt)
    if init not in ("supernet", "scratch"):
        raise UsageError(f"unknown --init {init!r}; use supernet or scratch")
    if io not in IO_TYPES:
        raise UsageError(f"unknown --io {io!r}; use float or int8")
    for name, v in (("epochs", epochs), ("qat_epochs", qat_epochs), ("calib_batches", calib_batches)):
        if v < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {v}")
    if batch_size < 1 or runs < 1 or (threads is not None and threads < 1) or repeats < 1 or warmup < 0:
        raise UsageError("--batch-size, --runs, --repeats and --threads must be >= 1 and --warmup >= 0")
    if fmt == "int8" and representative < 1:
        raise UsageError("--format int8 needs --representative N >= 1 training images to calibrate with")
    if not 0 <= label_smoothing < 1 or not 0 <= distill_weight <= 1 or temperature <= 0:
        raise UsageError("--label-smoothing must be in [0, 1), --distill-weight in [0, 1], --temperature > 0")
    if Path(output).suffix != ".tflite":
        raise UsageError(f"output {output} should end in .tflite")
    if keras_out and Path(keras_out).suffix != ".keras":
        raise UsageError(f"--keras-out {keras_out} should end in .keras (tf_keras picks the format by suffix)")
    space, ws, wdoc = load_widths(widths)
    run_dir = Path(run_dir)
    rdoc, rfile = run_space(run_dir) if run_dir.is_dir() else (None, None)
    if rdoc is not None:
        check_space(wdoc, SearchSpace.from_dict(rdoc["space"]) if isinstance(rdoc.get("space"), dict)
                    else _HashOnly(rdoc["space_hash"]), f"widths file {widths} (run {rfile})")
    if init == "supernet" and not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} does not exist; pass the --run of `python -m tfwidth.train`, "
                         f"or use --init scratch")
    table = load_latency_table(latency, space) if latency else None
    work = export_work_dir(run_dir, init, ws)
    if resume:
        # The first stage that trains must have a checkpoint; a later stage (QAT) not yet begun starts fresh.
        first = work / ("train" if epochs > 0 else "qat")
        if epochs + (qat_epochs if fmt == "qat" else 0) == 0:
            raise UsageError("--resume with no training to resume (--epochs 0); drop --resume")
        if not (first / "checkpoint.json").is_file():
            raise UsageError(f"--resume: no checkpoint in {first}; drop --resume to start fresh")
    from tfwidth.training import is_chief, make_strategy, mixed_policy
    strategy_name, strategy = strategy, make_strategy(strategy)
    precision = mixed_policy() if mixed_precision else None
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise UsageError(f"batch size {batch_size} does not split evenly over the {replicas} devices of the "
                         f"strategy; use a --batch-size multiple of {replicas}")
    threads = threads or (getattr(table, "threads", None) if table is not None else None) or 1
    output = Path(output)
    keras_out = Path(keras_out) if keras_out else default_paths(output)[0]
    report_out = Path(report) if report else default_paths(output)[1]

    from tfwidth.data import load_data
    data = load_data(dataset, space, batch_size, seed=seed, train_limit=train_limit, eval_limit=eval_limit)
    print(data.describe())
    sig = {"widths": list(ws), "init": init, "dataset": dataset, "space_hash": space.space_hash,
           "seed": seed, "batch_size": batch_size, "train_limit": train_limit}
    tuned = fine_tune(space, ws, data, init=init, run_dir=run_dir, epochs=epochs, fmt=fmt, lr=lr,
                      warmup_epochs=warmup_epochs, label_smoothing=label_smoothing, weight_decay=weight_decay,
                      distill=distill, distill_weight=distill_weight, temperature=temperature, qat_epochs=qat_epochs,
                      calib_batches=calib_batches, seed=seed, checkpoints=work, signature=sig, resume=resume,
                      strategy=strategy, tensorboard=tensorboard, progress=progress, precision=precision)
    if not is_chief(strategy):
        return ExportReport(None, output, keras_out, report_out, worker=strategy.cluster_resolver.task_id)
    float_model, deployed = tuned.model, tuned.deployed

    xe, ye = data.eval_arrays()
    rep = data.representative(representative) if fmt == "int8" else None
    print(f"converting to {fmt} ...")
    content = convert(deployed, fmt, representative=rep, io=io)
    lite = LiteModel(content, fmt)
    ref = keras_logits(deployed, xe)
    got = lite.predict(xe)
    agree = agreement(ref, got)
    tol = tolerance(fmt)
    agree.update(reference=f"keras {'qat (fake-quant)' if fmt == 'qat' else 'float'} model",
                 tolerance=tol, within_tolerance=within(agree, tol))
    if fmt in INTEGER_FORMATS:
        agree["float_keras_top1_agreement"] = agreement(keras_logits(float_model, xe), got)["top1_agreement"] \
            if deployed is not float_model else agree["top1_agreement"]

    measured = {"status": "skipped", "error": "--no-measure"} if not measure else \
        measure_latency(content, threads=threads, runs=runs, warmup=warmup, repeats=repeats, cpus=cpus)
    lat = latency_section(measured, table, latency, fmt, ws, wdoc.get("target_ms"))

    doc = {
        "kind": "export_report", "space_hash": space.space_hash, "space": space.to_json(),
        "widths": list(ws), "widths_file": str(widths), "method": wdoc.get("method"),
        "init": init, "epochs": epochs, "qat_epochs": qat_epochs if fmt == "qat" else 0,
        "distill": bool(distill), "format": fmt, "io": io if fmt in INTEGER_FORMATS else "float",
        "dataset": dataset, "eval_images": int(len(ye)),
        "keras": {"top1": top1(ref, ye), "float_top1": top1(keras_logits(float_model, xe), ye)
                  if deployed is not float_model else top1(ref, ye),
                  "model": "qat" if fmt == "qat" else "float", "params": int(float_model.count_params())},
        "tflite": {"top1": top1(got, ye), "runtime": lite.runtime, "runtime_version": lite.runtime_version,
                   "input_dtype": lite.input_dtype, "output_dtype": lite.output_dtype,
                   "input_quantization": lite.input_quantization},
        "agreement": agree, "latency": lat,
        "size_bytes": len(content), "params": space.params(ws), "macs": space.macs(ws),
        "max_params": space.params(space.max_widths),
        "training": {"lr": tuned.lr, "warmup_epochs": tuned.warmup_epochs, "batch_size": batch_size,
                     "strategy": strategy_name, "replicas": replicas, "precision": precision or "float32",
                     "label_smoothing": label_smoothing, "weight_decay": weight_decay,
                     "bn_recalibrated_batches": tuned.recalibrated, "history": tuned.history,
                     "qat_history": tuned.qat_history},
        "outputs": {"tflite": str(output), "keras": str(keras_out), "report": str(report_out)},
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    # Written last, as a set: all to temporaries, then renamed into place, the report last of all, so its presence
    # means the export completed and the .keras and .tflite beside it are the ones it describes.
    write_set([(keras_out, keras_bytes(float_model)), (output, content), (report_out, json_bytes(doc))])
    return ExportReport(doc, output, keras_out, report_out)


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    r = export_model(a.widths, a.run, a.dataset, a.output, init=a.init, epochs=a.epochs, fmt=a.format, io=a.io,
                     latency=a.latency, keras_out=a.keras_out, report=a.report, batch_size=a.batch_size, lr=a.lr,
                     warmup_epochs=a.warmup_epochs, label_smoothing=a.label_smoothing, weight_decay=a.weight_decay,
                     distill=a.distill, distill_weight=a.distill_weight, temperature=a.temperature,
                     qat_epochs=a.qat_epochs, calib_batches=a.calib_batches, resume=a.resume, strategy=a.strategy,
                     tensorboard=a.tensorboard, seed=a.seed, train_limit=a.train_limit, eval_limit=a.eval_limit,
                     progress=not a.no_progress, representative=a.representative, threads=a.threads, runs=a.runs,
                     warmup=a.warmup, repeats=a.repeats, cpus=cores(a.cpus), measure=not a.no_measure,
                     mixed_precision=a.mixed_precision)
    if r.report is None:
        print(f"worker {r.worker}: training done; the chief converts and writes the outputs")
        return 0
    print(format_report(r.report))
    print(console.wrote([r.tflite, r.keras, r.report_path], time.perf_counter() - t0))
    return 0


class _HashOnly:
    """A space known only by its hash (a run file that stamps space_hash but embeds no space)."""
    def __init__(self, h):
        self.space_hash, self.name = h, "of the run"


if __name__ == "__main__":
    sys.exit(run_cli(main))
