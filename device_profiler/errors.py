"""The device's copy of tfwidth.errors: device_profiler must never import tfwidth (nor, through it, TensorFlow)."""
from __future__ import annotations

import sys


class UsageError(Exception):
    """Bad input the user can fix. The message is the whole story: what is wrong and what to do."""


def run_cli(main, argv=None) -> int:
    try:
        return int(main(argv) or 0)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
