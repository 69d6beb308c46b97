"""Shared fixtures: synthetic footage with a known truth, rendered once per test session."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

# Small, fast footage: 4 clips (one per phase), 320x180 at 10 fps.
TEST_CLIPS = 4
TEST_MINUTES = 1.0
TEST_SIZE = (320, 180)
TEST_FPS = 10.0
# The model-free scene descriptor for the shared runs whose tests are not about the scene encoder: the
# default (EfficientNet-Lite0 when installed) adds ~25 ms a frame it embeds; tests/test_scene_encoders.py
# runs it end to end, and every run that keeps the defaults (test_ray.py's included) runs it too.
HISTOGRAM = "scene.encoder=histogram"
# The in-process runner: same tables as Ray (tests/test_ray*.py), none of its start-up cost.
LOCAL = ["runner=local", HISTOGRAM]


REPO = Path(__file__).resolve().parent.parent

# Fixtures that render footage, run the whole pipeline or build model checkpoints: a test using one is `slow`, as is every
# `ray` test (a Ray instance takes seconds to start). `make test-fast` runs `-m "not slow"`; tests
# that call discover() themselves carry `@pytest.mark.slow` explicitly.
SLOW_FIXTURES = frozenset({"footage_dir", "demo_run", "small_run", "hostile_run", "v2_dir", "v2_run", "tiny_models"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("ray") or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _git_status() -> str | None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return None
    r = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


@pytest.fixture(scope="session", autouse=True)
def _checkout_unchanged():
    """The suite writes only under temp dirs: a test that changes the checkout (a default --out in the
    working directory, a stray report) fails the session."""
    before = _git_status()
    yield
    after = _git_status()
    if before is not None and after != before:
        changed = sorted(set(after.splitlines()) ^ set(before.splitlines()))
        pytest.fail(f"the test suite changed the checkout {REPO}: {changed}", pytrace=False)


@pytest.fixture(scope="session")
def footage_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from handclust.synthetic.sample import make_sample_footage

    out = tmp_path_factory.mktemp("footage")
    return make_sample_footage(out, n_clips=TEST_CLIPS, minutes=TEST_MINUTES, seed=7, fps=TEST_FPS, size=TEST_SIZE)


@pytest.fixture(scope="session")
def demo_run(footage_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One full run over the test footage, shared by the tests that only read its outputs."""
    from handclust import discover

    out = tmp_path_factory.mktemp("run")
    return discover(footage_dir, out=out, progress=False, overrides=LOCAL)


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel a user installs, built once per session from a copy of the sources (an in-tree build
    would leave build/ and *.egg-info in the checkout): pip wheel --no-deps, no build isolation (offline)."""
    import sys

    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "handclust", src / "handclust", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return next(dist.glob("handclust-*.whl"))


@pytest.fixture
def short_clip(tmp_path: Path) -> Path:
    """A 12-second clip, for tests that need one real file."""
    from handclust.synthetic.footage_v1 import render_clip

    p = tmp_path / "01_production_short.mp4"
    render_clip(p, "production", 12.0, seed=3, fps=TEST_FPS, size=TEST_SIZE)
    return p


@pytest.fixture(autouse=True)
def _fail_on_error_logs(caplog: pytest.LogCaptureFixture):
    """A test that logs at ERROR fails: errors must be handled and reported, not just logged."""
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, f"logged at ERROR: {[r.getMessage() for r in errors]}"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch):
    """A real S3 API on loopback (moto's server; moto is in the [dev] extra, so this never skips), with
    the credentials and endpoint set as a user of an S3-compatible store sets them (Ray workers a test
    starts inherit them). ``s3_bucket(name)`` creates the bucket and returns ``s3://name``."""
    import socket

    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        monkeypatch.setenv(k, v)

    def make(bucket: str) -> str:
        fs, _ = pafs.FileSystem.from_uri(f"s3://{bucket}/?allow_bucket_creation=true")
        fs.create_dir(bucket)
        return f"s3://{bucket}"

    yield make
    server.stop()
