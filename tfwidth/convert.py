"""Keras model -> .tflite bytes in one of four formats, and the checks that the .tflite computes what Keras does.

Formats:
  fp32  plain float model.
  fp16  float16 weights (half the size); LiteRT's CPU kernels dequantize them once at load and run in float32,
        so its latency is the fp32 model's.
  int8  full-integer post-training quantization calibrated on training images (representative dataset).
  qat   the same int8 model, from a quantization-aware-trained Keras model (tensorflow-model-optimization).

Integer formats keep float32 input and output by default (``io="float"``), with QUANTIZE/DEQUANTIZE at the edges:
the int8 latency table is profiled from `tfwidth.profile template --quantize int8`, which has float I/O, so the
exported model is the very graph the table timed (the edge ops cost one pass over the image and the logits); and the
app feeds every format the same normalised float tensor. ``io="int8"`` makes the graph integer end to end, for
integer-only accelerators (Edge TPU, NPUs, microcontrollers): the int8 input is then the uint8 pixel minus ~128
(scale 2/255, since images are normalised as x / 127.5 - 1). ``LiteModel`` hides the difference: it always takes
normalised float images and returns float logits.
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np

import tfwidth  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from device_profiler.runtime import select as select_runtime
from tfwidth.errors import UsageError

FORMATS = ("fp32", "fp16", "int8", "qat")
INTEGER_FORMATS = ("int8", "qat")
IO_TYPES = ("float", "int8")


def check_format(fmt: str) -> str:
    """``fmt`` if it is one of FORMATS, else a UsageError listing them."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def latency_format(fmt: str) -> str:
    """The profiled format whose latency table applies to a deployment format (fp16 weights run as fp32 on CPU)."""
    return "int8" if fmt in INTEGER_FORMATS else "fp32"


def quantize_for_training(model):
    """Wrap a plain Keras model with fake-quantization for QAT (BN folded, int8 per-channel, like the converter)."""
    import tensorflow_model_optimization as tfmot
    return tfmot.quantization.keras.quantize_model(model)


@contextlib.contextmanager
def _quiet():
    # The converter warns that input statistics are missing whenever int8 I/O is requested: they come from the
    # representative dataset (PTQ) or the fake-quant ranges (QAT), so the warning is noise for the user.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def randomise_statistics(model, seed: int = 0, bias_std: float = 0.2, kernel_scale: float = 1.0):
    """Give every BatchNorm of a tf_keras model non-trivial statistics and every Dense layer a random bias (and its
    kernel times ``kernel_scale``), in place; returns the model.

    A freshly built model has identity BatchNorm and zero biases, which the converter folds into identical or
    all-zero constants (merged into one buffer, or dropped): a template or a conversion test built from it would
    not exercise the per-channel slicing it is meant to check."""
    import tf_keras as keras
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.2, c),
                               rng.uniform(0.5, 1.5, c)])
        elif isinstance(layer, keras.layers.Dense) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel * kernel_scale, rng.normal(0, bias_std, bias.shape)])
    return model


def convert(model, fmt: str, representative: np.ndarray | None = None, io: str = "float") -> bytes:
    """Convert a tf_keras model. ``representative``: float images (N,H,W,C) for int8 calibration."""
    import tensorflow as tf
    check_format(fmt)
    if io not in IO_TYPES:
        raise UsageError(f"unknown I/O type {io!r}; choose int8 or float")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if fmt == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif fmt in INTEGER_FORMATS:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if fmt == "int8":
            if representative is None or len(representative) == 0:
                raise UsageError("int8 conversion needs representative training images; pass --representative N > 0")
            rep = np.asarray(representative, np.float32)
            conv.representative_dataset = lambda: ([x[None]] for x in rep)
            # Refuse float fallbacks: a model that silently keeps float ops is not the int8 model the table timed.
            # (QAT graphs carry their ranges in fake-quant ops; this setting would demand calibration data.)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io == "int8":
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
    with _quiet():
        return bytes(conv.convert())


def runtime() -> tuple[str, str]:
    """(name, version) of the interpreter used for verification: the one the device profiler times with
    (device_profiler.runtime.select: LiteRT, then tflite_runtime, then TensorFlow's), so a verified model and its
    timings share one runtime."""
    rt = select_runtime()
    return rt.name, rt.version


def _interpreter_class():
    return select_runtime().interpreter_class


class LiteModel:
    """A .tflite in the verification runtime: float images in, float logits out, whatever its I/O types."""

    def __init__(self, content: bytes, fmt: str = "?", batch: int = 32, threads: int | None = None):
        self.content = bytes(content)
        self.fmt = fmt
        self.batch = int(batch)
        self.runtime, self.runtime_version = runtime()
        Interpreter = _interpreter_class()
        try:
            self._it = Interpreter(model_content=self.content, num_threads=threads)
            self._it.allocate_tensors()
            self.input = self._it.get_input_details()[0]
            self.output = self._it.get_output_details()[0]
            self._size = 1
            self.run(np.zeros((1, *self.input["shape"][1:]), np.float32))
        except UsageError:
            raise
        except Exception as e:  # the runtime's own exceptions are untyped (RuntimeError/ValueError from C++)
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"the {fmt} .tflite does not run in {self.runtime} {self.runtime_version} ({msg}); "
                             f"choose another --format (fp32 runs everywhere) or update the runtime") from None

    @property
    def input_dtype(self) -> str:
        return np.dtype(self.input["dtype"]).name

    @property
    def output_dtype(self) -> str:
        return np.dtype(self.output["dtype"]).name

    @property
    def input_quantization(self):
        s, z = self.input["quantization"]
        return (float(s), int(z)) if s else None

    def _resize(self, n: int) -> None:
        if n != self._size:
            self._it.resize_tensor_input(self.input["index"], [n, *self.input["shape"][1:]])
            self._it.allocate_tensors()
            self._size = n

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.input["dtype"] != np.float32:
            s, z = self.input["quantization"]
            info = np.iinfo(self.input["dtype"])
            x = np.clip(np.round(x / s + z), info.min, info.max).astype(self.input["dtype"])
        self._resize(len(x))
        self._it.set_tensor(self.input["index"], x)
        self._it.invoke()
        y = self._it.get_tensor(self.output["index"])
        if self.output["dtype"] != np.float32:
            s, z = self.output["quantization"]
            y = (y.astype(np.float32) - z) * s
        return np.array(y, np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.run(x[i:i + self.batch]) for i in range(0, len(x), self.batch)])


def agreement(reference: np.ndarray, lite: np.ndarray) -> dict:
    """How closely the .tflite's logits follow the reference model's, on the same images."""
    reference, lite = np.asarray(reference, np.float64), np.asarray(lite, np.float64)
    return {"images": int(len(reference)),
            "max_abs_logit_diff": float(np.max(np.abs(reference - lite))) if len(reference) else 0.0,
            "top1_agreement": float(np.mean(reference.argmax(1) == lite.argmax(1))) if len(reference) else 1.0}


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose largest logit is the label (NaN without any row)."""
    return float(np.mean(np.asarray(logits).argmax(1) == np.asarray(labels))) if len(labels) else float("nan")


def keras_logits(model, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """The Keras ``model``'s logits on images ``x`` in inference mode, ``batch`` at a time: what a .tflite is
    compared with."""
    import tensorflow as tf
    # (float32 also from a mixed-precision model, whose outputs are 16-bit)
    return np.concatenate([tf.cast(model(x[i:i + batch], training=False), tf.float32).numpy()
                           for i in range(0, len(x), batch)]) \
        if len(x) else np.zeros((0, model.output_shape[-1]), np.float32)


def op_types(content: bytes) -> list[str]:
    """Builtin op names of the model's first subgraph, in execution order (for reports and tests)."""
    Interpreter = _interpreter_class()
    it = Interpreter(model_content=content)
    return [d["op_name"] for d in it._get_ops_details()]

