"""The shipped cluster configs: they pass Ray's cluster-launcher schema, boot from the handclust
image (Python 3.11, nothing pip-installed per node), sync no venv or git history, give the object
store a memory-backed /dev/shm on Kubernetes, and the GPU job config really uses the GPUs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from handclust.config import load_config

CONFIGS = Path(__file__).resolve().parent.parent / "cluster_configs"
LAUNCHER = ["aws.yaml", "gcp.yaml"]


def _yaml(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_configs_pass_rays_schema_and_boot_from_the_image(name: str):
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cfg = _yaml(name)
    jsonschema.validate(cfg, schema)
    assert cfg["docker"]["image"] == _yaml("kuberay-rayjob.yaml")["spec"]["rayClusterSpec"]["headGroupSpec"]["template"][
        "spec"]["containers"][0]["image"]
    assert not cfg.get("setup_commands")  # every autoscaled node would pip-install CUDA torch and cuML at boot
    assert all(x in cfg["rsync_exclude"] for x in (".venv", ".git", "runs", "sample_footage"))
    assert "." not in cfg.get("file_mounts", {}).values()  # the code travels with `ray job submit --working-dir .`
    starts = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if c.strip().startswith(("RAY", "ray start")))
    assert cfg["available_node_types"]["head"]["resources"] == {"CPU": 0, "GPU": 0}


def test_gcp_scheduling_is_one_object():
    worker = _yaml("gcp.yaml")["available_node_types"]["gpu_worker"]["node_config"]
    assert worker["scheduling"] == {"onHostMaintenance": "TERMINATE", "preemptible": True}


def test_dockerfile_builds_python_311_with_gpu_extra_mediapipe_and_ffmpeg():
    text = (CONFIGS / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM nvidia/cuda:12" in text
    assert "python3.11 -m venv" in text and "ffmpeg" in text and "mediapipe==0.10.14" in text
    assert '".[gpu,' in text and "-c constraints-gpu.txt" in text
    ignore = (CONFIGS.parent / ".dockerignore").read_text().split()
    assert all(x in ignore for x in (".venv", ".git", "runs", "sample_footage"))


def test_gcp_nodes_boot_an_image_whose_driver_runs_the_cuda_12_8_container():
    """The image is built FROM nvidia/cuda:12.8: the container toolkit refuses to start it on a
    driver older than CUDA 12.8's (R570). Every GCP node boots a DLVM family that carries one
    (the family's name says its CUDA and driver: common-cu128-ubuntu-2204-nvidia-570)."""
    import re

    base = re.search(r"^FROM nvidia/cuda:(\d+)\.(\d+)", (CONFIGS / "Dockerfile").read_text(), re.M)
    assert base, "Dockerfile: no nvidia/cuda base"
    need = (int(base[1]), int(base[2]))
    for name, node in _yaml("gcp.yaml")["available_node_types"].items():
        for disk in node["node_config"].get("disks", []):
            family = disk.get("initializeParams", {}).get("sourceImage", "").rsplit("/", 1)[-1]
            m = re.fullmatch(r"common-cu(\d+?)(\d)-ubuntu-\d+-nvidia-(\d+)", family)
            assert m, f"gcp.yaml {name}: image family {family!r} does not name its CUDA and driver"
            assert (int(m[1]), int(m[2])) >= need and int(m[3]) >= 570, f"gcp.yaml {name}: {family} for CUDA {need}"


def test_kuberay_pods_have_a_memory_backed_dev_shm_and_token_auth():
    spec = _yaml("kuberay-rayjob.yaml")["spec"]["rayClusterSpec"]
    assert spec["authOptions"] == {"mode": "token"}
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        shm = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        assert mounts.get("/dev/shm") in shm and shm[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"


def test_gpu_job_config_asks_for_gpus_and_places_clustering_on_a_worker():
    from handclust.activities import clustering_place
    from handclust.pipeline import frame_stages, segment_stages

    cfg = load_config(CONFIGS / "job.yaml", [])
    gpu_stages = {s.name: s.resources.num_gpus for s in [*frame_stages(cfg), *segment_stages(cfg)] if s.resources.num_gpus > 0}
    assert set(gpu_stages) == {"scene", "video"}  # DINOv2 actors, V-JEPA-2 in the clip writers
    assert cfg.scene.device == "cuda"  # auto would ask for no GPU from a CPU-only head's driver
    assert clustering_place(cfg) == "ray_task" and cfg.cluster.num_gpus >= 1 and cfg.cluster.backend == "gpu"
    names = {s.name for s in frame_stages(cfg)}
    assert "pose" in cfg.ray.concurrency and set(cfg.ray.concurrency) <= names  # MediaPipe no longer one actor per cluster


def test_cpu_job_config_runs_without_a_gpu():
    from handclust.activities import clustering_place
    from handclust.pipeline import frame_stages

    cfg = load_config(CONFIGS / "job-cpu.yaml", [])
    assert clustering_place(cfg) == "driver" and all(s.resources.num_gpus == 0 for s in frame_stages(cfg))
    assert set(cfg.ray.concurrency) <= {s.name for s in frame_stages(cfg)}


# ---------------------------------------------------------------------------------------------- placement by Ray's own logic

ALL_CONFIGS = [*LAUNCHER, "kuberay-rayjob.yaml"]


def _autoscaler_view(name: str) -> tuple[dict, str, int]:
    """``(available_node_types, head type, max_workers)`` as Ray's autoscaler plans with them: the launcher
    configs' declared resources (the launcher passes them to `ray start`), KubeRay's derived by Ray's own
    KubeRay adapter from rayStartParams and container limits."""
    cfg = _yaml(name)
    if name in LAUNCHER:
        return cfg["available_node_types"], cfg["head_node_type"], cfg["max_workers"]
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    derived = _derive_autoscaling_config_from_ray_cr({"metadata": {"name": "handclust", "namespace": "default"},
                                                      "spec": cfg["spec"]["rayClusterSpec"]})
    return derived["available_node_types"], derived["head_node_type"], derived["max_workers"]


def _demands(job: str, overrides: list[str]) -> dict[str, dict[str, float]]:
    """Every resource bundle a run with this job config asks Ray for, by what asks it (the Ray runner's rules)."""
    from handclust.activities import clustering_place
    from handclust.pipeline import frame_stages, segment_stages
    from handclust.reporting.labelling import TASK_CPUS as LABEL_CPUS
    from handclust.reporting.report.excerpts import TASK_CPUS as EXCERPT_CPUS

    cfg = load_config(CONFIGS / job, overrides)
    rc = cfg.ray
    out = {"decode task": {"CPU": rc.decode_num_cpus}}
    for st in frame_stages(cfg):
        out[f"{st.name} actor"] = {"CPU": rc.actor_num_cpus or st.resources.num_cpus, "GPU": st.resources.num_gpus}
    # A clip's write task carries the segment stages (V-JEPA-2): their largest GPU share.
    out["write task"] = {"CPU": rc.decode_num_cpus, "GPU": max((s.resources.num_gpus for s in segment_stages(cfg)), default=0.0)}
    if clustering_place(cfg) == "ray_task":
        out["clustering task"] = {"CPU": cfg.cluster.num_cpus or 4, "GPU": cfg.cluster.num_gpus}
    if cfg.labels.enabled:
        out["labelling task"] = {"CPU": LABEL_CPUS}
    out["report excerpt task"] = {"CPU": EXCERPT_CPUS}
    return {k: {r: float(v) for r, v in d.items() if v} for k, d in out.items()}


JOBS = [("job.yaml", []), ("job.yaml", ["tools.enabled=true"]), ("job-cpu.yaml", [])]


def _place(node_types: dict, head: str, max_workers: int, bundles: list[dict[str, float]]) -> tuple[dict[str, int], list[dict]]:
    from functools import partial

    from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
    from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer, get_nodes_for

    scorer = partial(_default_utilization_scorer, node_availability_summary=NodeAvailabilitySummary(node_availabilities={}))
    # The head is up; what does not fit on it is what the autoscaler launches workers for.
    return get_nodes_for(node_types, {head: 1}, head, max_workers, bundles, utilization_scorer=scorer)


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_demand_of_every_job_config_lands_on_a_worker_never_the_head(name: str):
    """Ray's autoscaler bin packing (ray.autoscaler._private.resource_demand_scheduler, Ray 2.60) over the
    shipped node types: each bundle the job configs ask for (decode and write tasks, DINOv2 / motion / pose /
    OWLv2 actors, the clustering task, labelling and report tasks) fits some worker type and not the head, and
    the pools' minimum actors plus the clustering task fit within max_workers. An unplaceable bundle is a run
    that waits forever (issue 22: a GCP worker that declared only a GPU)."""
    from ray.autoscaler._private.resource_demand_scheduler import get_bin_pack_residual

    node_types, head, max_workers = _autoscaler_view(name)
    head_res = node_types[head]["resources"]
    assert head_res.get("CPU") == 0 and not head_res.get("GPU"), f"{name}: the head advertises {head_res}: it would take work"
    workers = {t: c for t, c in node_types.items() if t != head}
    for t, c in workers.items():  # declared, not left to detection (GCP fills in nothing)
        assert {"CPU", "GPU", "memory"} <= set(c["resources"]), f"{name}: {t} declares only {c['resources']}"
        assert c["max_workers"] >= 1
    assert any(c["resources"]["GPU"] >= 1 for c in workers.values()) and any(c["resources"]["GPU"] == 0 for c in workers.values())
    for job, overrides in JOBS:
        demands = _demands(job, overrides)
        if job == "job.yaml":
            assert {"scene actor", "write task", "clustering task"} <= set(demands) and demands["scene actor"].get("GPU")
            assert demands["tools actor"].get("GPU") if overrides else "tools actor" not in demands  # OWLv2 on a GPU worker
        for what, bundle in demands.items():
            assert get_bin_pack_residual([head_res], [bundle])[0] == [bundle], f"{name}: the {what} {bundle} fits on the head"
            launched, left = _place(node_types, head, max_workers, [bundle])
            assert not left and sum(launched.values()) == 1 and head not in launched, f"{name}, {job} {overrides}: the {what} {bundle} fits no worker type"
        # One run's standing set at once: every pool's minimum actors, one decode and one write task, the clustering task.
        cfg = load_config(CONFIGS / job, overrides)
        standing = [demands[w] for w in ("decode task", "write task")]
        for stage, size in cfg.ray.concurrency.items():
            standing += [demands[f"{stage} actor"]] * (size[0] if isinstance(size, tuple | list) else size)
        standing += [demands["clustering task"]] if "clustering task" in demands else []
        launched, left = _place(node_types, head, max_workers, standing)
        assert not left, f"{name}, {job}: {left} unplaceable with {launched}"
        assert all(n <= workers[t]["max_workers"] for t, n in launched.items()) and sum(launched.values()) <= max_workers


def test_a_gpu_worker_declaring_only_its_gpu_places_no_cpu_demand():
    """The check above catches issue 22's GCP worker: {"GPU": 1} alone leaves the DINOv2 actors and the
    clustering task nowhere to go."""
    node_types, head, max_workers = _autoscaler_view("gcp.yaml")
    old = {head: node_types[head], "gpu_worker": {**node_types["gpu_worker"], "resources": {"GPU": 1}}}
    for what in ("scene actor", "clustering task"):
        bundle = _demands("job.yaml", [])[what]
        assert _place(old, head, max_workers, [bundle])[1] == [bundle]


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_heads_start_without_cpus_and_every_node_spills_to_disk(name: str):
    cfg = _yaml(name)
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--num-cpus=0" in head and "--num-gpus=0" in head
    for cmd in (head, " ".join(cfg["worker_start_ray_commands"])):
        assert "--object-spilling-directory=/ray-spill" in cmd
    assert any("/ray-spill" in o for o in cfg["docker"]["run_options"])


def test_kuberay_head_takes_no_work_spills_to_disk_and_gets_the_gemini_key_from_a_secret():
    spec = _yaml("kuberay-rayjob.yaml")["spec"]["rayClusterSpec"]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0" and head["rayStartParams"]["num-gpus"] == "0"
    for group in [head, *spec["workerGroupSpecs"]]:
        assert group["rayStartParams"]["object-spilling-directory"] == "/ray-spill"
        pod = group["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        vol = {v["name"]: v for v in pod["volumes"]}[mounts["/ray-spill"]]
        assert "medium" not in vol["emptyDir"]  # disk, not memory
    env = {e["name"]: e for e in head["template"]["spec"]["containers"][0].get("env", [])}
    ref = env["GEMINI_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref["key"] == "GEMINI_API_KEY" and ref["optional"] is True  # no secret: the run goes on, unnamed


def test_no_key_is_baked_into_the_image_or_a_config():
    import re

    for f in ["Dockerfile", *ALL_CONFIGS, "job.yaml", "job-cpu.yaml"]:
        text = (CONFIGS / f).read_text()
        assert not re.search(r"AIza[0-9A-Za-z_-]{20,}", text), f  # the shape of a Google API key
        assert not re.search(r"(ENV|ARG)\s+(GEMINI|GOOGLE)_API_KEY", text), f


def test_write_slots_follow_an_autoscaling_cluster_as_its_workers_join():
    """The stream starts on a head that takes no work (0 CPUs) and workers join later: the number
    of clip write tasks allowed at once must grow with them, not stay at the count read at the
    start (2 for a whole 16-worker run, so V-JEPA-2 on 2 GPUs at most)."""
    from handclust.runtime.ray_runner import WriteSlots

    now = [0.0]
    cpus = [0.0]
    slots = WriteSlots(1.0, resources=lambda: {"CPU": cpus[0]}, refresh_s=15.0, clock=lambda: now[0])
    assert slots() == 2  # the head alone
    cpus[0] = 256.0  # 16 workers of 16 vCPUs joined
    assert slots() == 2  # not re-read within the refresh interval
    now[0] = 16.0
    assert slots() == 256
    cpus[0] = 32.0  # workers idled away
    now[0] = 40.0
    assert slots() == 32

    def gcs_down() -> dict[str, float]:
        raise ConnectionError("GCS unreachable")

    keeps = WriteSlots(2.0, resources=lambda: {"CPU": 64.0}, clock=lambda: now[0])
    assert keeps() == 32
    keeps._resources, now[0] = gcs_down, 100.0
    assert keeps() == 32  # a failed read keeps the last count
