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
    assert cfg["available_node_types"]["head"]["resources"] == {"GPU": 0}


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
