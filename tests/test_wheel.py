"""The wheel a user installs runs (issue 11, packaging): build it, install it with --no-deps into a
fresh venv that borrows this venv's dependencies, and run the installed `handclust` from a folder
outside the checkout on two tiny clips.

A missing package-data file (the report's Jinja2 templates), a module left out of the package
list, or a broken console-script entry point fails here and nowhere else: every other test imports
handclust from the checkout. The extras are checked as a user installs them: each extra with what
it pulls in ([dev] brings [cpu], ...), never two faiss packages in one install.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXTRAS = {"cpu", "gpu", "hands", "encoders", "labels", "dev"}  # README: Install
FAISS = {"faiss-cpu", "faiss-gpu-cu12", "faiss-gpu", "faiss"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")  # a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "handclust", src / "handclust", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return next(dist.glob("handclust-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
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
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
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


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(z.read(name))


def _name(spec: str) -> str:
    return re.split(r"[\s\[<>=!~;(]", spec.strip(), maxsplit=1)[0].lower()


def test_wheel_declares_the_documented_extras_and_no_install_gets_two_faiss(wheel: Path):
    meta = _metadata(wheel)
    assert EXTRAS <= set(meta.get_all("Provides-Extra") or [])
    direct: dict[str, list[str]] = {}
    for req in meta.get_all("Requires-Dist") or []:
        spec, _, marker = req.partition(";")
        m = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        direct.setdefault(m.group(1) if m else "", []).append(spec.strip())

    def pulled(extra: str, seen: frozenset[str] = frozenset()) -> set[str]:
        """Package names that `pip install handclust[extra]` brings, with the extras it names of itself."""
        names = {_name(s) for s in direct[""]}
        for spec in direct.get(extra, []):
            if _name(spec) == "handclust":
                for inner in re.search(r"\[([^\]]*)\]", spec).group(1).split(","):
                    if inner.strip() not in seen:
                        names |= pulled(inner.strip(), seen | {extra})
            else:
                names.add(_name(spec))
        return names

    for extra in EXTRAS:
        faiss = pulled(extra) & FAISS
        assert len(faiss) <= 1, f"handclust[{extra}] installs {sorted(faiss)}: both provide the `faiss` module"
    assert pulled("dev") & FAISS == {"faiss-cpu"} and pulled("gpu") & FAISS == {"faiss-gpu-cu12"}
    assert not pulled("") & FAISS  # the base install leaves the choice to [cpu] or [gpu]
