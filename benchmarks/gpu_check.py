"""Run every GPU path of handclust once, on small inputs, and record what happened.

On a machine with a CUDA GPU (and the [gpu,encoders] extras), in well under 8 minutes:

    python benchmarks/gpu_check.py                  # writes benchmarks/results/gpu_check_<gpu>.json
    python benchmarks/gpu_check.py --skip encoders_real_size ray_gpu_run   # fewer paths

Paths: the device and dtype resolution; the installed stack against constraints-gpu.txt (one CUDA
major); cuML HDBSCAN and UMAP, FAISS-GPU kNN and the whole joint clustering with
``cluster.backend=gpu`` (each checked against the CPU backend on the same data);
DINOv2 / V-JEPA-2 / OWLv2 stages with tiny random models in float16 and bfloat16 (bfloat16 only
where the GPU has it); the real-size encoder throughput (``benchmarks/encoders.py --device cuda``,
which writes ``encoders_cuda.json`` for ``handclust estimate``); and a Ray run with GPU actor pools
and the clustering task on the GPU. Each path runs in its own ``try``: one failure is recorded
with its error and the others still run. NVDEC decode (``decode.hwaccel=cuda``) against CPU PyAV on
a 720p clip, and in the Ray run. Without a GPU it stops at once and says so (exit 2); ``--cpu-rehearsal`` runs
the same script on CPU backends (tiny inputs, output under /tmp) to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]  # handclust from this checkout; encoders.py's model builders


def find_gpu() -> str | None:
    """The GPU's name, or None; judged by torch, else cupy, else nvidia-smi (whichever is installed)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return None
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:
        pass
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except Exception:
        pass
    return None


def blobs(n: int, dim: int, k: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    x = rng.normal(size=(k, dim))[truth] * 3 + rng.normal(size=(n, dim))
    return x.astype(np.float32), truth


class Checker:
    def __init__(self, skip: set[str], budget_s: float):
        self.results: dict[str, dict[str, Any]] = {}
        self.skip = skip
        self.t0 = time.perf_counter()
        self.budget_s = budget_s

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if name in self.skip:
            self.results[name] = {"ok": None, "skipped": "--skip"}
            return
        spent = time.perf_counter() - self.t0
        if spent > self.budget_s:
            self.results[name] = {"ok": None, "skipped": f"time budget spent ({spent:.0f} s of {self.budget_s:.0f} s)"}
            return
        print(f"[{spent:6.1f} s] {name} ...", flush=True)
        t = time.perf_counter()
        try:
            details = fn()
            self.results[name] = {"ok": True, "seconds": round(time.perf_counter() - t, 2), **details}
        except Exception as exc:  # one path failing must not hide the others
            self.results[name] = {"ok": False, "seconds": round(time.perf_counter() - t, 2),
                                  "error": f"{type(exc).__name__}: {str(exc).strip()[:1500]}",
                                  "traceback": traceback.format_exc()[-3000:]}
        r = self.results[name]
        print(f"           {name}: {'ok' if r['ok'] else 'FAILED ' + r.get('error', '')[:300]} ({r['seconds']} s)", flush=True)


def check_device(gpu_mode: bool) -> dict[str, Any]:
    import torch

    from handclust.modalities.encoders.device import cuda_has_bf16, dtype_name, resolve_device, resolve_dtype

    out: dict[str, Any] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda}
    device = resolve_device("auto", "scene.device")
    out["device_auto"] = device
    out["dtype_auto"] = dtype_name(resolve_dtype("auto", device, "scene.dtype"))
    if gpu_mode:
        assert device == "cuda", f"device auto resolved to {device}, not cuda"
        cap = torch.cuda.get_device_capability()
        out.update(capability=f"{cap[0]}.{cap[1]}", bf16_native=cuda_has_bf16(cap), memory_gib=round(
            torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
        assert out["dtype_auto"] == ("bfloat16" if cuda_has_bf16(cap) else "float16")
    for mod in ("cuml", "cupy", "faiss", "transformers", "ray", "mediapipe"):
        try:
            out[f"{mod}_version"] = __import__(mod).__version__
        except Exception as exc:
            out[f"{mod}_version"] = f"not importable: {type(exc).__name__}: {exc}"[:200]
    try:
        import faiss

        out["faiss_gpus"] = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    except Exception:
        pass
    return out


def check_stack(gpu_mode: bool) -> dict[str, Any]:
    """The installed GPU stack against constraints-gpu.txt (what cluster_configs/Dockerfile pins), and on a
    GPU one CUDA major across torch and CuPy (a CUDA 13 torch beside cuML for CUDA 12 is issue 22's clash)."""
    from importlib.metadata import PackageNotFoundError, version

    text = (HERE.parent / "constraints-gpu.txt").read_text()
    pins = {n.lower(): v for n, v in (line.split("==", 1) for line in text.splitlines() if line and not line.startswith("#"))}
    got: dict[str, str | None] = {}
    for dist in ("torch", "cuml-cu12", "cupy-cuda12x", "faiss-gpu-cu12", "numba", "pandas", "numpy", "ray", "boto3", "google-api-python-client"):
        try:
            got[dist] = version(dist)
        except PackageNotFoundError:
            got[dist] = None
    differ = {d: {"pinned": pins.get(d), "installed": v} for d, v in got.items() if pins.get(d) != v}
    out: dict[str, Any] = {"installed": got, "differs_from_constraints_gpu": differ}
    if gpu_mode:
        import cupy
        import torch

        majors = {"torch": int(str(torch.version.cuda).split(".")[0]), "cupy": int(cupy.cuda.runtime.runtimeGetVersion()) // 1000}
        out["cuda_majors"] = majors
        assert len(set(majors.values())) == 1, f"torch and CuPy are built for different CUDA majors: {majors}"
        assert not differ, f"this is not the stack constraints-gpu.txt pins: {differ}"
    return out


def check_hdbscan(backend: str, n: int) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score

    from handclust.core.clustering import hdbscan_fit

    x, truth = blobs(n, 16)
    t = time.perf_counter()
    labels, _probs, used = hdbscan_fit(x, 50, 10, backend)
    s = time.perf_counter() - t
    assert used == ("cuml" if backend == "gpu" else "sklearn"), used
    ari = adjusted_rand_score(truth, labels)
    return {"backend": used, "n": n, "fit_s": round(s, 3), "clusters": int(labels.max() + 1),
            "noise_rate": round(float((labels < 0).mean()), 4), "ari_vs_truth": round(float(ari), 4)}


def check_umap(backend: str, n: int) -> dict[str, Any]:
    from handclust.core.clustering import umap_fit

    x, _ = blobs(n, 32)
    t = time.perf_counter()
    y, used = umap_fit(x, "umap", backend, 0)
    s = time.perf_counter() - t
    assert y.shape == (n, 2) and np.isfinite(y).all(), y.shape
    assert used == ("cuml-umap" if backend == "gpu" else "umap-learn"), used
    return {"backend": used, "n": n, "fit_s": round(s, 3)}


def check_knn(backend: str, n: int) -> dict[str, Any]:
    from handclust.core.clustering import knn_graph, l2_normalise

    x = l2_normalise(blobs(n, 64)[0])
    t = time.perf_counter()
    idx, _dist, used = knn_graph(x, 10, backend)
    s = time.perf_counter() - t
    assert idx.shape == (n, 10), idx.shape
    m = min(n, 2000)  # exact neighbours of a sample, by brute force on the CPU
    sims = x[:m] @ x.T
    exact = np.argsort(-sims, axis=1)[:, 1:11]
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx[:m], exact, strict=True)]))
    if backend == "gpu":
        assert used.startswith("faiss-gpu"), used
    return {"backend": used, "n": n, "search_s": round(s, 3), "recall_at_10_vs_exact": round(recall, 4)}


def check_joint_clustering(backend: str, n: int) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score

    from handclust.config import load_config
    from handclust.core.clustering import group_segments

    rng = np.random.default_rng(1)
    truth = rng.integers(0, 10, n)
    mods = {m: (rng.normal(size=(10, d))[truth] * 3 + rng.normal(size=(n, d))).astype(np.float32)
            for m, d in (("scene", 64), ("motion", 32), ("ego", 8), ("rhythm", 4))}
    clips = np.array([f"c{i // 200}" for i in range(n)], dtype=object)
    cfg = load_config(None, [f"cluster.backend={backend}", "cluster.stability=false"]).cluster
    t = time.perf_counter()
    g = group_segments(mods, clips, np.full(n, 6.0), cfg, {})
    s = time.perf_counter() - t
    if backend == "gpu":
        assert g.clustering.backends.get("hdbscan") == "cuml", g.clustering.backends
    return {"n": n, "seconds_total": round(s, 3), "backends": g.clustering.backends, "k": g.clustering.k,
            "noise_rate": round(g.clustering.noise_rate, 4), "ari_vs_truth": round(float(adjusted_rand_score(truth, g.clustering.labels)), 4)}


def tiny_models(root: Path) -> dict[str, Path]:
    import encoders as bench  # benchmarks/encoders.py: checkpoints with the hub's processor settings

    bench.DINO_SIZES["tiny"] = (64, 2, 2)
    bench.VJEPA_SIZES["tiny"] = (64, 2, 2, 4.0)
    return {"dinov2": bench.save_dinov2(root, "tiny"), "vjepa2": bench.save_vjepa2(root, "tiny"), "owlv2": bench.save_owlv2(root)}


def check_encoders(models: dict[str, Path], device: str, dtype: str, clip: Path) -> dict[str, Any]:
    import torch

    from handclust.config import load_config
    from handclust.modalities.encoders.dinov2 import DinoFrameEncoder
    from handclust.modalities.encoders.owlv2 import OwlToolPresence
    from handclust.modalities.encoders.vjepa2 import VJEPAWindowEncoder, model_input

    frames = np.random.default_rng(0).integers(0, 256, (32, 180, 320, 3), dtype=np.uint8)
    out: dict[str, Any] = {"device": device, "dtype": dtype}
    cfg = load_config(None, ["scene.encoder=dinov2", f"scene.model={models['dinov2']}", f"scene.device={device}", f"scene.dtype={dtype}",
                             "video.enabled=true", f"video.model={models['vjepa2']}", f"video.device={device}", f"video.dtype={dtype}",
                             "tools.enabled=true", f"tools.model={models['owlv2']}", f"tools.device={device}", f"tools.dtype={dtype}",
                             "tools.prompts=[trowel, brick]"])
    dino = DinoFrameEncoder(cfg.scene)
    dino.setup()
    emb = dino.embed(frames)
    assert np.isfinite(emb).all() and emb.dtype == np.float32, "DINOv2 gave non-finite embeddings"
    out["dinov2"] = {**dino.info(), "frames": len(frames), "param_dtype": str(next(dino.model.parameters()).dtype)}
    if device == "cuda":
        assert str(next(dino.model.parameters()).dtype) == f"torch.{dtype}"
    owl = OwlToolPresence(cfg.tools, sample_fps=cfg.decode.sample_fps)
    owl.setup()
    scores = owl.score(frames[:2])
    assert np.isfinite(scores).all(), "OWLv2 gave non-finite scores"
    out["owlv2"] = {"frames": 2, "scores_shape": list(scores.shape)}
    vj = VJEPAWindowEncoder(cfg.video, cfg.decode.sample_fps)
    vj.setup()
    side = model_input(cfg.video)[1]
    n = 2 * vj.span  # two windows of rows, as decoding gives them (video_px at the model's input size)
    rows = {"clip_id": np.array(["c"] * n, dtype=object), "frame_idx": np.arange(n, dtype=np.int32),
            "video_px": np.random.default_rng(1).integers(0, 256, (n, side, side, 3), dtype=np.uint8)}
    vec = vj(rows)["video_emb"]
    assert np.isfinite(np.asarray(vec, np.float32)).all(), "V-JEPA-2 gave non-finite window vectors"
    out["vjepa2"] = {"windows": 2, "dim": int(np.asarray(vec).shape[1]), "input": f"{side}x{side}"}
    if device == "cuda":
        out["max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def check_encoders_real_size(out_json: Path, device: str) -> dict[str, Any]:
    """benchmarks/encoders.py at real sizes (random weights); its JSON feeds `handclust estimate`."""
    args = ([sys.executable, str(HERE / "encoders.py"), "--device", "cuda", "--frames", "512", "--batch-size", "64", "--windows", "16",
             "--video-batch-size", "8", "--owl-frames", "32", "--owl-batch-size", "8", "--sizes", "small", "base", "--out", str(out_json)]
            if device == "cuda" else
            [sys.executable, str(HERE / "encoders.py"), "--device", "cpu", "--frames", "2", "--batch-size", "2", "--windows", "1",
             "--video-sizes", "none", "--owl-frames", "0", "--sizes", "small", "--out", str(out_json)])
    r = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=REPO)
    if r.returncode != 0:
        raise RuntimeError(f"benchmarks/encoders.py exited {r.returncode}: {r.stderr.strip()[-1500:]}")
    data = json.loads(out_json.read_text())
    return {"wrote": str(out_json), "gpu": data.get("gpu"), "dtype": data.get("dtype"),
            "rates": {row["model"]: f"{row['value']} {row['unit']}" for row in data.get("results", [])}}


def check_nvdec(work: Path, gpu: bool) -> dict[str, Any]:
    """decode.hwaccel=cuda on a 720p30 H.264 clip: NVDEC must take it on a GPU (no fallback), give the
    CPU decode's pictures, and its wall and process CPU seconds stand beside CPU PyAV's."""
    from handclust.io.video import open_video
    from handclust.synthetic.footage_v1 import render_clip

    clip = work / "01_production_nvdec.mp4"
    clip.parent.mkdir(parents=True, exist_ok=True)
    render_clip(clip, "production", 20.0 if gpu else 4.0, seed=2, fps=30.0, size=(1280, 720) if gpu else (320, 180))
    out: dict[str, Any] = {}
    frames: dict[str, np.ndarray] = {}
    for name, hw in (("cpu", "none"), ("nvdec", "cuda")):
        w0, c0 = time.perf_counter(), time.process_time()
        src = open_video(clip, 5.0, 320, 64, "auto", None, hw)
        frames[name] = np.concatenate([ch.frames for ch in src.chunks()])
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        out[name] = {"backend": src.backend, "why": src.why, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                     "x_realtime": round(src.decoded_s / wall, 2)}
    if gpu and out["nvdec"]["backend"] != "nvdec":
        raise RuntimeError(f"NVDEC did not decode the clip: {out['nvdec']['why']}")
    diff = float(np.abs(frames["nvdec"].astype(np.int16) - frames["cpu"]).mean())
    assert frames["nvdec"].shape == frames["cpu"].shape and diff < 2.0, (frames["nvdec"].shape, diff)
    out["mean_abs_difference"] = round(diff, 3)
    return out


def check_ray_run(models: dict[str, Path], footage: Path, out: Path, device: str) -> dict[str, Any]:
    from handclust import discover

    gpu = device == "cuda"
    overrides = ["runner=ray", "progress=false", "pose.enabled=false", "labels.enabled=false", "report.enabled=false",
                 "evaluation.ablations=false", "scene.encoder=dinov2", f"scene.model={models['dinov2']}", f"scene.device={device}",
                 "scene.num_gpus=0.25", "video.enabled=true", f"video.model={models['vjepa2']}", f"video.device={device}",
                 "video.num_gpus=0.5", f"cluster.backend={'gpu' if gpu else 'cpu'}", "cluster.where=ray_task",
                 f"cluster.num_gpus={1 if gpu else 0}", "cluster.num_cpus=2", "ray.concurrency={scene: [1, 2], motion: [1, 2]}",
                 "decode.hwaccel=cuda"]
    if not gpu:
        overrides += ["ray.actor_num_cpus=0.3", "ray.decode_num_cpus=0.5", "cluster.map_method=pca"]
    t = time.perf_counter()
    res = discover(footage, out=out, progress=False, overrides=overrides)
    s = time.perf_counter() - t
    run = json.loads((out / "run.json").read_text())
    clustering = run.get("clustering") or {}
    assert res.summary["clips_ok"] >= 1, res.summary
    if gpu:
        assert clustering.get("ran_on", "").startswith("ray task (1 GPU"), clustering.get("ran_on")
        assert clustering.get("backends", {}).get("hdbscan") == "cuml", clustering.get("backends")
    return {"seconds": round(s, 2), "clips_ok": res.summary["clips_ok"], "segments": res.summary["segments"],
            "activities": res.summary.get("activities"), "clustering_ran_on": clustering.get("ran_on"),
            "clustering_backends": clustering.get("backends"), "encoders": {k: {f: v.get(f) for f in ("device", "dtype")}
                                                                            for k, v in (run.get("encoders") or {}).items()},
            "timings": {k: round(v, 2) for k, v in (run.get("timings") or {}).items()}, "ray_cluster": res.summary.get("ray_cluster")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="JSON to write (default benchmarks/results/gpu_check_<gpu>.json)")
    ap.add_argument("--skip", nargs="*", default=[], help="check names to skip")
    ap.add_argument("--budget-s", type=float, default=420.0, help="start no new check after this many seconds")
    ap.add_argument("--cpu-rehearsal", action="store_true", help="no GPU: run the same paths on CPU backends (tests the script)")
    args = ap.parse_args()

    gpu = find_gpu()
    if gpu is None and not args.cpu_rehearsal:
        print("gpu_check: no CUDA GPU is visible here (torch, cupy and nvidia-smi see none; CUDA_VISIBLE_DEVICES="
              f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}). Run it on a GPU machine with the [gpu,encoders] extras "
              "(cluster_configs/Dockerfile), or pass --cpu-rehearsal to check the script on CPU.", file=sys.stderr)
        return 2
    device, backend = ("cuda", "gpu") if gpu and not args.cpu_rehearsal else ("cpu", "cpu")
    big = device == "cuda"
    slug = "".join(c if c.isalnum() else "-" for c in (gpu or "cpu-rehearsal")).strip("-").lower()
    out = args.out or (HERE / "results" / f"gpu_check_{slug}.json" if big else Path(tempfile.gettempdir()) / "gpu_check_cpu-rehearsal.json")
    work = Path(tempfile.mkdtemp(prefix="hc-gpu-check-"))
    c = Checker(set(args.skip), args.budget_s)
    load0 = os.getloadavg()[0]

    c.run("device", lambda: check_device(big))
    c.run("stack", lambda: check_stack(big))
    c.run("hdbscan", lambda: check_hdbscan(backend, 20_000 if big else 3_000))
    c.run("hdbscan_cpu_same_data", lambda: check_hdbscan("cpu", 20_000 if big else 3_000))
    c.run("umap", lambda: check_umap(backend, 50_000 if big else 1_000))
    c.run("knn", lambda: check_knn(backend, 200_000 if big else 5_000))
    c.run("joint_clustering", lambda: check_joint_clustering(backend, 60_000 if big else 2_000))
    c.run("nvdec_decode", lambda: check_nvdec(work / "nvdec", big))

    models: dict[str, Path] = {}
    clip = work / "footage" / "01_production_check.mp4"

    def prepare() -> dict[str, Any]:
        from handclust.synthetic.footage_v1 import render_clip

        models.update(tiny_models(work / "models"))
        clip.parent.mkdir(parents=True, exist_ok=True)
        render_clip(clip, "production", 20.0, seed=1, fps=10.0, size=(320, 180))
        return {"models": {k: str(v) for k, v in models.items()}, "clip": str(clip)}

    c.run("prepare_tiny_models_and_clip", prepare)
    for dtype in (["float16", "bfloat16"] if big else ["float32"]):
        def enc(dtype: str = dtype) -> dict[str, Any]:
            if not models:
                raise RuntimeError("tiny models were not prepared (see prepare_tiny_models_and_clip)")
            if dtype == "bfloat16":
                import torch

                from handclust.modalities.encoders.device import cuda_has_bf16

                if not cuda_has_bf16(torch.cuda.get_device_capability()):
                    return {"note": "no native bfloat16 on this GPU: dtype auto uses float16, bfloat16 is refused"}
            return check_encoders(models, device, dtype, clip)

        c.run(f"encoders_tiny_{dtype}", enc)
    c.run("encoders_real_size", lambda: check_encoders_real_size(
        HERE / "results" / "encoders_cuda.json" if big else work / "encoders_rehearsal.json", device))
    c.run("ray_gpu_run", lambda: check_ray_run(models, clip.parent, work / "run", device))

    report = {
        "what": "every GPU path of handclust once on small inputs (benchmarks/gpu_check.py)",
        "gpu": gpu, "device": device, "rehearsal_on_cpu": not big, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "load_avg_1m_start_end": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "total_s": round(time.perf_counter() - c.t0, 1),
        "passed": sorted(k for k, v in c.results.items() if v.get("ok") is True),
        "failed": sorted(k for k, v in c.results.items() if v.get("ok") is False),
        "not_run": sorted(k for k, v in c.results.items() if v.get("ok") is None),
        "checks": c.results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out}: passed {len(report['passed'])}, failed {report['failed'] or 'none'}, not run {report['not_run']}, "
          f"{report['total_s']} s")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
