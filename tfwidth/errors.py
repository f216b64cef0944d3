"""One way to fail in front of a user: a single line naming the problem and the fix, exit code 2, no traceback."""
from __future__ import annotations

import sys


class UsageError(Exception):
    """Bad input the user can fix. The message is the whole story: what is wrong and what to do."""


class SpaceMismatch(UsageError):
    pass


def run_cli(main, argv=None) -> int:
    try:
        return int(main(argv) or 0)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
