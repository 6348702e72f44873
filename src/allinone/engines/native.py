"""Small C helpers, built with the system C compiler on first use and cached by their source's hash.

llama-cpp-python itself is built from source, so a compiler is normally there; where none is, `load` returns None
and the caller keeps its pure-Python path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["load"]

log = logging.getLogger(__name__)
COMPILE_TIMEOUT_S = 60


def load(name: str, source: str, cache: Path) -> ctypes.CDLL | None:
    """The shared library built from C `source` (cached under `cache`), or None when it cannot be built or loaded."""
    lib = cache / f"{name}-{hashlib.sha256(source.encode()).hexdigest()[:16]}.so"
    if not lib.exists() and not _build(name, source, lib):
        return None
    try:
        return ctypes.CDLL(str(lib))
    except OSError as e:
        log.warning("could not load %s (%s); using the Python path", lib, e)
        return None


def _build(name: str, source: str, lib: Path) -> bool:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        log.info("no C compiler for the %s helper; using the Python path", name)
        return False
    try:
        lib.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
            src, out = Path(tmp) / f"{name}.c", Path(tmp) / f"{name}.so"
            src.write_text(source)
            done = subprocess.run(
                [cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(src)],
                capture_output=True,
                text=True,
                timeout=COMPILE_TIMEOUT_S,
            )
            if done.returncode != 0:
                log.warning("building the %s helper failed; using the Python path: %s", name, done.stderr[-500:])
                return False
            os.replace(out, lib)  # atomic: another process building the same file at once is harmless
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("building the %s helper failed; using the Python path: %s", name, e)
        return False
    return True
