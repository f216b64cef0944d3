"""The `tfwidth` command: one subcommand per stage, each the stage's own CLI (`tfwidth solve ...` is
`python -m tfwidth.solve ...`: the same parser, the same main), so both forms keep working and neither has a copy.

    tfwidth pipeline                 # the whole flow on the offline default (tools/quickstart.sh)
    tfwidth solve --stats run/stats.json --latency table.json --target-ms 3 -o widths.json
    tfwidth report work              # work/report.html from any pipeline work directory
    tfwidth --version                # tfwidth's, TensorFlow's and LiteRT's versions (without loading TensorFlow)
    python -m tfwidth ...            # the same, without the entry point on PATH

Only the subcommand's module is imported, when it runs: `tfwidth --help` and `--version` load no TensorFlow.
"""
from __future__ import annotations

import sys

import tfwidth
from tfwidth.errors import invoked_as, run_cli

# subcommand -> (module whose main(argv) it runs, what it does), in the order the data flows
COMMANDS = {
    "space": ("tfwidth.space", "make or list search spaces (space.json)"),
    "data": ("tfwidth.data", "check that a dataset loads for a space"),
    "profile": ("tfwidth.profile", "the .tflite template and the plans of configurations to time"),
    "latency": ("tfwidth.latency", "fit the latency table from the device's timings (or validate one)"),
    "train": ("tfwidth.train", "train the slimmable supernet and probe its width costs"),
    "probe": ("tfwidth.probe", "probe the width costs of a trained supernet"),
    "refine": ("tfwidth.refine", "time the solver's answers here and refit the latency table"),
    "solve": ("tfwidth.solve", "choose the widths for a latency target (or sweep targets: --pareto)"),
    "export": ("tfwidth.export", "build, fine-tune, convert and measure the model at the solved widths"),
    "pipeline": ("tfwidth.pipeline", "every stage in one work directory, this CPU as the device"),
    "report": ("tfwidth.report", "write WORK/report.html from a pipeline's work directory"),
}

# distribution name -> what --version calls it; LiteRT and tflite-runtime are alternatives (device_profiler.runtime)
LIBRARIES = (("tensorflow", "TensorFlow"), ("tf-keras", "tf_keras"), ("ai-edge-litert", "LiteRT"),
             ("tflite-runtime", "tflite-runtime"))


def versions() -> str:
    """tfwidth's version and those of the libraries it runs on, read from the installed packages' metadata (no
    import: TensorFlow takes seconds to load)."""
    from importlib.metadata import PackageNotFoundError, version
    found = []
    for dist, name in LIBRARIES:
        try:
            found.append(f"{name} {version(dist)}")
        except PackageNotFoundError:
            if dist != "tflite-runtime":  # the 32-bit Pi's runtime: its absence is the usual case
                found.append(f"{name} not installed")
    return f"tfwidth {tfwidth.__version__} (Python {sys.version.split()[0]})\n" + ", ".join(found)


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: tfwidth COMMAND [options]    (tfwidth COMMAND --help: its options)", "",
             "How many channels should each layer of a CNN have to be as accurate as possible within X ms on this "
             "device.", "", "commands, in the order the data flows:"]
    lines += [f"  {c:<{width}}  {what}" for c, (_, what) in COMMANDS.items()]
    lines += ["", "  --version  tfwidth's, TensorFlow's and LiteRT's versions",
              "  --verbose  (any command) show TensorFlow's, absl's and LiteRT's start-up messages",
              "  --debug    (any command) show the traceback of an unexpected error", "",
              "`tfwidth COMMAND ...` is `python -m tfwidth.COMMAND ...`; device side: tfwidth-device "
              "(python -m device_profiler, no TensorFlow)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run the subcommand ``argv[0]`` with the rest of ``argv``: its module's main, its parser naming itself
    "tfwidth COMMAND"."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(versions())
        return 0
    command = argv[0]
    if command not in COMMANDS:
        from tfwidth.errors import UsageError
        raise UsageError(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)} (tfwidth --help)")
    import importlib
    module = COMMANDS[command][0]
    invoked_as(f"python -m {module}", f"tfwidth {command}")
    return importlib.import_module(module).main(argv[1:])


def cli() -> int:
    """The `tfwidth` entry point: main through run_cli (one line and exit code 2 on bad input)."""
    return run_cli(main)


if __name__ == "__main__":
    sys.exit(cli())
