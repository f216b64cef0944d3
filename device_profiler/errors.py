"""One way to fail in front of a user: a single line naming the problem and the fix, exit code 2, no traceback.

The one copy of this mechanism: device_profiler must never import tfwidth (nor, through it, TensorFlow), so it lives
here and tfwidth.errors builds on it (tfwidth's UsageError derives from this one, and tfwidth's CLIs use this
run_cli), which also makes a device_profiler error raised inside the pipeline one line.
"""
from __future__ import annotations

import argparse
import os
import sys

from device_profiler import console

DEBUG_FLAG = "--debug"
DEBUG_HINT = f"add {DEBUG_FLAG} (or set TFWIDTH_DEBUG=1) to see the traceback of an unexpected error"

# How the command was invoked when a dispatcher (the `tfwidth` and `tfwidth-device` entry points) runs a module's
# main: its parsers then name themselves as the user typed them ("tfwidth solve", not "python -m tfwidth.solve")
_INVOKED_AS: dict[str, str] = {}


def invoked_as(module_prog: str, shown: str) -> None:
    """Make parsers whose prog is ``module_prog`` (e.g. "python -m tfwidth.solve") call themselves ``shown``."""
    _INVOKED_AS[module_prog] = shown


class UsageError(Exception):
    """Bad input the user can fix. The message is the whole story: what is wrong and what to do."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad command line is a UsageError (one line through run_cli) instead of usage + message."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("epilog", DEBUG_HINT)
        if kwargs.get("prog") in _INVOKED_AS:
            kwargs["prog"] = _INVOKED_AS[kwargs["prog"]]
        super().__init__(*args, **kwargs)
        # run_cli takes both out of the command line before main parses it; here they are listed in --help, and
        # accepted when main is called directly
        self.add_argument(console.VERBOSE_FLAG, action="store_true", help=console.VERBOSE_HELP)
        self.add_argument(DEBUG_FLAG, action="store_true", help="show the traceback of an unexpected error")

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


# Translators of exceptions that escape from deep inside a library (a TensorFlow graph, say) into the one line a user
# can act on, registered by the code that knows what they mean: fn(exc) -> message or None.
_EXPLAINERS = {}


def explain_with(key: str, fn) -> None:
    """Register ``fn(exc) -> str | None`` under ``key`` (replacing the previous one): run_cli shows its message
    instead of the catch-all when it has one."""
    _EXPLAINERS[key] = fn


def _explained(e: BaseException) -> str | None:
    for fn in list(_EXPLAINERS.values()):
        try:
            msg = fn(e)
        except Exception:  # noqa: BLE001 - an explainer must never hide the original error
            msg = None
        if msg:
            return msg
    return None


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def run_cli(main, argv=None) -> int:
    """Call ``main(argv)`` (argv None: sys.argv[1:]) and turn what escapes into one line on stderr and an exit code.

    UsageError -> "error: <message>", 2. Any other exception -> "error: <type>: <first line> (unexpected; ...)", 2:
    almost always an input nobody foresaw, so it gets the bad-input code too. KeyboardInterrupt -> 130. ``--debug``
    anywhere in argv (removed before main sees it) or TFWIDTH_DEBUG=1 re-raises instead, to show the traceback.
    ``--verbose`` anywhere (removed too) shows the libraries' start-up messages (device_profiler.console).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [str(a) for a in argv]
    debug = DEBUG_FLAG in argv or os.environ.get("TFWIDTH_DEBUG", "") not in ("", "0")
    if console.VERBOSE_FLAG in argv:
        console.set_verbose(True)
    argv = [a for a in argv if a not in (DEBUG_FLAG, console.VERBOSE_FLAG)]
    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except UsageError as e:
        if debug:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the CLI boundary: never a traceback unless asked for
        if debug:
            raise
        known = _explained(e)
        if known:
            print(f"error: {_one_line(known)}", file=sys.stderr)
            return 2
        what = _one_line(e)
        print(f"error: {type(e).__name__}{': ' + what if what else ''} (unexpected; rerun with {DEBUG_FLAG} "
              f"to see the traceback)", file=sys.stderr)
        return 2
