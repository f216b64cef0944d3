"""One way to fail in front of a user: a single line naming the problem and the fix, exit code 2, no traceback.

The mechanism itself (run_cli, ArgumentParser) is device_profiler.errors', the one copy: device_profiler must never
import tfwidth, while importing it from here is cheap (stdlib only). tfwidth's UsageError derives from the device's,
so run_cli reports both, e.g. a profiler error raised inside the pipeline, as one line.
"""
from __future__ import annotations

from device_profiler import errors as _device
from device_profiler.errors import DEBUG_HINT, ArgumentParser, invoked_as, run_cli  # noqa: F401 - re-exported for the CLIs


class UsageError(_device.UsageError):
    """Bad input the user can fix. The message is the whole story: what is wrong and what to do."""


class SpaceMismatch(UsageError):
    pass
