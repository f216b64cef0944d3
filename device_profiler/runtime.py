"""Which TFLite runtime to time with, chosen at run time: the device has whichever one installs there.

Order: ai_edge_litert (LiteRT, x86_64/aarch64), tflite_runtime (32-bit armv7l Pi OS), tensorflow.lite (only if it
is already installed; it is never required).
"""
from __future__ import annotations

import dataclasses
import importlib

from device_profiler import console
from device_profiler.errors import UsageError

# (name in samples.jsonl, module holding Interpreter, distribution whose version is recorded)
RUNTIMES = (("ai_edge_litert", "ai_edge_litert.interpreter", "ai-edge-litert"),
            ("tflite_runtime", "tflite_runtime.interpreter", "tflite-runtime"),
            ("tensorflow.lite", "tensorflow.lite", "tensorflow"))


# Which kernels the interpreter runs: "default" (the runtime's default delegates: XNNPACK on CPU for float and
# int8) or "builtin" (the op resolver without default delegates: TFLite's own reference-optimised kernels, what a
# runtime built without XNNPACK runs). Samples record it; tables of different kernels are different devices.
KERNELS = ("default", "builtin")


@dataclasses.dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    interpreter_class: type
    kernels: str = "default"
    resolver: object = None  # the OpResolverType value passed to the interpreter (None: its default)

    def interpreter(self, model: bytes, threads: int):
        kw = {} if self.resolver is None else {"experimental_op_resolver_type": self.resolver}
        it = self.interpreter_class(model_content=model, num_threads=threads, **kw)
        it.allocate_tensors()
        return it


_QUIET = {}


def _quiet_class(cls: type) -> type:
    """``cls`` whose allocate_tensors runs inside console.quiet_stderr: LiteRT prints "INFO: Created TensorFlow Lite
    XNNPACK delegate for CPU." on file descriptor 2 the first time it applies its default delegate, below any log
    level a user can set. Errors still reach the caller as exceptions (the runtime's error reporter)."""
    if cls not in _QUIET:
        class Quiet(cls):
            def allocate_tensors(self):
                with console.quiet_stderr():
                    return super().allocate_tensors()

        Quiet.__name__ = Quiet.__qualname__ = cls.__name__
        _QUIET[cls] = Quiet
    return _QUIET[cls]


def _version(dist: str, module) -> str:
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001  (metadata missing on a copied-in install: fall back to the module's own)
        return str(getattr(module, "__version__", "unknown"))


def select(name: str | None = None, kernels: str = "default") -> Runtime:
    """The first importable runtime (or the one named), with ``kernels`` (KERNELS); a UsageError naming what to
    install when there is none, or when its interpreter cannot choose its op resolver."""
    if kernels not in KERNELS:
        raise UsageError(f"unknown kernels {kernels!r}; choose one of {', '.join(KERNELS)}")
    candidates = [r for r in RUNTIMES if name in (None, r[0])]
    if not candidates:
        raise UsageError(f"unknown runtime {name!r}; choose one of {', '.join(r[0] for r in RUNTIMES)}")
    tried = []
    for rname, module, dist in candidates:
        try:
            mod = importlib.import_module(module)
            cls = getattr(mod, "Interpreter")
        except Exception as e:  # noqa: BLE001  (a broken install is as absent as a missing one)
            tried.append(f"{rname}: {type(e).__name__}")
            continue
        top = importlib.import_module(module.split(".")[0])
        resolver = None
        if kernels == "builtin":
            kinds = getattr(mod, "OpResolverType", None)
            resolver = getattr(kinds, "BUILTIN_WITHOUT_DEFAULT_DELEGATES", None)
            if resolver is None:
                raise UsageError(f"{rname} {_version(dist, top)} cannot run without its default delegates (no "
                                 f"OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES); use --kernels default or a "
                                 f"newer runtime")
        return Runtime(rname, _version(dist, top), _quiet_class(cls), kernels, resolver)
    raise UsageError(f"no TFLite runtime importable ({'; '.join(tried)}); install one: `pip install ai-edge-litert` "
                     f"(x86_64/aarch64) or `pip install tflite-runtime` (armv7l)")
