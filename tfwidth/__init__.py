"""tfwidth: how many channels should each layer have to be as accurate as possible within X ms on this device.

The public API, in the order the data flows (docs/interfaces.md, "Python API", runs the whole flow with it):

    space          SearchSpace, preset, tiny_space, architectures, GraphCost
    device         make_template, write_template, make_plan, profile_plan (this machine as the device), measure_latency
    latency        load_samples, fit_table, LatencyTable
    supernet       load_data, train_supernet, probe_supernet, WidthStats
    solve          solve_widths (-> Solved of Answer), refine_table
    deploy         export_model (-> ExportReport)
    everything     run_pipeline (-> PipelineRun)

Names resolve on first use, so ``import tfwidth`` stays cheap and loads TensorFlow only when a stage needs it.
"""
import importlib
import os

from device_profiler import console as _console

# tensorflow-model-optimization works only with the Keras 2 API (tf_keras); make tf.keras resolve to it too, before
# anything imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# ... and whoever imports it, its start-up messages stay off the console unless --verbose (the one place they are
# silenced: device_profiler/console.py)
_console.quiet_tensorflow()

__version__ = "0.1.0"

# public name -> (module, attribute): the curated surface; everything else is internal and may move
_API = {
    "SearchSpace": ("tfwidth.space", "SearchSpace"),
    "preset": ("tfwidth.space", "preset"),
    "tiny_space": ("tfwidth.space", "tiny_space"),
    "GraphCost": ("tfwidth.cost", "GraphCost"),
    "architectures": ("tfwidth.arch", "names"),
    "make_template": ("tfwidth.profile", "make_template"),
    "write_template": ("tfwidth.profile", "write_template"),
    "make_plan": ("tfwidth.profile", "make_plan"),
    "profile_plan": ("tfwidth.host", "profile_plan"),
    "measure_latency": ("tfwidth.host", "measure_latency"),
    "load_samples": ("tfwidth.latency", "load_samples"),
    "fit_table": ("tfwidth.latency", "fit_table"),
    "LatencyTable": ("tfwidth.latency", "LatencyTable"),
    "load_data": ("tfwidth.data", "load_data"),
    "train_supernet": ("tfwidth.training", "train_supernet"),
    "probe_supernet": ("tfwidth.probe", "probe_supernet"),
    "WidthStats": ("tfwidth.stats", "WidthStats"),
    "solve_widths": ("tfwidth.solve", "solve_widths"),
    "refine_table": ("tfwidth.refine", "refine_table"),
    "export_model": ("tfwidth.export", "export_model"),
    "run_pipeline": ("tfwidth.pipeline", "run_pipeline"),
}
__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    try:
        module, attr = _API[name]
    except KeyError:
        raise AttributeError(f"module 'tfwidth' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # resolved once
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
