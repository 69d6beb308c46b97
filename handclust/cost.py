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
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from handclust.prices import HEADS, NODES, NodeType

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


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

# Gemini API list prices, USD per million tokens (input incl. images, output incl. thinking), paid
# tier, prompts <= 200k tokens. ASSUMED as published on ai.google.dev/gemini-api/docs/pricing in
# 2025-07 (the last time this table was checked; prices change): pass labels.usd_per_mtok for yours.
GEMINI_USD_PER_MTOK: dict[str, tuple[float, float]] = {
    "gemini-2.5-pro": (1.25, 10.0),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.0-flash-lite": (0.075, 0.30),
}
GEMINI_PRICES_CHECKED = "2025-07"
# Tokens Gemini counts for one image: 258 per 768 x 768 tile (one tile up to 384 px on both sides).
GEMINI_TOKENS_PER_TILE = 258
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["node"] = asdict(self.node)
        d["head"] = asdict(self.head) if self.head else None
        return d


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
        sources["cpu"] = f"measured: benchmarks/results/throughput_cpu.json ({rate:.1f} x real time per core)"
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
        return SourceClip("benchmarks/results/throughput_cpu.json", w, h, float(clip["source_fps"]), str(clip.get("codec", "h264")))
    except (KeyError, ValueError):
        a = ASSUMED_BENCH_CLIP
        return SourceClip("assumed", int(a["width"]), int(a["height"]), float(a["fps"]), str(a["codec"]))


def probe_sample(footage: str | Path, n: int = 5) -> list[SourceClip]:
    """Probe up to ``n`` clips spread evenly over a folder or manifest (sorted by path) for size, rate, codec.

    Raises ValueError naming the clips when none of the sampled ones can be read.
    """
    import numpy as np

    from handclust.footage import FootageError, find_clips
    from handclust.video import VideoError, probe

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


def gpu_rates(gpu: str, sources: dict[str, str]) -> dict[str, float]:
    """Encoder rates on ``gpu``: measured where ``benchmarks/results/encoders_*.json`` ran on it (as
    benchmarks/encoders.py writes them: ``device: cuda``, the GPU's name under ``gpu``, a
    ``results`` list with one row per model), assumed otherwise."""
    out = {k: v[gpu] for k, v in ASSUMED_GPU.items() if gpu in v}
    for k in out:
        sources[k] = f"assumed for {gpu} (run benchmarks/encoders.py --device cuda on it to measure)"
    for p in sorted(RESULTS.glob("encoders_*.json")) if RESULTS.is_dir() else []:
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if data.get("device") != "cuda" or not gpu_matches(gpu, data.get("gpu")):
            continue
        for key, model in BENCH_MODEL.items():
            rows = [r for r in data.get("results", []) if str(r.get("model", "")).startswith(model)]
            rate = _measured_rate(key, rows[0]) if rows else None
            if rate is not None:
                out[key] = rate
                sources[key] = f"measured: {p.name} ({data['gpu']}, {rows[0].get('model')}, {rows[0].get('dtype', data.get('dtype'))})"
    return out


def clustering_seconds(segments: int, sources: dict[str, str]) -> float:
    """Seconds of the joint clustering (fuse, HDBSCAN, kNN) of ``segments`` segments on one node.

    Measured rows of ``benchmarks/results/clustering_*.json`` interpolated; beyond the largest,
    scaled linearly from it (HDBSCAN fits a fixed-size sample there and the rest is a kNN vote).
    """
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
    import numpy as np

    n = np.array([r[0] for r in rows], float)
    t = np.array([r[1] for r in rows], float)
    sec = float(np.interp(segments, n, t)) if segments <= n[-1] else float(t[-1] * segments / n[-1])
    how = "interpolated" if segments <= n[-1] else f"scaled linearly beyond {int(n[-1])} segments"
    sources["clustering"] = f"measured on CPU: {name} ({how}; cuML on the GPU worker is not slower)"
    return sec


def _default_window_s(sample_fps: float) -> float:
    """Footage one V-JEPA-2 window covers at the default video settings (16 sampled frames: 3.2 s at 5 fps)."""
    from handclust.config import VideoConfig
    from handclust.encoders.vjepa2 import window_seconds

    return window_seconds(VideoConfig(), sample_fps)


def estimate(hours: float, node: str | NodeType = "aws-g6.xlarge", nodes: int = 1, encoders: tuple[str, ...] = ("dinov2",),
             sample_fps: float = 5.0, tool_fps: float = 1.0, mean_segment_s: float = 8.0,
             usd_per_hour: float | None = None, head: bool = True, sample: list[SourceClip] | None = None,
             video_window_s: float | None = None, scene_fps: float = 1.0) -> Estimate:
    """Cost and wall time of ``hours`` of footage on ``nodes`` GPU workers of type ``node``, plus the
    CPU head (``head``) and the clustering task on one worker.

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
        gpu_seconds += items / g[key]
    if gpu_seconds > 0:
        rates["gpu"] = 3600 * nt.gpus / gpu_seconds
    used = {per_footage_hour[e][0] for e in encoders if e in per_footage_hour}
    sources = {k: v for k, v in sources.items() if k not in ASSUMED_GPU or k in used}
    bottleneck = min(rates, key=rates.__getitem__)
    rate = rates[bottleneck]
    segments = int(round(hours * 3600 / mean_segment_s))
    cluster_h = clustering_seconds(segments, sources) / 3600
    node_hours = hours / rate + cluster_h
    wall = hours / rate / nodes + cluster_h
    head_nt = HEADS.get(nt.name.split("-", 1)[0]) if head else None
    head_hours = wall if head_nt else 0.0
    head_usd = head_hours * head_nt.usd_per_hour if head_nt else 0.0
    if head_nt:
        sources["head"] = f"{head_nt.name}, on-demand list price, up for the whole run"
    usd = node_hours * nt.usd_per_hour + head_usd
    return Estimate(hours, nt, nodes, list(encoders), rate, bottleneck, node_hours, wall, usd, usd / hours,
                    head_nt, head_hours, head_usd, segments, cluster_h, sources, rates,
                    scale, hours / base * share * scale, [c.path for c in sample or []])


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
        f"  node hours   {e.node_hours:.1f} GPU worker   wall time {e.wall_hours:.1f} h"
        + (f"   head {e.head_hours:.1f} h (${e.head_usd:,.0f})" if e.head else "   (no head counted)"),
        f"  decode       x{e.decode_scale:.2f} the benchmark clip's pixels per second and codec cost, "
        f"{e.decode_core_hours:,.1f} CPU core-hours" + (f" (probed {len(e.sample)} clips)" if e.sample else " (no sample probed: --sample)"),
        f"  clustering   {e.segments:,} segments, {e.clustering_hours * 60:.1f} min as one task on one GPU worker (included)",
        f"  cost         ${e.usd:,.0f}  (${e.usd_per_footage_hour:.2f} per footage hour; workers + head)",
        "  sources:",
    ]
    lines += [f"    {k}: {v}" for k, v in e.sources.items()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- Gemini labelling


def gemini_price(model: str, override: tuple[float, float] | list[float] | None = None) -> tuple[float, float, str]:
    """``(USD per million input tokens, per million output tokens, where from)`` for ``model``.

    A model missing from the table is priced as the dearest one listed, so a budget never undercounts.
    """
    if override is not None:
        return float(override[0]), float(override[1]), "given (labels.usd_per_mtok)"
    known = sorted((k for k in GEMINI_USD_PER_MTOK if model.startswith(k)), key=len, reverse=True)
    if known:
        i, o = GEMINI_USD_PER_MTOK[known[0]]
        return i, o, f"assumed: {known[0]} list price as of {GEMINI_PRICES_CHECKED} (cost.GEMINI_USD_PER_MTOK)"
    dear = max(GEMINI_USD_PER_MTOK, key=lambda k: GEMINI_USD_PER_MTOK[k][1])
    i, o = GEMINI_USD_PER_MTOK[dear]
    return i, o, f"assumed: {model} is not in the price table, priced as {dear} (set labels.usd_per_mtok)"


def gemini_image_tokens(width: int, height: int) -> int:
    """Tokens Gemini counts for one image (258 per 768 x 768 tile; one tile when both sides <= 384 px)."""
    if width <= 384 and height <= 384:
        return GEMINI_TOKENS_PER_TILE
    return GEMINI_TOKENS_PER_TILE * -(-width // 768) * -(-height // 768)


def gemini_usd(input_tokens: int, output_tokens: int, price: tuple[float, float, str]) -> float:
    return (input_tokens * price[0] + output_tokens * price[1]) / 1e6


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
    from handclust.features.scene import scene_encoder, scene_fps

    scene = scene_encoder(cfg.scene).encoder
    encs = tuple(e for e, on in (("efficientnet", scene == "efficientnet"), ("dinov2", scene == "dinov2"), ("vjepa2", cfg.video.enabled),
                                 ("owlv2", cfg.tools.enabled)) if on)
    node: str | NodeType = cfg.cost.node if cfg.cost.node in NODES else local_node(
        int(measured["cpus"]) if resources else None, int(measured["gpus"]))
    if footage_hours > 0:
        from handclust.encoders.vjepa2 import window_seconds

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
