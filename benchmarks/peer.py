"""The peer a user would pick instead: llama.cpp's own `llama-server`, built from the llama.cpp tree vendored in the
pinned llama-cpp-python sdist (so both sides run the same llama.cpp), cached outside the clone.

`ensure_llama_server()` returns the binary, building it the first time (about 12 minutes on 2 cores):
pip downloads the sdist, cmake builds the `llama-server` target. `LLAMA_SERVER=/path/to/llama-server` skips that.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("ALLINONE_PEER_DIR", Path.home() / ".cache" / "allinone" / "peer"))


def pinned_version() -> str:
    found = re.search(r'"llama-cpp-python==([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    if not found:
        raise SystemExit("pyproject.toml does not pin llama-cpp-python")
    return found.group(1)


def ensure_llama_server() -> Path:
    given = os.environ.get("LLAMA_SERVER")
    if given:
        return Path(given)
    version = pinned_version()
    tree = CACHE / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    binary = tree / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    sdist = CACHE / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.exists():
        pip = [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-deps"]
        subprocess.run([*pip, "--no-binary", ":all:", "-d", str(CACHE)], check=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(CACHE, filter="data")
    flags = ["-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DCMAKE_BUILD_TYPE=Release"]
    subprocess.run(["cmake", "-B", "build", *flags], cwd=tree, check=True)
    jobs = str(os.cpu_count() or 2)
    subprocess.run(["cmake", "--build", "build", "--target", "llama-server", "-j", jobs], cwd=tree, check=True)
    return binary


if __name__ == "__main__":
    print(ensure_llama_server())
