"""What every CLI shows on the console (device_profiler's and tfwidth's): quiet by default, a progress bar with an ETA
for long loops, and the switch that shows everything.

The one copy of these mechanisms: device_profiler must never import tfwidth, so they live here (stdlib only; tqdm
when installed) and tfwidth uses them from here, as it does device_profiler.errors.

    verbose()                  # --verbose given (run_cli) or TFWIDTH_VERBOSE=1
    quiet_tensorflow()         # TensorFlow's and absl's start-up messages hidden unless verbose (tfwidth/__init__.py)
    with quiet_stderr(): ...   # the C++ libraries' messages on file descriptor 2 hidden unless verbose
    bar = Progress(total, "profiling", unit="cfg"); bar.update(); bar.close()
    for x in progress(items, "probe"): ...
    print(wrote(["table.json"], seconds))      # every CLI's closing line: what it wrote, sizes, time taken
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import time

VERBOSE_FLAG = "--verbose"
VERBOSE_HELP = "show the start-up and diagnostic messages of TensorFlow, absl and LiteRT (hidden by default)"
_ENV = "TFWIDTH_VERBOSE"


def verbose() -> bool:
    """Whether the libraries' own messages are shown: --verbose (run_cli sets TFWIDTH_VERBOSE) or TFWIDTH_VERBOSE=1."""
    return os.environ.get(_ENV, "") not in ("", "0")


def set_verbose(on: bool) -> None:
    # through the environment, so that a stage run in another process (a test, a shell script) inherits it
    os.environ[_ENV] = "1" if on else "0"


@contextlib.contextmanager
def quiet_stderr():
    """Send file descriptor 2 to /dev/null inside the block (unless verbose): what C++ libraries print there (absl's
    "All log messages before absl::InitializeLog()", cudart's "Could not find cuda drivers", LiteRT's "Created
    TensorFlow Lite XNNPACK delegate") bypasses Python's sys.stderr and every log level. Python exceptions still
    propagate; sys.stderr is flushed first so nothing written before the block is lost."""
    if verbose():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no file descriptor 2 (an embedded interpreter): nothing to hide
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# Modules whose import prints to file descriptor 2: TensorFlow (absl's pre-init warning, cudart's notices, twice) and
# what imports it first
_NOISY = ("tensorflow", "tf_keras")


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of TensorFlow's top-level package so its import runs inside
    quiet_stderr, then lowers TensorFlow's and absl's Python loggers to errors (unless verbose)."""

    def find_spec(self, name, path, target=None):
        if name not in _NOISY or any(m in sys.modules for m in _NOISY):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader

        class Quiet(importlib.abc.Loader):
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                if not verbose():
                    # read by TensorFlow's C++ logging on its first message, so set now that --verbose is known;
                    # 3: errors too ("failed call to cuInit" is one), unless the user chose a level
                    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
                with quiet_stderr():
                    loader.exec_module(module)
                if not verbose():
                    _quiet_python_logs()

        spec.loader = Quiet()
        return spec


def _quiet_python_logs() -> None:
    # "WARNING:tensorflow:Callback method `on_train_batch_end` is slow ..." and its kind: advice for TensorFlow's
    # developers, not for ours
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    absl = sys.modules.get("absl.logging")
    if absl is not None:
        absl.set_verbosity(absl.ERROR)


def quiet_tensorflow() -> None:
    """Hide TensorFlow's start-up messages unless verbose, whoever imports it and whenever: its C++ logging
    (TF_CPP_MIN_LOG_LEVEL=3 unless the user set it: "failed call to cuInit" is an error), what its import prints on
    file descriptor 2, and its Python warnings. Decided when TensorFlow is imported, so --verbose parsed after this
    call still counts. Call before TensorFlow is imported; idempotent."""
    if not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


# ---- progress -------------------------------------------------------------------------------------------------------
LINE_EVERY = 60.0  # seconds between progress lines when the output is not a terminal


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """A progress bar with an ETA on a terminal (tqdm, when installed), and when the output is not a terminal (a log
    file, a pipe, CI) one line every ``every`` seconds (LINE_EVERY: one a minute) with the count, rate and ETA, never
    the carriage-return redraws a bar leaves in a file. Writes to ``file`` (sys.stderr). ``enabled`` False: silent.

    update(n) after each item; postfix(**values) adds values (a loss) to the bar and the lines; write(text) prints a
    line of results without breaking the bar; close() at the end.
    """

    def __init__(self, total: int | None, desc: str, *, unit: str = "it", enabled: bool = True, file=None,
                 every: float | None = None, tty: bool | None = None):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.file = file if file is not None else sys.stderr
        self.every = LINE_EVERY if every is None else float(every)
        self.n, self.start, self.shown, self.values = 0, time.time(), time.time(), {}
        self.bar = None
        if tty is None:
            tty = bool(getattr(self.file, "isatty", lambda: False)())
        if enabled and tty:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=desc, unit=unit, file=self.file, leave=False, dynamic_ncols=True)
            except ImportError:  # the device may have no tqdm: lines then, as in a file
                pass

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.time()
        if now - self.shown >= self.every:
            self.shown = now
            print(self.line(now), file=self.file, flush=True)

    def postfix(self, **values) -> None:
        self.values.update(values)
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)

    def write(self, text: str) -> None:
        """Print ``text`` on stdout as a line of its own, above the bar on a terminal (the bar stays whole)."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stdout)
            sys.stdout.flush()
        else:
            print(text, flush=True)

    def line(self, now: float | None = None) -> str:
        """The not-a-terminal line: "DESC: N/TOTAL UNIT, RATE UNIT/s, ETA M:SS" (and the postfix values)."""
        elapsed = max((now or time.time()) - self.start, 1e-9)
        rate = self.n / elapsed
        text = f"{self.desc}: {self.n}" + (f"/{self.total}" if self.total else "") + f" {self.unit}"
        text += f", {rate:.3g} {self.unit}/s, elapsed {_clock(elapsed)}"
        if self.total and rate > 0:
            text += f", ETA {_clock(max(self.total - self.n, 0) / rate)}"
        if self.values:
            text += ", " + ", ".join(f"{k} {v}" for k, v in self.values.items())
        return text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(items, desc: str, *, total: int | None = None, unit: str = "it", enabled: bool = True):
    """Iterate over ``items`` with a Progress (``total``: len(items) when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    with Progress(total, desc, unit=unit, enabled=enabled) as bar:
        for x in items:
            yield x
            bar.update()


def took(seconds: float) -> str:
    """A duration for the closing line of a stage: "0.4 s", "12.3 s", "3 min 05 s"."""
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def wrote(paths, seconds: float, *, base=None, name: str | None = None) -> str:
    """The closing line of a stage or CLI: "[name] wrote a.json (12 KiB), b/ in 3.1 s". ``paths``: files (shown with
    their sizes; ones that do not exist are left out) or directories (shown with a trailing /), relative to ``base``
    when under it."""
    from pathlib import Path

    shown = []
    for o in map(Path, paths):
        rel = o
        if base is not None:
            try:
                rel = o.relative_to(base)
            except ValueError:
                pass
        if o.is_file():
            size = o.stat().st_size
            shown.append(f"{rel} ({size / 1024:.0f} KiB)" if size >= 1024 else f"{rel} ({size} B)")
        elif o.is_dir():
            shown.append(f"{rel}/")
    return f"{'[' + name + '] ' if name else ''}wrote {', '.join(shown) or 'nothing'} in {took(seconds)}"
