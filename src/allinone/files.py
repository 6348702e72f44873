"""Files only their owner may read: the session store, the request log and its database hold what people wrote."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["private_dir", "private_file"]


def private_dir(path: Path) -> None:
    """Create `path` and its missing parents with mode 0700; directories that exist are left as they are."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for p in reversed(missing):
        try:
            p.mkdir(mode=0o700)
        except FileExistsError:  # made meanwhile by another process
            continue
        p.chmod(0o700)  # mkdir's mode is reduced by the umask; this one is meant


def private_file(path: Path, tighten: bool = False) -> None:
    """Create `path` (and its directory) with mode 0600 unless it exists; with `tighten`, an existing regular
    file of ours gets mode 0600 too (SQLite gives its -wal and -shm files the database file's mode)."""
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        if tighten and path.is_file():
            path.chmod(0o600)
