"""A non-editable install works from any folder: the SQL files, presets, configs and samples ship in the wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from .conftest import REPO


def test_wheel_installs_and_runs_from_any_folder(tmp_path: Path) -> None:
    # built from a copy of the working tree: setuptools writes build/ into the folder it builds, and a stale one would ship old files
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", "lake", "models", "reports", "bench"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source), "-w", str(wheels)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("prefhouse-*.whl"))
    import zipfile

    shipped = {str(Path(n).parent) for n in zipfile.ZipFile(wheel).namelist() if n.endswith("__init__.py")}
    packages = {str(Path("prefhouse") / p.parent.relative_to(REPO)) for folder in ("pipelines", "training", "quality") for p in (REPO / folder).rglob("__init__.py")}
    assert packages <= shipped, f"packages missing from the wheel (pyproject's [tool.setuptools] packages): {sorted(packages - shipped)}"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # the dependencies are this interpreter's (not the project itself: its editable finder is not loaded from here)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = lambda *args: subprocess.run([str(venv / "bin" / "prefhouse"), *args], cwd=elsewhere, capture_output=True, text=True, timeout=300)  # noqa: E731
    curated = run("curate", "--sources", "shp", "--quiet")  # the bundled samples, from the installed package
    assert curated.returncode == 0, curated.stderr
    table1 = run("sql", "table1", "--format", "csv")  # a named query, from the installed package's SQL files
    assert table1.returncode == 0 and "shp," in table1.stdout, table1.stderr
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import prefhouse.pipelines.core.sql as s, prefhouse.pipelines.core.config as c; "
                            "print(s.__file__); print(c.preset_names())"], cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert str(site) in where.stdout and "['cpu', 'paper', 'paper-8gpu']" in where.stdout, where.stdout + where.stderr
    assert (elsewhere / "data" / "lake" / "pairs" / "_delta_log").is_dir()  # the lake is the working folder's, not the package's


def test_help_imports_nothing_heavy() -> None:
    """``--help`` of every job, ``prefhouse <job> --help`` and the job's own script alike, must be instant: it builds the
    job's parser and imports no data library (polars, pyarrow, DuckDB, deltalake, numpy, pandas), no Great
    Expectations, torch, transformers, TRL, vLLM or matplotlib (``pipelines/parsers.py``)."""
    from prefhouse.pipelines.cli import JOBS

    heavy = ("polars", "pyarrow", "duckdb", "deltalake", "numpy", "pandas", "great_expectations", "torch", "transformers", "trl", "vllm",
             "matplotlib", "datasets", "ray", "accelerate", "deepspeed")
    report = f"import atexit, sys; atexit.register(lambda: print('imported: ' + ','.join(m for m in {heavy!r} if m in sys.modules)))\n"
    via_cli = report + "from prefhouse.pipelines.cli import main\nmain([sys.argv[1], '--help'])\n"
    as_script = report + "import runpy\nsys.argv = [sys.argv[1], '--help']\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"
    for job, (module, _) in JOBS.items():
        script = REPO / (module.removeprefix("prefhouse.").replace(".", "/") + ".py")  # python pipelines/curate.py, …
        for command, code, arg in ((f"prefhouse {job} --help", via_cli, job), (f"python {script.relative_to(REPO)} --help", as_script, str(script))):
            proc = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, timeout=120, cwd=REPO)
            assert proc.returncode == 0 and "usage:" in proc.stdout, f"{command}: {proc.stderr[-2000:]}"
            assert proc.stdout.strip().splitlines()[-1] == "imported:", f"{command} {proc.stdout.strip().splitlines()[-1]}"
