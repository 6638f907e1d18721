"""A full disk (ENOSPC) as one clear line: which folder, about how much room is needed, how much is free.

The writers report it in several ways (``OSError`` errno 28, safetensors' ``… os error 28``, torch's stream
writer); :func:`is_disk_full` knows them, :func:`disk_full_error` says it.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from humanfix.errors import UserError


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC (or EDQUOT) as the writers report it: OSError, safetensors' error, torch's stream writer."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return any(s in text for s in ("os error 28", "No space left", "Disk quota exceeded", "file write failed"))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def free_bytes(folder: Path) -> int:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def disk_full_error(folder: Path, needed: int, what: str, advice: str | None = None) -> UserError:
    """The one line for a full disk: the folder, the room needed, the room left, what to do."""
    need = f"about {human(needed)}" if needed else "more room"
    advice = advice or (
        "free some space (or lower --keep-checkpoints) and rerun the same command with --resume latest: "
        "nothing written before is lost"
    )
    return UserError(
        f"disk full writing {what} in {folder}: it needs {need}, {human(free_bytes(folder))} are free; {advice}"
    )
