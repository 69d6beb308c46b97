"""What a run over N hours of footage will cost on cloud GPU nodes, before you submit it.

The estimate is a throughput model, not a guess: each node processes footage at the rate of its
slowest resource, CPU (decode + flow + scene features, measured by ``benchmarks/throughput.py``
per core) or GPU (the learned encoders, measured by ``benchmarks/encoders.py`` on that GPU).
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

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


@dataclass(frozen=True)
class NodeType:
    name: str
    gpu: str
    gpus: int
    vcpus: int
    usd_per_hour: float  # on-demand list price; check your provider and region


# On-demand list prices (USD/h, us-east / us-central) as published by the providers; they change.
NODES: dict[str, NodeType] = {n.name: n for n in [
    NodeType("aws-g4dn.xlarge", "T4", 1, 4, 0.526),
    NodeType("aws-g5.xlarge", "A10G", 1, 4, 1.006),
    NodeType("aws-g5.4xlarge", "A10G", 1, 16, 1.624),
    NodeType("aws-g6.xlarge", "L4", 1, 4, 0.805),
    NodeType("aws-g6.4xlarge", "L4", 1, 16, 1.323),
    NodeType("aws-p4d.24xlarge", "A100-40GB", 8, 96, 32.77),
    NodeType("aws-p5.48xlarge", "H100", 8, 192, 98.32),
    NodeType("gcp-g2-standard-8", "L4", 1, 8, 0.854),
    NodeType("gcp-a2-highgpu-1g", "A100-40GB", 1, 12, 3.673),
    NodeType("gcp-a3-highgpu-8g", "H100", 8, 208, 88.25),
]}

# The CPU head node of each provider's cluster config (cluster_configs/aws.yaml, gcp.yaml): driver,
# object store directory, dashboard; up for the whole run. On-demand list prices (USD/h).
HEADS: dict[str, NodeType] = {
    "aws": NodeType("aws-m6i.4xlarge (head)", "none", 0, 16, 0.768),
    "gcp": NodeType("gcp-n2-standard-16 (head)", "none", 0, 16, 0.777),
}

# How benchmarks/encoders.py names a GPU (torch.cuda.get_device_name) for each GPU above.
GPU_NAMES = {"T4": r"\bT4\b", "A10G": r"\bA10G\b", "L4": r"\bL4\b", "A100-40GB": r"\bA100\b(?!.*80GB)", "H100": r"\bH100\b"}

# Encoder throughput per GPU when no benchmark on that GPU exists: deliberately conservative
# figures for half-precision inference (bfloat16 on A10G / L4 / A100 / H100, float16 on the T4,
# which has no bfloat16: what dtype auto picks), to be replaced by `python benchmarks/encoders.py
# --device cuda` on the real GPU.
ASSUMED_GPU = {
    "dinov2_frames_per_s": {"T4": 250.0, "A10G": 600.0, "L4": 550.0, "A100-40GB": 1500.0, "H100": 2500.0},
    "vjepa2_segments_per_s": {"T4": 1.5, "A10G": 4.0, "L4": 3.5, "A100-40GB": 10.0, "H100": 16.0},
    "owlv2_frames_per_s": {"T4": 8.0, "A10G": 20.0, "L4": 18.0, "A100-40GB": 45.0, "H100": 70.0},
}
# CPU cost per footage hour when benchmarks/results has none: 720p30 H.264, 5 fps sampling.
ASSUMED_CPU_X_REALTIME_PER_CORE = 2.5
# Joint clustering seconds per segment when benchmarks/results has no clustering run.
ASSUMED_CLUSTER_S_PER_SEGMENT = 5e-4
# Which benchmark row stands for each encoder of the estimate (the default models).
BENCH_MODEL = {"dinov2_frames_per_s": "dinov2-small", "vjepa2_segments_per_s": "vjepa2-vitl", "owlv2_frames_per_s": "owlv2"}


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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["node"] = asdict(self.node)
        d["head"] = asdict(self.head) if self.head else None
        return d


def _load(name: str) -> dict[str, Any] | None:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.is_file() else None


def cpu_rate(sources: dict[str, str]) -> float:
    """Footage hours per core-hour for decode + CPU features (measured where possible)."""
    bench = _load("throughput_cpu.json")
    if bench and "pipeline_per_clip" in bench:
        cores = max(1, int(bench.get("machine", {}).get("cpus") or 1))
        # The single-process pipeline uses about one core for features plus decoder threads.
        rate = float(bench["pipeline_per_clip"]["x_realtime"]) / min(cores, 2)
        sources["cpu"] = f"measured: benchmarks/results/throughput_cpu.json ({rate:.1f} x real time per core)"
        return rate
    sources["cpu"] = f"assumed: {ASSUMED_CPU_X_REALTIME_PER_CORE} x real time per core"
    return ASSUMED_CPU_X_REALTIME_PER_CORE


def gpu_matches(gpu: str, device_name: str | None) -> bool:
    """Whether ``device_name`` (as torch names it: "NVIDIA L4", "Tesla T4") is the GPU ``gpu``."""
    pattern = GPU_NAMES.get(gpu, re.escape(gpu))
    return bool(device_name) and re.search(pattern, str(device_name), re.IGNORECASE) is not None


def _measured_rate(key: str, row: dict[str, Any], mean_segment_s: float) -> float | None:
    value = row.get("value")
    if not isinstance(value, int | float) or value <= 0:
        return None
    if key == "vjepa2_segments_per_s":
        # The benchmark times 2 s segments (one window each); a mean segment of the estimate needs more.
        from handclust.config import VideoConfig
        from handclust.encoders.vjepa2 import n_windows

        per_window = row.get("windows_per_s")
        if not isinstance(per_window, int | float) or per_window <= 0:
            return float(value)
        return float(per_window) / n_windows(mean_segment_s, VideoConfig())
    return float(value)


def gpu_rates(gpu: str, sources: dict[str, str], mean_segment_s: float = 8.0) -> dict[str, float]:
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
            rate = _measured_rate(key, rows[0], mean_segment_s) if rows else None
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


def estimate(hours: float, node: str = "aws-g6.xlarge", nodes: int = 1, encoders: tuple[str, ...] = ("dinov2",),
             sample_fps: float = 5.0, tool_fps: float = 1.0, mean_segment_s: float = 8.0,
             usd_per_hour: float | None = None, head: bool = True) -> Estimate:
    """Cost and wall time of ``hours`` of footage on ``nodes`` GPU workers of type ``node``, plus the
    CPU head (``head``) and the clustering task on one worker."""
    if node not in NODES:
        raise ValueError(f"unknown node type {node!r}; choose one of: {', '.join(NODES)}")
    if hours <= 0 or nodes < 1:
        raise ValueError("hours must be > 0 and nodes >= 1")
    nt = NODES[node]
    if usd_per_hour is not None:
        nt = NodeType(nt.name, nt.gpu, nt.gpus, nt.vcpus, usd_per_hour)
    sources: dict[str, str] = {"price": "given" if usd_per_hour is not None else "on-demand list price (check your region)"}
    rates = {"cpu": cpu_rate(sources) * nt.vcpus}  # footage hours per node hour
    g = gpu_rates(nt.gpu, sources, mean_segment_s)
    per_footage_hour = {"dinov2": ("dinov2_frames_per_s", 3600 * sample_fps),
                        "vjepa2": ("vjepa2_segments_per_s", 3600 / mean_segment_s),
                        "owlv2": ("owlv2_frames_per_s", 3600 * tool_fps)}
    gpu_seconds = 0.0
    for enc in encoders:
        if enc not in per_footage_hour:
            raise ValueError(f"unknown encoder {enc!r}; choose from {sorted(per_footage_hour)}")
        key, items = per_footage_hour[enc]
        gpu_seconds += items / g[key]
    if gpu_seconds > 0:
        rates["gpu"] = 3600 * nt.gpus / gpu_seconds
    used = {per_footage_hour[e][0] for e in encoders}
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
                    head_nt, head_hours, head_usd, segments, cluster_h, sources, rates)


def render(e: Estimate) -> str:
    lines = [
        f"{e.hours:g} h of footage on {e.nodes} x {e.node.name} ({e.node.gpus} x {e.node.gpu}, {e.node.vcpus} vCPU, "
        f"${e.node.usd_per_hour:.3f}/h), encoders: {', '.join(e.encoders) or 'none'}",
        f"  throughput   {e.footage_hours_per_node_hour:.1f} footage h per node hour (bottleneck: {e.bottleneck}; "
        + ", ".join(f"{k} {v:.1f}" for k, v in e.rates.items()) + ")",
        f"  node hours   {e.node_hours:.1f} GPU worker   wall time {e.wall_hours:.1f} h"
        + (f"   head {e.head_hours:.1f} h (${e.head_usd:,.0f})" if e.head else "   (no head counted)"),
        f"  clustering   {e.segments:,} segments, {e.clustering_hours * 60:.1f} min as one task on one GPU worker (included)",
        f"  cost         ${e.usd:,.0f}  (${e.usd_per_footage_hour:.2f} per footage hour; workers + head)",
        "  sources:",
    ]
    lines += [f"    {k}: {v}" for k, v in e.sources.items()]
    return "\n".join(lines)
