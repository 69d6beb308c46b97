"""One executor per run (handclust/runtime/executor.py): it alone connects to Ray, every stage that
fans out runs through it, and it never shuts down a Ray it did not start; and the objects
``discover`` takes in place of the configured ones (``labeller``, ``video_source``) are the ones used."""

from __future__ import annotations

import ast
import json
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from handclust.config import RayConfig
from handclust.io.sources import ClipSource, FileClips
from handclust.runtime.executor import LocalExecutor, RayExecutor, executor_from

PACKAGE = Path(__file__).resolve().parents[1] / "handclust"
HISTOGRAM = "scene.encoder=histogram"  # the model-free scene descriptor (conftest.HISTOGRAM)


# --------------------------------------------------------------------------- no stage connects to Ray itself


def _calls_and_imports(path: Path) -> tuple[set[str], set[str]]:
    """Dotted names of what a module calls (``ray.init``, ``connect``) and the modules it imports from."""
    calls, imports = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                calls.add(".".join([f.id, *reversed(parts)]))
        elif isinstance(node, ast.ImportFrom) and node.module:
            imports.add(node.module)
        elif isinstance(node, ast.Import):
            imports.update(a.name for a in node.names)
    return calls, imports


def test_only_the_executor_connects_to_ray_and_no_stage_branches_on_the_runner():
    """Connecting (ray_connect.connect, ray.init) and shutting down Ray happen in runtime/executor.py and
    runtime/ray_connect.py only; Ray tasks are made only there and in the Ray Data runner; no stage
    module (activities, labelling, report excerpts, pipeline) asks which runner the run uses."""
    connecting, tasks, runner_checks = {}, {}, {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        calls, imports = _calls_and_imports(path)
        hits = {c for c in calls if c in ("ray.init", "ray.shutdown", "connect", "ray_connect.connect")}
        if "handclust.runtime.ray_connect" in imports:
            hits.add("imports handclust.runtime.ray_connect")
        if hits:
            connecting[rel] = hits
        if "ray.remote" in calls:
            tasks[rel] = True
        text = path.read_text()
        if any(s in text for s in ('runner == "ray"', 'runner != "ray"', 'runner == "local"', 'runner != "local"',
                                   'get("runner") ==', 'get("runner") !=')):
            runner_checks[rel] = True
    assert set(connecting) == {"handclust/runtime/executor.py", "handclust/runtime/ray_connect.py"}, connecting
    assert "ray.init" in connecting["handclust/runtime/ray_connect.py"]
    assert set(tasks) == {"handclust/runtime/executor.py", "handclust/runtime/ray_runner.py"}, tasks
    # cluster.where=auto's rule (the GPU clustering leaves a CPU head when runner=ray) is the one config default that reads it.
    assert set(runner_checks) <= {"handclust/runtime/executor.py", "handclust/activities.py"}, runner_checks
    src = (PACKAGE / "activities.py").read_text()
    assert src.count('runner == "ray"') == 1 and 'return "ray_task" if cfg.runner == "ray"' in src


def test_local_executor_keeps_order_shares_one_object_and_reports_failed_items():
    """What the stages rely on: results in the items' order whatever the threads did, one shared object
    (the labelling budget) for every call, a failed item turned into its record by on_error."""
    import time

    with LocalExecutor() as ex:
        out = ex.map(lambda x, k: (time.sleep(0.01 * (5 - x)), x * k)[1], list(range(5)), args=(10,), concurrency=3)
        assert out == [0, 10, 20, 30, 40]
        counter = ex.shared(_Counter)
        ex.map(lambda _, c: c.add(1), list(range(20)), args=(counter,), concurrency=4)
        assert counter.total == 20
        got = ex.map(_fails_on_two, [1, 2, 3], on_error=lambda item, exc: f"{item}: {exc}")
        assert got == [1, "2: two", 3]
        with pytest.raises(ValueError, match="two"):
            ex.map(_fails_on_two, [2])
        assert ex.call(divmod, 7, 2) == (3, 1)
    assert isinstance(executor_from("local"), LocalExecutor) and isinstance(executor_from("ray", RayConfig()), RayExecutor)
    with pytest.raises(ValueError, match="unknown runner 'dask'"):
        executor_from("dask")


class _Counter:
    def __init__(self) -> None:
        self.total = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> int:
        with self._lock:
            self.total += n
            return self.total

    def value(self) -> int:
        return self.total


def _fails_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("two")
    return x


# --------------------------------------------------------------------------- a real local Ray


@pytest.fixture
def ray_tmp(monkeypatch: pytest.MonkeyPatch):
    tmp = tempfile.mkdtemp(prefix="hcex")  # short: Ray's socket paths must fit in 107 bytes
    monkeypatch.setenv("RAY_TMPDIR", tmp)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.ray
def test_executor_leaves_a_ray_instance_it_did_not_start(ray_tmp: str):
    """A notebook's (or ray job submit's) Ray stays up after a run used it; its tasks still run there."""
    import ray

    assert not ray.is_initialized()
    # Workers import this module (the shared counter's class lives here).
    ray.init(address="local", num_cpus=1, object_store_memory=150 * 2**20, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parent)}})
    try:
        gcs = ray.get_runtime_context().gcs_address
        with executor_from("ray", RayConfig(num_cpus=2)) as ex:
            assert ex.map(_fails_on_two, [3, 4, 5], num_cpus=0.5) == [3, 4, 5]
            assert ex.map(_fails_on_two, [1, 2], num_cpus=0.5, on_error=lambda item, exc: -item) == [1, -2]
            counter = ex.shared(_Counter)
            ex.map(_add_one, list(range(6)), args=(counter,), num_cpus=0.25, concurrency=2)
            assert counter.value() == 6  # one actor behind every task
            assert not ex.started and "already joined" in str(ex.cluster)
        assert ray.is_initialized() and ray.get_runtime_context().gcs_address == gcs
        assert ray.get(ray.remote(num_cpus=0.5)(_fails_on_two).remote(1)) == 1  # and it still works
    finally:
        ray.shutdown()


def _add_one(_: int, counter: Any) -> int:
    return int(counter.add(1))


@pytest.mark.ray
def test_one_executor_connects_once_and_every_stage_runs_through_it(footage_dir: Path, tmp_path: Path, ray_tmp: str,
                                                                    monkeypatch: pytest.MonkeyPatch):
    """runner=ray with the clustering in a Ray task: the clips (Ray Data), the clustering task, naming
    each activity and the report's excerpts all run on the one Ray instance the run's executor
    started (ray.init once), which is gone when discover returns."""
    import ray
    from test_labelling import FakeGemini

    import handclust.io.video
    from handclust import discover

    fake = FakeGemini()
    monkeypatch.setenv("GEMINI_API_KEY", "k")

    def not_on_the_driver(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("keyframes decoded on the driver")

    monkeypatch.setattr(handclust.io.video, "read_range", not_on_the_driver)  # this process only, not Ray workers
    starts: list[Any] = []
    real_init = ray.init

    def counted_init(*args: Any, **kwargs: Any) -> Any:
        starts.append(kwargs.get("address"))
        return real_init(*args, **kwargs)

    monkeypatch.setattr(ray, "init", counted_init)
    out = tmp_path / "out"
    try:
        res = discover(sorted(footage_dir.glob("*.mp4"))[:2], out=out, progress=False, overrides=[
            "runner=ray", "ray.num_cpus=2", "ray.object_store_memory_mb=300", "ray.actor_num_cpus=0.3", "pose.enabled=false",
            HISTOGRAM, "evaluation.ablations=false", "cluster.where=ray_task", "cluster.num_gpus=0", "cluster.num_cpus=1",
            f"labels.base_url={fake.url}", "labels.backoff_s=0.01", "labels.n_segments=2"])
    finally:
        fake.server.shutdown()
    assert starts == ["local"] and not ray.is_initialized()
    run = json.loads((out / "run.json").read_text())
    assert run["clustering"]["ran_on"].startswith("ray task (0 GPU, 1 CPU)"), run["clustering"]["ran_on"]
    assert "new local Ray instance" in run["summary"]["ray_cluster"] and res.summary["clips_ok"] == 2
    labels = pd.read_parquet(out / "labels.parquet")
    assert (labels.status == "ok").all() and res.summary["labels"]["ran_on"] == "ray tasks", labels.error.tolist()
    assert run["report"]["status"] == "ok" and run["report"]["problems"] == [], run["report"]  # excerpts decoded in tasks


# --------------------------------------------------------------------------- objects passed to discover


class NamesByKeyframes:
    """A labeller of one's own: names each activity from what it was given, in this process."""

    model = "names-by-keyframes"

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.ready = False

    def setup(self) -> None:
        self.ready = True

    def __call__(self, ex: Any) -> dict[str, Any]:
        assert self.ready and ex.keyframes, "setup() first, and the keyframes decoded"
        self.seen.append(ex.cluster)
        return {"label": f"task {ex.cluster} ({len(ex.keyframes)} frames)", "description": "named by the test",
                "status": "ok", "error": None}


class EveryOtherClip:
    """A video source of one's own: lists every other clip of a folder and records what it opens."""

    def __init__(self) -> None:
        self.files = FileClips()
        self.opened: list[str] = []

    def find(self, footage: Any, phase_pattern: str, skip: Any = ()) -> list[Any]:
        return self.files.find(footage, phase_pattern, skip)[::2]

    def open(self, path: str, *args: Any, **kwargs: Any) -> Any:
        self.opened.append(path)
        return self.files.open(path, *args, **kwargs)


@pytest.fixture(scope="module")
def own_objects_run(footage_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, NamesByKeyframes, EveryOtherClip]:
    from handclust import discover

    labeller, source = NamesByKeyframes(), EveryOtherClip()
    assert isinstance(source, ClipSource)
    out = tmp_path_factory.mktemp("own")
    with pytest.MonkeyPatch.context() as mp:
        for key in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):  # no key: the labeller passed in needs none
            mp.delenv(key, raising=False)
        res = discover(footage_dir, out=out, progress=False, labeller=labeller, video_source=source,
                       overrides=["runner=local", HISTOGRAM, "evaluation.ablations=false", "cluster.map_method=pca"])
    return out, res, labeller, source


def test_discover_names_activities_with_the_labeller_passed_in(own_objects_run):
    out, res, labeller, _ = own_objects_run
    labels = pd.read_parquet(out / "labels.parquet")
    k = res.summary["activities"]
    assert k >= 1 and sorted(labeller.seen) == sorted(labels.cluster) and len(labels) == k
    assert (labels.status == "ok").all() and (labels.model == "names-by-keyframes").all()
    assert labels.label.tolist() == [f"task {c} (6 frames)" for c in labels.cluster]  # labels.n_segments=3 x 2 frames
    names = json.loads((out / "run.json").read_text())["summary"]["activity_names"]
    assert names == {str(c): n for c, n in zip(labels.cluster, labels.label, strict=True)}
    assert res.summary["labels"]["ran_on"] == "threads"
    assert labels.label.iloc[0] in (out / "report" / "index.html").read_text()


def test_discover_processes_the_clips_of_the_video_source_passed_in(own_objects_run, footage_dir: Path):
    out, res, _, source = own_objects_run
    listed = [str(p) for p in sorted(footage_dir.glob("*.mp4"))][::2]
    clips = pd.read_parquet(out / "clips.parquet")
    assert sorted(clips.path) == sorted(listed) and res.summary["clips_total"] == len(listed) < 4
    assert sorted(set(source.opened)) == sorted(listed)  # every clip decoded was opened by it
    assert set(pd.read_parquet(out / "segments").clip_id) == set(clips.clip_id[clips.status == "ok"])
