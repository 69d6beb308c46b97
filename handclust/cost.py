"""What a run over N hours of footage will cost on cloud GPU nodes, before you submit it.

The estimate is a throughput model, not a guess: each node processes footage at the rate of its
slowest resource, CPU (decode + flow + scene features, measured by ``benchmarks/throughput.py``
per core) or GPU (the learned encoders, measured by ``benchmarks/encoders.py`` on that GPU).
Every number it uses says where it came from: ``measured`` (a benchmark JSON in
``benchmarks/results/``), or ``assumed`` (a default below, to be replaced by measuring on your
GPU). Prices are on-demand list prices; pass your own (``--price``) for spot or committed rates.
"""

from __future__ import annotations

import json
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

# Encoder throughput per GPU when no benchmark on that GPU exists: deliberately conservative
# figures for bf16 inference, to be replaced by `python benchmarks/encoders.py` on the real GPU.
ASSUMED_GPU = {
    "dinov2_frames_per_s": {"T4": 250.0, "A10G": 600.0, "L4": 550.0, "A100-40GB": 1500.0, "H100": 2500.0},
    "vjepa2_segments_per_s": {"T4": 1.5, "A10G": 4.0, "L4": 3.5, "A100-40GB": 10.0, "H100": 16.0},
    "owlv2_frames_per_s": {"T4": 8.0, "A10G": 20.0, "L4": 18.0, "A100-40GB": 45.0, "H100": 70.0},
}
# CPU cost per footage hour when benchmarks/results has none: 720p30 H.264, 5 fps sampling.
ASSUMED_CPU_X_REALTIME_PER_CORE = 2.5


@dataclass
class Estimate:
    hours: float
    node: NodeType
    nodes: int
    encoders: list[str]
    footage_hours_per_node_hour: float
    bottleneck: str
    node_hours: float
    wall_hours: float
    usd: float
    usd_per_footage_hour: float
    sources: dict[str, str] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["node"] = asdict(self.node)
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


def gpu_rates(gpu: str, sources: dict[str, str]) -> dict[str, float]:
    out = {k: v[gpu] for k, v in ASSUMED_GPU.items() if gpu in v}
    for k in out:
        sources[k] = f"assumed for {gpu} (run benchmarks/encoders.py on it to measure)"
    for p in sorted(RESULTS.glob("encoders_*.json")) if RESULTS.is_dir() else []:
        data = json.loads(p.read_text())
        if gpu.lower() not in json.dumps(data.get("device", "")).lower():
            continue
        for k in ASSUMED_GPU:
            if isinstance(data.get(k), int | float):
                out[k] = float(data[k])
                sources[k] = f"measured: {p.name}"
    return out


def estimate(hours: float, node: str = "aws-g6.xlarge", nodes: int = 1, encoders: tuple[str, ...] = ("dinov2",),
             sample_fps: float = 5.0, tool_fps: float = 1.0, mean_segment_s: float = 8.0,
             usd_per_hour: float | None = None) -> Estimate:
    """Cost and wall time of ``hours`` of footage on ``nodes`` nodes of type ``node``."""
    if node not in NODES:
        raise ValueError(f"unknown node type {node!r}; choose one of: {', '.join(NODES)}")
    if hours <= 0 or nodes < 1:
        raise ValueError("hours must be > 0 and nodes >= 1")
    nt = NODES[node]
    if usd_per_hour is not None:
        nt = NodeType(nt.name, nt.gpu, nt.gpus, nt.vcpus, usd_per_hour)
    sources: dict[str, str] = {"price": "given" if usd_per_hour is not None else "on-demand list price (check your region)"}
    rates = {"cpu": cpu_rate(sources) * nt.vcpus}  # footage hours per node hour
    g = gpu_rates(nt.gpu, sources)
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
    node_hours = hours / rate
    usd = node_hours * nt.usd_per_hour
    return Estimate(hours, nt, nodes, list(encoders), rate, bottleneck, node_hours, node_hours / nodes, usd,
                    usd / hours, sources, rates)


def render(e: Estimate) -> str:
    lines = [
        f"{e.hours:g} h of footage on {e.nodes} x {e.node.name} ({e.node.gpus} x {e.node.gpu}, {e.node.vcpus} vCPU, "
        f"${e.node.usd_per_hour:.3f}/h), encoders: {', '.join(e.encoders) or 'none'}",
        f"  throughput   {e.footage_hours_per_node_hour:.1f} footage h per node hour (bottleneck: {e.bottleneck}; "
        + ", ".join(f"{k} {v:.1f}" for k, v in e.rates.items()) + ")",
        f"  node hours   {e.node_hours:.1f}   wall time {e.wall_hours:.1f} h",
        f"  cost         ${e.usd:,.0f}  (${e.usd_per_footage_hour:.2f} per footage hour), plus clustering (minutes on one GPU)",
        "  sources:",
    ]
    lines += [f"    {k}: {v}" for k, v in e.sources.items()]
    return "\n".join(lines)
