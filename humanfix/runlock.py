"""One run per output folder: a lock file that names its holder (PID, host, command, start time).

``train --output DIR`` and ``prepare-data --out DIR`` take ``DIR/.humanfix.lock`` for as long as they run. A
second run into the same folder stops at once with one line naming the first run's PID and host. A lock left
by a process that no longer exists on this host (a SIGKILL, a power cut) is taken over, with a warning; a lock
held from another host is never taken over (we cannot tell whether that process lives): the message says which
file to delete once that run is known to be gone.

The lock file is created with ``O_CREAT | O_EXCL`` (atomic on local file systems and on NFSv3+), so two runs
starting together cannot both win.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from humanfix.errors import UserError

log = logging.getLogger(__name__)

LOCK_FILE = ".humanfix.lock"


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _read(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


@contextlib.contextmanager
def hold(folder: str | Path, what: str) -> Iterator[Path]:
    """Hold ``folder``'s lock for the ``with`` block (``what``: the command, for the message); the folder is made.

    Raises :class:`UserError` when another live run holds it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": what,
        "argv": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            if holder is None:  # released between our two looks
                continue
            pid, host = holder.get("pid"), holder.get("host")
            if holder == {} or (isinstance(pid, int) and host == me["host"] and not _alive(pid)):
                log.warning(
                    "%s: taking over a stale lock (%s)", folder,
                    f"PID {pid} on {host} is gone" if holder else "unreadable lock file",
                )  # fmt: skip
                path.unlink(missing_ok=True)
                continue
            raise UserError(
                f"{folder} is in use by another humanfix {holder.get('command', 'run')} (PID {pid} on host {host}, "
                f"since {holder.get('started', '?')}): wait for it, or use another folder"
                + ("" if host == me["host"] else f"; if that run is gone, delete {path}")
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise UserError(f"{folder}: could not take the lock {path} (other runs keep taking it)")
    try:
        yield path
    finally:
        if (_read(path) or {}).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)
