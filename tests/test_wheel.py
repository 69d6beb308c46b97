"""The wheel a user installs runs (issue 11, packaging): build it, install it with --no-deps into a
fresh venv that borrows this venv's dependencies, and run the installed `handclust` from a folder
outside the checkout on two tiny clips.

A missing package-data file (the report's Jinja2 templates), a module left out of the package
list, or a broken console-script entry point fails here and nowhere else: every other test imports
handclust from the checkout. The wheel's metadata (extras, one faiss per install) is checked in
tests/test_packaging.py on the same wheel (conftest's built_wheel).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (--no-deps); the dependencies are this venv's, seen
    through a .pth line (a path line does not run the .pth files there, so this checkout's editable
    install stays invisible)."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "dev_venv_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(built_wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return env_dir


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "MPLBACKEND": "Agg"}


def test_installed_wheel_runs_sample_footage_and_a_run_outside_the_checkout(installed: Path, tmp_path: Path):
    exe = installed / "bin" / "handclust"
    assert exe.exists(), "the wheel installed no `handclust` console script"
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import handclust; print(handclust.__file__)"],
                           cwd=tmp_path, env=clean_env(), capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(installed)), f"handclust imported from {where}, not from the installed wheel"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([str(exe), *args], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"handclust {' '.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
        return r

    cli("sample-footage", "footage", "--clips", "2", "--minutes", "0.5", "--fps", "8", "--size", "160x90", "--version", "1")
    assert len(list((tmp_path / "footage").glob("*.mp4"))) == 2
    # runner=local: no Ray start-up; map_method=pca: UMAP's first call compiles with numba (28 s of a 59 s run here)
    # and the map is not what this test is about.
    cli("run", "footage", "--out", "out", "--no-progress", "--set", "runner=local", "--set", "cluster.map_method=pca")
    out = tmp_path / "out"
    for table in ("clips.parquet", "clusters.parquet", "embedding_2d.parquet", "neighbours.parquet", "run.json", "eval.json"):
        assert (out / table).is_file(), f"{table} missing from the run of the installed wheel"
    index = out / "report" / "index.html"
    assert index.is_file(), "report/index.html missing: the report's templates did not ship in the wheel"
    assert "<html" in index.read_text().lower()
