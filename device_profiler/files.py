"""Files written whole or not at all: the one copy of the mechanism, here because device_profiler (which must
never import tfwidth) writes artefacts too; tfwidth.artifacts re-exports it. Stdlib only."""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` atomically (a temp file beside it, synced, renamed over it); the file gets the mode a
    plain open() would give it (0666 less the umask, or the directory's default ACL)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: it makes the file private (0600) and an artefact is meant to be copied to devices and shared.
    # Creating it with mode 0666 lets the kernel apply the umask, which is never changed here: the umask is
    # process-wide, and setting it even for a moment races with threads creating files (TF's, a writer's).
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"cannot create a temporary file beside {path}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
