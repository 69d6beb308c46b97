"""What a run over N hours of footage will cost on cloud GPU nodes, before you submit it.

The estimate is a throughput model, not a guess: each node processes footage at the rate of its
slowest resource, CPU (decode + flow + scene features, measured by ``benchmarks/throughput.py``
per core, plus EfficientNet-Lite0 when it is the scene encoder: ``benchmarks/efficientnet_cpu.py``) or
GPU (the learned encoders, measured by ``benchmarks/encoders.py`` on that GPU).
On top of the GPU workers it counts the CPU head node (up for the whole run) and the joint
clustering, one Ray task on one GPU worker after the last clip (``benchmarks/clustering.py``).
Every number it uses says where it came from: ``measured`` (a benchmark JSON in
``benchmarks/results/``), or ``assumed`` (a default below, to be replaced by measuring on your
GPU). Prices are on-demand list prices; pass your own (``--price``) for spot or committed rates.

With :class:`Overheads` it also counts what a cluster spends around the clips: node boot and image
pull (in the autoscaler's launch waves), the workers' idle timeout after the stream, and the
post-processing after clustering. :func:`recommend` searches the worker types of a cluster config
(``cluster_configs/aws.yaml``, ``gcp.yaml``: GPU and CPU workers, within their ``max_workers``) for
the cheapest mix that meets a deadline, or the fastest within a budget.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from handclust.prices import GEMINI_PRICES_CHECKED as GEMINI_PRICES_CHECKED
from handclust.prices import GEMINI_TOKENS_PER_TILE as GEMINI_TOKENS_PER_TILE
from handclust.prices import GEMINI_USD_PER_MTOK as GEMINI_USD_PER_MTOK
from handclust.prices import HEADS, NODES, NodeType
from handclust.prices import gemini_image_tokens as gemini_image_tokens
from handclust.prices import gemini_price as gemini_price
from handclust.prices import gemini_usd as gemini_usd

# The measured rates the estimate uses: the benchmark results shipped inside the package (the same
# numbers installed from a wheel as from a checkout; tests/test_cost.py fails when they differ from
# benchmarks/results), or HANDCLUST_RATES_DIR (e.g. your own benchmarks/results after rerunning them).
PACKAGED_RATES = Path(__file__).resolve().parent / "rates"
RESULTS = Path(os.environ.get("HANDCLUST_RATES_DIR") or PACKAGED_RATES)


# How benchmarks/encoders.py names a GPU (torch.cuda.get_device_name) for each GPU above.
GPU_NAMES = {"T4": r"\bT4\b", "A10G": r"\bA10G\b", "L4": r"\bL4\b", "A100-40GB": r"\bA100\b(?!.*80GB)", "H100": r"\bH100\b"}

# Encoder throughput per GPU when no benchmark on that GPU exists: deliberately conservative
# figures for half-precision inference (bfloat16 on A10G / L4 / A100 / H100, float16 on the T4,
# which has no bfloat16: what dtype auto picks), to be replaced by `python benchmarks/encoders.py
# --device cuda` on the real GPU.
ASSUMED_GPU = {
    "dinov2_frames_per_s": {"T4": 250.0, "A10G": 600.0, "L4": 550.0, "A100-40GB": 1500.0, "H100": 2500.0},
    # Windows of 16 frames at 256 x 256 (ViT-L). Four times the per-segment figures these replace
    # (an 8 s segment was 4 such windows), so the assumption itself did not change.
    "vjepa2_windows_per_s": {"T4": 6.0, "A10G": 16.0, "L4": 14.0, "A100-40GB": 40.0, "H100": 64.0},
    "owlv2_frames_per_s": {"T4": 8.0, "A10G": 20.0, "L4": 18.0, "A100-40GB": 45.0, "H100": 70.0},
}
# CPU cost per footage hour when benchmarks/results has none: 720p30 H.264, 5 fps sampling.
ASSUMED_CPU_X_REALTIME_PER_CORE = 2.5
# EfficientNet-Lite0 core-seconds per embedded frame when benchmarks/results/efficientnet_cpu.json is absent.
ASSUMED_EFFICIENTNET_S_PER_FRAME = 0.06
# Joint clustering seconds per segment when benchmarks/results has no clustering run.
ASSUMED_CLUSTER_S_PER_SEGMENT = 5e-4
# Share of the per-clip CPU time that is decoding, when the benchmark gives no stage split.
ASSUMED_DECODE_SHARE = 0.45
# The clip the CPU rate stands for when benchmarks/results has none (benchmarks/throughput.py's default).
ASSUMED_BENCH_CLIP = {"width": 1280, "height": 720, "fps": 30.0, "codec": "h264"}
# Software (FFmpeg) decode cost per pixel relative to H.264, the codec every benchmark here measured.
# ASSUMED from published decoder comparisons (libavcodec hevc, libvpx/ffvp9, libdav1d on x86), not
# measured in this project: run benchmarks/throughput.py --clip on a sample of your footage to measure.
CODEC_DECODE_COST = {"h264": 1.0, "mpeg4": 0.8, "mjpeg": 1.2, "hevc": 1.6, "h265": 1.6, "vp9": 1.4, "av1": 1.8, "prores": 1.2}

# What a cluster spends around the clips, when nothing measured says otherwise. ASSUMED, not measured in
# this project (no cloud account here): node boot = instance start to `ray start` joined (GPU VMs with the
# driver installed at first boot, as gcp.yaml asks, take longer); image pull = the handclust GPU image
# (~6 GB compressed: torch, cuML, FAISS CUDA 12 wheels) pulled and unpacked per node.
ASSUMED_BOOT_MIN = {"aws": 3.0, "gcp": 5.0, "": 4.0}
ASSUMED_IMAGE_PULL_MIN = 5.0
# After clustering, on the driver and one worker: evaluation and timelines read every segment once (assumed
# as long as the clustering itself), plus labelling (<= labels.max_requests Gemini calls), report and reel.
ASSUMED_POST_FIXED_MIN = 15.0
ASSUMED_POST_OVER_CLUSTERING = 1.0
# Ray's autoscaler keeps at most max(5, upscaling_speed x running nodes of a type) of that type pending.
RAY_MIN_LAUNCH_BATCH = 5

# Which benchmark row stands for each encoder of the estimate (the default models).
BENCH_MODEL = {"dinov2_frames_per_s": "dinov2-small", "vjepa2_windows_per_s": "vjepa2-vitl", "owlv2_frames_per_s": "owlv2"}


@dataclass
class Estimate:
    hours: float
    node: NodeType
    nodes: int
    encoders: list[str]
    footage_hours_per_node_hour: float
    bottleneck: str
    node_hours: float  # GPU worker hours: the clips, plus the clustering task
    wall_hours: float  # the clips on `nodes` workers, then the clustering task
    usd: float  # workers + head
    usd_per_footage_hour: float
    head: NodeType | None = None
    head_hours: float = 0.0
    head_usd: float = 0.0
    segments: int = 0
    clustering_hours: float = 0.0
    sources: dict[str, str] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    decode_scale: float = 1.0  # the footage's decode work over the benchmark clip's (probed sample), 1.0 unprobed
    decode_core_hours: float = 0.0  # CPU core-hours spent decoding the footage (part of node_hours' CPU work)
    sample: list[str] = field(default_factory=list)  # the clips probed for decode_scale
    cpu_node: NodeType | None = None  # CPU workers beside the GPU ones (cluster configs' cpu_worker)
    cpu_nodes: int = 0
    cpu_node_hours: float = 0.0
    cluster_footage_hours_per_hour: float = 0.0  # the whole cluster's rate: min(GPU capacity, CPU capacity of all workers)
    setup_hours: float = 0.0  # wall time of node boot + image pull, in the autoscaler's launch waves
    idle_hours: float = 0.0  # each worker's idle timeout after the stream (billed)
    post_hours: float = 0.0  # after clustering: evaluation, timelines, labelling, report

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["node"] = asdict(self.node)
        d["head"] = asdict(self.head) if self.head else None
        d["cpu_node"] = asdict(self.cpu_node) if self.cpu_node else None
        return d


@dataclass(frozen=True)
class Overheads:
    """Minutes a cluster spends around the clips (see the ASSUMED_* figures); ``sources`` says where each came from."""

    boot_min: float
    pull_min: float
    idle_min: float
    post_fixed_min: float = ASSUMED_POST_FIXED_MIN
    # Steps after clustering as a multiple of the clustering time; None: measured (scale.json) where
    # there is one, else ASSUMED_POST_OVER_CLUSTERING.
    post_over_clustering: float | None = None
    upscaling_speed: float = 1.0
    sources: dict[str, str] = field(default_factory=dict)

    @classmethod
    def assumed(cls, provider: str = "", idle_min: float | None = None, upscaling_speed: float = 1.0) -> Overheads:
        boot = ASSUMED_BOOT_MIN.get(provider, ASSUMED_BOOT_MIN[""])
        src = {"boot": f"assumed: {boot:g} min from instance start to joining Ray ({provider or 'any provider'})",
               "image_pull": f"assumed: {ASSUMED_IMAGE_PULL_MIN:g} min to pull and unpack the ~6 GB GPU image",
               "idle": (f"given: idle_timeout_minutes {idle_min:g} of the cluster config" if idle_min is not None
                        else "assumed: 10 min idle timeout (Ray's launcher default 5; the shipped configs say 10)"),
               "post": f"assumed: {ASSUMED_POST_FIXED_MIN:g} min (labelling, report, reel) + as long again as the clustering"}
        return cls(boot, ASSUMED_IMAGE_PULL_MIN, 10.0 if idle_min is None else idle_min, upscaling_speed=upscaling_speed, sources=src)


def launch_waves(workers: int, upscaling_speed: float = 1.0) -> int:
    """How many rounds Ray's autoscaler needs to launch ``workers`` nodes of one type: at most
    max(5, upscaling_speed x nodes of that type running) pending at once (ResourceDemandScheduler).
    A round is counted as one node boot + image pull; work the first nodes do meanwhile is not credited."""
    running, waves = 0, 0
    while running < workers:
        running += min(workers - running, max(RAY_MIN_LAUNCH_BATCH, int(upscaling_speed * max(running, 1))))
        waves += 1
    return waves


@dataclass(frozen=True)
class WorkerType:
    name: str  # the config's node type name (gpu_worker, cpu_worker)
    node: NodeType
    max_workers: int


@dataclass(frozen=True)
class ClusterSpec:
    """The node types and limits of a Ray cluster-launcher config, as the estimate prices them."""

    path: str
    provider: str
    head: NodeType | None
    workers: tuple[WorkerType, ...]
    max_workers: int
    idle_timeout_min: float
    upscaling_speed: float


def load_cluster(path: str | Path) -> ClusterSpec:
    """Read a cluster-launcher YAML (``cluster_configs/aws.yaml``, ``gcp.yaml``).

    Raises ValueError naming the file and the fix when it is not one, or names a machine type
    this table has no price for.
    """
    import yaml

    p = Path(path)
    try:
        cfg = yaml.safe_load(p.read_text())
        provider = str(cfg["provider"]["type"])
        types = cfg["available_node_types"]
        head_type = cfg["head_node_type"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise ValueError(f"{p}: not a Ray cluster-launcher config ({exc.__class__.__name__}: {exc}); pass "
                         "cluster_configs/aws.yaml or gcp.yaml (for KubeRay, --node with your node pool's machine type)") from None
    key = {"aws": "InstanceType", "gcp": "machineType"}.get(provider)
    if key is None:
        raise ValueError(f"{p}: provider {provider!r} has no price table here; use --node and --price")

    def node_of(name: str) -> NodeType:
        full = f"{provider}-{types[name].get('node_config', {}).get(key)}"
        if name == head_type:
            if HEADS.get(provider) and HEADS[provider].name == f"{full} (head)":
                return HEADS[provider]
            raise ValueError(f"{p}: the head is {full}, which has no price here; add it to HEADS in handclust/prices.py")
        if full not in NODES:
            raise ValueError(f"{p}: node type {name} is {full}, which has no price here; add it to handclust/prices.py "
                             f"or estimate with --node and --price")
        return NODES[full]

    workers = tuple(WorkerType(n, node_of(n), int(t.get("max_workers", 0))) for n, t in types.items() if n != head_type)
    return ClusterSpec(str(p), provider, node_of(head_type), workers, int(cfg.get("max_workers", sum(w.max_workers for w in workers))),
                       float(cfg.get("idle_timeout_minutes", 5)), float(cfg.get("upscaling_speed", 1.0)))



def rates_path(name: str) -> str:
    """Where a measured rate was read, as the estimate reports it: ``handclust/rates/<name> (packaged)``
    or the file under ``HANDCLUST_RATES_DIR``."""
    return f"handclust/rates/{name} (packaged)" if RESULTS == PACKAGED_RATES else str(RESULTS / name)


def _load(name: str) -> dict[str, Any] | None:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.is_file() else None


def cpu_rate(sources: dict[str, str]) -> float:
    """Footage hours per core-hour for decode + CPU features on the benchmark's clip (measured where possible)."""
    bench = _load("throughput_cpu.json")
    if bench and "pipeline_per_clip" in bench:
        cores = max(1, int(bench.get("machine", {}).get("cpus") or 1))
        # The single-process pipeline uses about one core for features plus decoder threads.
        rate = float(bench["pipeline_per_clip"]["x_realtime"]) / min(cores, 2)
        sources["cpu"] = f"measured: {rates_path('throughput_cpu.json')} ({rate:.1f} x real time per core)"
    else:
        rate = ASSUMED_CPU_X_REALTIME_PER_CORE
        sources["cpu"] = f"assumed: {ASSUMED_CPU_X_REALTIME_PER_CORE} x real time per core"
    return rate


def efficientnet_core_hours(scene_fps: float, sources: dict[str, str]) -> float:
    """Core-hours EfficientNet-Lite0 adds per footage hour at ``scene_fps`` embedded frames per second,
    beyond the CPU pipeline the throughput benchmark measured (0 when that benchmark already ran it)."""
    bench = _load("throughput_cpu.json") or {}
    if bench.get("scene_encoder") == "efficientnet":
        sources["efficientnet"] = "measured: part of throughput_cpu.json's pipeline (its scene encoder)"
        return 0.0
    eff = _load("efficientnet_cpu.json") or {}
    s = eff.get("default_ms_per_frame")
    if s is not None:
        s = float(s) / 1000
        sources["efficientnet"] = (f"measured: efficientnet_cpu.json ({1000 * s:.0f} ms a frame on one core) x {scene_fps:g} "
                                   "frames/s, counted on CPU (an upper bound on a GPU node, where scene.device=auto runs it on the GPU)")
    else:
        s = ASSUMED_EFFICIENTNET_S_PER_FRAME
        sources["efficientnet"] = f"assumed: {1000 * s:.0f} ms a frame on one core x {scene_fps:g} frames/s, counted on CPU"
    return scene_fps * s  # (3600 * fps frames x s core-seconds) / 3600 per footage hour


def decode_share(sources: dict[str, str]) -> float:
    """The share of the per-clip CPU time spent decoding (benchmark stage split, else assumed)."""
    bench = _load("throughput_cpu.json") or {}
    # CPU seconds per stage where the benchmark measured them (decode runs on several threads, so its
    # wall seconds understate its share), else the stages' wall seconds.
    key = "stage_cpu_seconds" if bench.get("stage_cpu_seconds") else "stage_seconds"
    stages = bench.get(key) or {}
    total = sum(float(v) for v in stages.values() if isinstance(v, int | float))
    if "decode" in stages and total > 0:
        share = float(stages["decode"]) / total
        sources["decode_share"] = f"measured: throughput_cpu.json {key} ({100 * share:.0f} % of CPU time decoding)"
        return share
    sources["decode_share"] = f"assumed: {100 * ASSUMED_DECODE_SHARE:.0f} % of CPU time decoding"
    return ASSUMED_DECODE_SHARE


@dataclass(frozen=True)
class SourceClip:
    """What a probed clip costs to decode: every source frame is decoded, whatever the sample rate."""

    path: str
    width: int
    height: int
    fps: float
    codec: str

    def decode_work(self) -> float:
        """Pixels per second of footage, weighted by the codec's decode cost per pixel against H.264."""
        return self.width * self.height * self.fps * CODEC_DECODE_COST.get(self.codec.lower(), max(CODEC_DECODE_COST.values()))


def bench_clip() -> SourceClip:
    """The clip the CPU rate was measured on (``throughput_cpu.json``'s ``clip``), else the assumed one."""
    clip = (_load("throughput_cpu.json") or {}).get("clip") or {}
    try:
        w, h = (int(v) for v in str(clip["size"]).lower().split("x"))
        return SourceClip(rates_path("throughput_cpu.json"), w, h, float(clip["source_fps"]), str(clip.get("codec", "h264")))
    except (KeyError, ValueError):
        a = ASSUMED_BENCH_CLIP
        return SourceClip("assumed", int(a["width"]), int(a["height"]), float(a["fps"]), str(a["codec"]))


def probe_sample(footage: str | Path, n: int = 5) -> list[SourceClip]:
    """Probe up to ``n`` clips spread evenly over a folder or manifest (sorted by path) for size, rate, codec.

    Raises ValueError naming the clips when none of the sampled ones can be read.
    """
    import numpy as np

    from handclust.io.footage import FootageError, find_clips
    from handclust.io.video import VideoError, probe

    try:
        clips = find_clips(footage, r"(?!)")
    except FootageError as exc:
        raise ValueError(str(exc)) from None
    picks = sorted({int(i) for i in np.linspace(0, len(clips) - 1, min(n, len(clips))).round()})
    out, errors = [], []
    for i in picks:
        try:
            info = probe(clips[i].path)
        except VideoError as exc:
            errors.append(str(exc))
            continue
        out.append(SourceClip(clips[i].path, info.width, info.height, info.source_fps, info.codec or "unknown"))
    if not out:
        raise ValueError(f"--sample {footage}: none of the {len(picks)} sampled clips could be probed: " + "; ".join(errors[:3]))
    return out


def decode_scale(sample: list[SourceClip], sources: dict[str, str]) -> float:
    """Mean decode work of the ``sample`` clips over the benchmark clip's (1.0: same size, rate and codec)."""
    ref = bench_clip()
    scale = sum(c.decode_work() for c in sample) / len(sample) / ref.decode_work()
    seen = ", ".join(f"{Path(c.path).name} {c.width}x{c.height} {c.fps:g} fps {c.codec}" for c in sample)
    unknown = sorted({c.codec for c in sample if c.codec.lower() not in CODEC_DECODE_COST})
    sources["decode"] = (f"x{scale:.2f} the benchmark clip's decode work ({ref.width}x{ref.height} {ref.fps:g} fps {ref.codec}); "
                         f"probed {len(sample)} clips: {seen}; codec costs against h264 assumed"
                         + (f"; unknown codec {', '.join(unknown)} counted as the dearest listed" if unknown else ""))
    return scale


def gpu_matches(gpu: str, device_name: str | None) -> bool:
    """Whether ``device_name`` (as torch names it: "NVIDIA L4", "Tesla T4") is the GPU ``gpu``."""
    pattern = GPU_NAMES.get(gpu, re.escape(gpu))
    return bool(device_name) and re.search(pattern, str(device_name), re.IGNORECASE) is not None


def _measured_rate(key: str, row: dict[str, Any]) -> float | None:
    value = row.get("value")
    if not isinstance(value, int | float) or value <= 0:
        return None
    if key == "vjepa2_windows_per_s":
        # benchmarks/encoders.py writes windows/s; older results (unit segments/s) carry windows_per_s.
        per_window = row.get("windows_per_s", value if row.get("unit") == "windows/s" else None)
        return float(per_window) if isinstance(per_window, int | float) and per_window > 0 else None
    return float(value)


def registered_cost_keys() -> tuple[str, ...]:
    """Every cost key a registered modality declares (``Modality.cost``; a key chosen by the config, as
    scene's efficientnet / dinov2, is named by the built-in table instead)."""
    from handclust.modalities import registry

    return tuple(dict.fromkeys(m.cost for m in registry.registered() if isinstance(m.cost, str)))


def gpu_rates(gpu: str, sources: dict[str, str]) -> dict[str, float]:
    """Encoder rates on ``gpu``: measured where ``benchmarks/results/encoders_*.json`` ran on it (as
    benchmarks/encoders.py writes them: ``device: cuda``, the GPU's name under ``gpu``, a
    ``results`` list with one row per model), assumed otherwise."""
    out = {k: v[gpu] for k, v in ASSUMED_GPU.items() if gpu in v}
    for k in out:
        sources[k] = f"assumed for {gpu} (run benchmarks/encoders.py --device cuda on it to measure)"
    bench_model = {**BENCH_MODEL, **{f"{e}_frames_per_s": e for e in registered_cost_keys() if f"{e}_frames_per_s" not in BENCH_MODEL}}
    for p in sorted(RESULTS.glob("encoders_*.json")) if RESULTS.is_dir() else []:
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if data.get("device") != "cuda" or not gpu_matches(gpu, data.get("gpu")):
            continue
        for key, model in bench_model.items():
            rows = [r for r in data.get("results", []) if str(r.get("model", "")).startswith(model)]
            rate = _measured_rate(key, rows[0]) if rows else None
            if rate is not None:
                out[key] = rate
                sources[key] = f"measured: {p.name} ({data['gpu']}, {rows[0].get('model')}, {rows[0].get('dtype', data.get('dtype'))})"
    return out


def _scale_runs(widths: str) -> list[dict[str, Any]]:
    """``scale.json``'s measured rows at ``widths`` ([] without the file)."""
    scale = RESULTS / "scale.json"
    try:
        runs = json.loads(scale.read_text()).get("runs", {}) if scale.is_file() else {}
    except (OSError, ValueError):
        return []
    return list(runs.get(widths, [])) if isinstance(runs, dict) else []


def _scale_where() -> str:
    return f"{RESULTS.name}/scale.json" if RESULTS != PACKAGED_RATES else "handclust/rates/scale.json (packaged)"


def after_clustering_seconds(segments: int, widths: str = "gpu") -> float | None:
    """Seconds of the post-stream steps other than the clustering (ledger, compaction, 2-D map,
    ablations, evaluation, timelines, report) for ``segments`` segments: ``scale.json``'s largest
    row at ``widths``, scaled linearly (ablations run on a capped sample, so this overstates them).
    None without ``scale.json``."""
    rows = [r for r in _scale_runs(widths) if "segments" in r and "post_stream_s" in r
            and ((r.get("steps") or {}).get("clustering") or {}).get("s")]
    if not rows:
        return None
    top = max(int(r["segments"]) for r in rows)
    rest = min(float(r["post_stream_s"]) - float(r["steps"]["clustering"]["s"]) for r in rows if int(r["segments"]) == top)
    return max(rest, 0.0) * max(segments, 1) / top


def clustering_seconds(segments: int, sources: dict[str, str], widths: str = "gpu") -> float:
    """Seconds of the clustering step (read and fuse the descriptors, HDBSCAN, kNN, assignment,
    temporal model) of ``segments`` segments on one node, at the descriptor ``widths`` of the run
    (``gpu``: the GPU job config's learned encoders, 1,885 dims; ``default``: the CPU defaults).

    From ``scale.json`` (``benchmarks/scale.py``: the post-stream path measured on a 2-core machine
    with CPU backends): per size the fastest row of those widths (rows measured under load only run
    slower), interpolated on log-log axes; beyond the largest size, grown as ``n ** e`` with ``e``
    the growth between the two largest sizes and never below 1 (no economy of scale is assumed). A
    2-core CPU figure is an upper bound for a GPU worker (16 vCPUs, cuML), which is not measured.
    Without ``scale.json``: ``clustering_*.json`` (fuse + HDBSCAN of narrow descriptors only)."""
    import numpy as np

    best: dict[int, float] = {}
    for r in _scale_runs(widths):
        t = ((r.get("steps") or {}).get("clustering") or {}).get("s")
        if "segments" in r and t:
            best[int(r["segments"])] = min(float(t), best.get(int(r["segments"]), float("inf")))
    if len(best) >= 2:
        n = np.array(sorted(best), float)
        t = np.array([best[int(k)] for k in n], float)
        e = max(1.0, float(np.log(t[-1] / t[-2]) / np.log(n[-1] / n[-2])))
        if segments <= n[-1]:
            sec = float(np.exp(np.interp(np.log(max(segments, 1)), np.log(n), np.log(t))))
            how = f"interpolated between {int(n[0]):,} and {int(n[-1]):,} segments"
        else:
            sec = float(t[-1] * (segments / n[-1]) ** e)
            how = f"grown as n^{e:.2f} beyond {int(n[-1]):,} segments"
        sources["clustering"] = (f"measured on a 2-core CPU with CPU backends at the {widths} widths: {_scale_where()}, {how}; "
                                 "an upper bound for a GPU worker (more cores, cuML), which is not measured")
        return sec
    rows: list[tuple[int, float]] = []
    name = ""
    for p in sorted(RESULTS.glob("clustering_*.json")) if RESULTS.is_dir() else []:
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        got = [(int(r["segments"]), float(r["total_s"])) for r in data.get("rows", []) if "segments" in r and "total_s" in r]
        if got:
            rows, name = sorted(got), p.name
            break
    if not rows:
        sources["clustering"] = f"assumed: {ASSUMED_CLUSTER_S_PER_SEGMENT * 1e3:g} ms per segment"
        return segments * ASSUMED_CLUSTER_S_PER_SEGMENT
    n = np.array([r[0] for r in rows], float)
    t = np.array([r[1] for r in rows], float)
    sec = float(np.interp(segments, n, t)) if segments <= n[-1] else float(t[-1] * segments / n[-1])
    how = "interpolated" if segments <= n[-1] else f"scaled linearly beyond {int(n[-1])} segments"
    sources["clustering"] = (f"measured on CPU: {name} ({how}; fuse + HDBSCAN of narrow descriptors only, "
                             "without scale.json's whole clustering step)")
    return sec


def _default_window_s(sample_fps: float) -> float:
    """Footage one V-JEPA-2 window covers at the default video settings (16 sampled frames: 3.2 s at 5 fps)."""
    from handclust.config import VideoConfig
    from handclust.modalities.encoders.vjepa2 import window_seconds

    return window_seconds(VideoConfig(), sample_fps)


def estimate(hours: float, node: str | NodeType = "aws-g6.xlarge", nodes: int = 1, encoders: tuple[str, ...] = ("dinov2",),
             sample_fps: float = 5.0, tool_fps: float = 1.0, mean_segment_s: float = 8.0,
             usd_per_hour: float | None = None, head: bool | NodeType = True, sample: list[SourceClip] | None = None,
             video_window_s: float | None = None, cpu_node: str | NodeType | None = None, cpu_nodes: int = 0,
             overheads: Overheads | None = None, scene_fps: float = 1.0) -> Estimate:
    """Cost and wall time of ``hours`` of footage on ``nodes`` GPU workers of type ``node``, plus the
    CPU head (``head``: True for the provider's, or a :class:`NodeType`) and the clustering task on one worker.

    ``cpu_node`` x ``cpu_nodes``: CPU workers beside them, taking CPU work (decode, flow, pose) off the
    GPU workers; the cluster's rate is then min(GPU capacity, CPU capacity of all workers).
    ``overheads``: count node boot, image pull, idle timeout and post-processing (none: the clips and
    the clustering only, as run.json compares a finished run with).

    ``node``: a name of :data:`NODES`, or a :class:`NodeType` (e.g. :func:`local_node`; a node with
    no GPU counts no GPU encoder time and says so). ``sample``: probed clips of the footage
    (:func:`probe_sample`); decode time scales with their pixels per second and codec against the
    benchmark's clip, the rest of the CPU work does not (it runs on frames already scaled down).
    ``efficientnet`` among ``encoders`` adds its CPU time at ``scene_fps`` embedded frames per second.
    """
    if isinstance(node, str) and node not in NODES:
        raise ValueError(f"unknown node type {node!r}; choose one of: {', '.join(NODES)}")
    if hours <= 0 or nodes < 1:
        raise ValueError("hours must be > 0 and nodes >= 1")
    nt = NODES[node] if isinstance(node, str) else node
    if usd_per_hour is not None:
        nt = NodeType(nt.name, nt.gpu, nt.gpus, nt.vcpus, usd_per_hour)
    sources: dict[str, str] = {"price": "given" if usd_per_hour is not None else "on-demand list price (check your region)"}
    base = cpu_rate(sources)  # footage hours per core-hour on the benchmark's clip
    share = decode_share(sources)
    scale = decode_scale(sample, sources) if sample else 1.0
    cpu_core_hours = (share * scale + 1.0 - share) / base  # per footage hour
    if "efficientnet" in encoders:
        cpu_core_hours += efficientnet_core_hours(scene_fps, sources)
    rates = {"cpu": nt.vcpus / cpu_core_hours}  # footage hours per node hour
    g = gpu_rates(nt.gpu, sources) if nt.gpus > 0 else {}
    per_footage_hour = {"dinov2": ("dinov2_frames_per_s", 3600 * sample_fps),
                        "vjepa2": ("vjepa2_windows_per_s", 3600 / (video_window_s or _default_window_s(sample_fps))),
                        "owlv2": ("owlv2_frames_per_s", 3600 * tool_fps)}
    # A registered modality's own cost key (Modality.cost): a GPU encoder embedding every sampled frame, at
    # `<key>_frames_per_s` where ASSUMED_GPU or a benchmark (encoders_*.json, a row whose model starts with it) has one.
    plugins = [e for e in registered_cost_keys() if e not in per_footage_hour and e != "efficientnet"]
    per_footage_hour.update({e: (f"{e}_frames_per_s", 3600 * sample_fps) for e in plugins})
    gpu_seconds = 0.0
    for enc in encoders:
        if enc == "efficientnet":  # CPU work, counted above
            continue
        if enc not in per_footage_hour:
            raise ValueError(f"unknown encoder {enc!r}; choose from {sorted([*per_footage_hour, 'efficientnet'])}")
        key, items = per_footage_hour[enc]
        if nt.gpus == 0:
            sources[enc] = f"not counted: {nt.name} has no GPU (this estimate models {enc} on a GPU only)"
            continue
        if key not in g:
            sources[enc] = (f"not counted: no rate for {enc} on {nt.gpu} (measure it with benchmarks/encoders.py, a row "
                            f"whose model starts with {enc!r}, or add {key!r} to handclust.cost.ASSUMED_GPU)")
            continue
        gpu_seconds += items / g[key]
    if gpu_seconds > 0:
        rates["gpu"] = 3600 * nt.gpus / gpu_seconds
    used = {per_footage_hour[e][0] for e in encoders if e in per_footage_hour}
    rate_keys = {*ASSUMED_GPU, *(v[0] for v in per_footage_hour.values())}
    sources = {k: v for k, v in sources.items() if k not in rate_keys or k in used}
    bottleneck = min(rates, key=rates.__getitem__)
    rate = rates[bottleneck]
    cpu_nt = NODES[cpu_node] if isinstance(cpu_node, str) else cpu_node
    if cpu_nt is not None and cpu_nt.gpus and cpu_nodes:
        raise ValueError(f"cpu_node {cpu_nt.name} has a GPU: pass it as node, not as a CPU worker")
    cpu_nodes = cpu_nodes if cpu_nt is not None else 0
    cpu_worker_rate = base / (share * scale + 1.0 - share) * cpu_nt.vcpus if cpu_nt is not None else 0.0
    capacity = {"cpu": rates["cpu"] * nodes + cpu_worker_rate * cpu_nodes}
    if "gpu" in rates:
        capacity["gpu"] = rates["gpu"] * nodes
    cluster_rate = min(capacity.values())
    if cpu_nodes:
        bottleneck = min(capacity, key=capacity.__getitem__)
    segments = int(round(hours * 3600 / mean_segment_s))
    # The learned encoders' descriptors (DINOv2 768-d, V-JEPA-2 1,024-d) make the clustering step's
    # input ~13x wider than the CPU defaults'; scale.json measures both.
    widths = "gpu" if {"dinov2", "vjepa2"} & set(encoders) else "default"
    cluster_h = clustering_seconds(segments, sources, widths) / 3600
    stream_h = hours / cluster_rate
    oh = overheads
    waves = max(launch_waves(nodes, oh.upscaling_speed), launch_waves(cpu_nodes, oh.upscaling_speed)) if oh else 0
    setup_h = waves * (oh.boot_min + oh.pull_min) / 60 if oh else 0.0
    idle_h = oh.idle_min / 60 if oh else 0.0
    after_s = after_clustering_seconds(segments, widths) if oh and oh.post_over_clustering is None else None
    if after_s is not None:
        post_h = oh.post_fixed_min / 60 + after_s / 3600
    elif oh:
        ratio = ASSUMED_POST_OVER_CLUSTERING if oh.post_over_clustering is None else oh.post_over_clustering
        post_h = oh.post_fixed_min / 60 + ratio * cluster_h
    else:
        post_h = 0.0
    if oh:
        sources.update(oh.sources)
        if after_s is not None:
            sources["post"] = (f"assumed: {oh.post_fixed_min:g} min (labelling, report, reel); measured: the other "
                               f"post-stream steps (ablations, evaluation, timelines, map, report) from {_scale_where()}, "
                               f"{widths} widths, scaled linearly from its largest row")
    per_node_setup_h = (oh.boot_min + oh.pull_min) / 60 if oh else 0.0
    # Each worker: its own boot and pull, the stream, its idle timeout; one GPU worker also runs the
    # clustering task and stays up for the post-processing's Ray tasks (the head takes no work).
    node_hours = nodes * (per_node_setup_h + stream_h + idle_h) + cluster_h + post_h
    cpu_node_hours = cpu_nodes * (per_node_setup_h + stream_h + idle_h)
    wall = setup_h + stream_h + cluster_h + post_h
    head_nt = head if isinstance(head, NodeType) else (HEADS.get(nt.name.split("-", 1)[0]) if head else None)
    head_hours = wall if head_nt else 0.0
    head_usd = head_hours * head_nt.usd_per_hour if head_nt else 0.0
    if head_nt:
        sources["head"] = f"{head_nt.name}, on-demand list price, up for the whole run"
    usd = node_hours * nt.usd_per_hour + (cpu_node_hours * cpu_nt.usd_per_hour if cpu_nt else 0.0) + head_usd
    return Estimate(hours, nt, nodes, list(encoders), rate, bottleneck, node_hours, wall, usd, usd / hours,
                    head_nt, head_hours, head_usd, segments, cluster_h, sources, rates,
                    scale, hours / base * share * scale, [c.path for c in sample or []],
                    cpu_nt if cpu_nodes else None, cpu_nodes, cpu_node_hours, cluster_rate, setup_h, idle_h, post_h)


@dataclass
class Recommendation:
    """The mix :func:`recommend` chose, whether it meets the goal, and the best mix of each worker type."""

    goal: str  # "deadline 48 h" / "budget $5,000"
    meets: bool
    best: Estimate
    alternatives: list[Estimate]
    cluster: ClusterSpec
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"goal": self.goal, "meets": self.meets, "note": self.note, "config": self.cluster.path,
                "best": self.best.to_dict(), "alternatives": [e.to_dict() for e in self.alternatives]}


def recommend(hours: float, cluster: ClusterSpec, encoders: tuple[str, ...] = ("dinov2",), deadline_h: float | None = None,
              budget_usd: float | None = None, overheads: Overheads | None = None, **kw: Any) -> Recommendation:
    """The worker mix of ``cluster`` for ``hours`` of footage: the cheapest that finishes within
    ``deadline_h``, or the fastest that costs at most ``budget_usd`` (exactly one of the two).

    Every worker type may serve as the main one (GPU types only when an encoder needs a GPU), 1 to its
    ``max_workers`` nodes, with or without as many CPU workers as balance its GPU capacity, all within
    the config's ``max_workers``. Node boot, image pull, idle timeout, clustering and post-processing
    are counted (``overheads``, by default :meth:`Overheads.assumed` for the config's provider).
    """
    if (deadline_h is None) == (budget_usd is None):
        raise ValueError("recommend needs exactly one of a deadline (--deadline-h) or a budget (--budget-usd)")
    if (deadline_h is not None and deadline_h <= 0) or (budget_usd is not None and budget_usd <= 0):
        raise ValueError("the deadline and the budget must be > 0")
    oh = overheads or Overheads.assumed(cluster.provider, cluster.idle_timeout_min, cluster.upscaling_speed)
    needs_gpu = bool(encoders)
    mains = [w for w in cluster.workers if w.node.gpus > 0 or not needs_gpu]
    if not mains:
        raise ValueError(f"{cluster.path}: no worker type has a GPU, and the encoders {', '.join(encoders)} need one "
                         "(estimate with --encoders none, or use a config with GPU workers)")
    cpu_types = [w for w in cluster.workers if w.node.gpus == 0]
    found: list[Estimate] = []
    for main in mains:
        for n in range(1, min(main.max_workers, cluster.max_workers) + 1):
            alone = estimate(hours, main.node, n, encoders, head=cluster.head or False, overheads=oh, **kw)
            found.append(alone)
            if not (main.node.gpus and "gpu" in alone.rates and alone.rates["cpu"] < alone.rates["gpu"]):
                continue
            for c in cpu_types:  # as many CPU workers as lift the CPU capacity to the GPUs'
                per = estimate(hours, c.node, 1, (), head=False, **kw).rates["cpu"]
                k = min(c.max_workers, cluster.max_workers - n, math.ceil(n * (alone.rates["gpu"] - alone.rates["cpu"]) / per))
                if k > 0:
                    found.append(estimate(hours, main.node, n, encoders, head=cluster.head or False, overheads=oh,
                                          cpu_node=c.node, cpu_nodes=k, **kw))
    if deadline_h is not None:
        goal, ok = f"deadline {deadline_h:g} h", [e for e in found if e.wall_hours <= deadline_h]
        pick = min(ok, key=lambda e: (e.usd, e.wall_hours)) if ok else min(found, key=lambda e: (e.wall_hours, e.usd))
    else:
        goal, ok = f"budget ${budget_usd:,.0f}", [e for e in found if e.usd <= budget_usd]
        pick = min(ok, key=lambda e: (e.wall_hours, e.usd)) if ok else min(found, key=lambda e: (e.usd, e.wall_hours))
    note = "" if ok else (f"no mix within {cluster.path}'s max_workers meets the {goal}: "
                          + ("the fastest is shown" if deadline_h is not None else "the cheapest is shown"))
    best_of: dict[str, Estimate] = {}
    for e in found:  # the best of each main worker type under the same rule, for comparison
        name = e.node.name
        cand = best_of.get(name)
        better = ((e.wall_hours <= deadline_h, -e.usd, -e.wall_hours) if deadline_h is not None
                  else (e.usd <= budget_usd, -e.wall_hours, -e.usd))
        if cand is None or better > ((cand.wall_hours <= deadline_h, -cand.usd, -cand.wall_hours) if deadline_h is not None
                                     else (cand.usd <= budget_usd, -cand.wall_hours, -cand.usd)):
            best_of[name] = e
    alts = [e for name, e in best_of.items() if e is not pick]
    return Recommendation(goal, bool(ok), pick, alts, cluster, note)


def _mix(e: Estimate) -> str:
    s = f"{e.nodes} x {e.node.name}"
    return s + (f" + {e.cpu_nodes} x {e.cpu_node.name}" if e.cpu_node and e.cpu_nodes else "")


def render_recommendation(r: Recommendation) -> str:
    e = r.best
    lines = [f"recommendation for {e.hours:,g} h of footage, {r.goal}, worker types of {r.cluster.path}"
             f" (max_workers {r.cluster.max_workers}):",
             f"  {_mix(e)}  ->  wall {e.wall_hours:.1f} h, ${e.usd:,.0f}" + ("" if r.meets else "   (does NOT meet the goal)")]
    if r.note:
        lines.append(f"  {r.note}")
    lines += ["", render(e), "", "  best mix of each other worker type:"]
    lines += [f"    {_mix(a)}: wall {a.wall_hours:.1f} h, ${a.usd:,.0f}" for a in r.alternatives] or ["    (none)"]
    return "\n".join(lines)


def local_node(cpus: int | None = None, gpus: int = 0) -> NodeType:
    """This machine as a node type: its CPUs, no price (``usd_per_hour`` 0)."""
    import os

    return NodeType("local", "local GPU" if gpus else "none", gpus, int(cpus or os.cpu_count() or 1), 0.0)


def render(e: Estimate) -> str:
    lines = [
        f"{e.hours:g} h of footage on {e.nodes} x {e.node.name} ({e.node.gpus} x {e.node.gpu}, {e.node.vcpus} vCPU, "
        f"${e.node.usd_per_hour:.3f}/h), encoders: {', '.join(e.encoders) or 'none'}",
        f"  throughput   {e.footage_hours_per_node_hour:.1f} footage h per node hour (bottleneck: {e.bottleneck}; "
        + ", ".join(f"{k} {v:.1f}" for k, v in e.rates.items()) + ")",
        f"  node hours   {e.node_hours:.1f} {'GPU ' if e.node.gpus else ''}worker"
        + (f" + {e.cpu_node_hours:.1f} CPU worker ({e.cpu_nodes} x {e.cpu_node.name}, ${e.cpu_node.usd_per_hour:.3f}/h)" if e.cpu_node else "")
        + f"   wall time {e.wall_hours:.1f} h"
        + (f"   head {e.head_hours:.1f} h (${e.head_usd:,.0f})" if e.head else "   (no head counted)"),
        f"  wall         {e.setup_hours * 60:.0f} min boot + image pull, {e.hours / e.cluster_footage_hours_per_hour:.1f} h clips "
        f"({e.cluster_footage_hours_per_hour:.1f} footage h per hour), {e.clustering_hours * 60:.0f} min clustering, "
        f"{e.post_hours * 60:.0f} min post-processing; idle timeout {e.idle_hours * 60:.0f} min per worker (billed)"
        if e.setup_hours or e.post_hours else "  wall         clips and clustering only (no boot, pull, idle or post-processing counted)",
        f"  decode       x{e.decode_scale:.2f} the benchmark clip's pixels per second and codec cost, "
        f"{e.decode_core_hours:,.1f} CPU core-hours" + (f" (probed {len(e.sample)} clips)" if e.sample else " (no sample probed: --sample)"),
        f"  clustering   {e.segments:,} segments, {e.clustering_hours * 60:.1f} min as one task on one GPU worker (included)",
        f"  cost         ${e.usd:,.0f}  (${e.usd_per_footage_hour:.2f} per footage hour; workers + head)",
        "  sources:",
    ]
    lines += [f"    {k}: {v}" for k, v in e.sources.items()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- Gemini labelling


# ---------------------------------------------------------------------------------------------- after a run


def measured_compute(wall_s: float, resources: dict[str, float] | None = None, node: str = "local") -> dict[str, Any]:
    """What a run used: wall time, and node / core / GPU hours of the machines it held for that long.

    ``resources``: the Ray cluster's (``CPU``, ``GPU``, ``nodes``) when the Ray runner ran, else this
    machine's CPU count. ``node``: a node type of :data:`NODES` prices the node hours; ``local`` has no price.
    """
    import os

    hours = wall_s / 3600
    if resources:
        where = "ray cluster"
        cpus, gpus, n = float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0)), int(resources.get("nodes", 1) or 1)
    else:
        where, cpus, gpus, n = "this machine", float(os.cpu_count() or 1), 0.0, 1
    nt = NODES.get(node)
    return {"where": where, "node_type": node, "wall_s": wall_s, "nodes": n, "cpus": cpus, "gpus": gpus,
            "node_hours": n * hours, "cpu_hours": cpus * hours, "gpu_hours": gpus * hours,
            "usd": n * hours * nt.usd_per_hour if nt else None,
            "price": (f"{nt.name} on-demand list price x every node (a head counted as a worker: an upper bound)" if nt
                      else "none: set cost.node to a node type of `handclust estimate --list`")}


def run_cost(cfg: Any, footage_hours: float, wall_s: float, resources: dict[str, float] | None = None,
             labelling: dict[str, Any] | None = None) -> dict[str, Any]:
    """run.json's ``cost``: what the run measurably used, what :func:`estimate` says for the same footage
    hours on the same node type, and the labelling spend."""
    measured = measured_compute(wall_s, resources, cfg.cost.node)
    measured["footage_hours"] = footage_hours
    out: dict[str, Any] = {"measured": measured, "labelling": labelling or {"requests": 0, "usd": 0.0}}
    from handclust.modalities import registry
    from handclust.modalities.features.scene import scene_fps

    encs = registry.cost_keys(cfg)  # each computed modality's cost key (Modality.cost)
    node: str | NodeType = cfg.cost.node if cfg.cost.node in NODES else local_node(
        int(measured["cpus"]) if resources else None, int(measured["gpus"]))
    if footage_hours > 0:
        from handclust.modalities.encoders.vjepa2 import window_seconds

        e = estimate(footage_hours, node, max(1, measured["nodes"]), encs, sample_fps=cfg.decode.sample_fps,
                     tool_fps=cfg.tools.fps, head=False, video_window_s=window_seconds(cfg.video, cfg.decode.sample_fps),
                     scene_fps=scene_fps(cfg.scene, "efficientnet") or cfg.decode.sample_fps)
        out["estimated"] = {"node_type": e.node.name, "node_hours": e.node_hours, "wall_s": e.wall_hours * 3600,
                            "usd": e.usd if e.node.usd_per_hour else None, "bottleneck": e.bottleneck,
                            "footage_hours_per_node_hour": e.footage_hours_per_node_hour, "sources": e.sources}
        out["measured_over_estimated_wall"] = wall_s / max(e.wall_hours * 3600, 1e-9)
    else:
        out["estimated"] = None
    return out
