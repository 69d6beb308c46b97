"""Throughput: seconds of footage processed per second of wall time, next to decode-only.

Renders one synthetic clip (or uses --clip), then on the same file in the same process:
  1. decode-only: sample frames at the configured rate with each backend;
  2. per-clip pipeline: decode + motion + scene features + segmentation + descriptors
     (LocalRunner.process_clip, what every clip costs before clustering).
The ratio pipeline / decode is the figure that matters: how far above the decode floor we are.
Writes benchmarks/results/throughput_<host>.json.

    python benchmarks/throughput.py [--clip FILE] [--minutes 1] [--size 1280x720] [--fps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def decode_only(path: Path, backend: str, sample_fps: float, width: int) -> tuple[float, int]:
    from handclust.video import open_video

    t0 = time.perf_counter()
    src = open_video(path, sample_fps=sample_fps, width=width, backend=backend)
    n = sum(len(c.frames) for c in src.chunks())
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "throughput_cpu.json")
    args = ap.parse_args()

    from handclust.config import load_config
    from handclust.footage import find_clips
    from handclust.pipeline import LocalRunner
    from handclust.progress import Progress
    from handclust.storage import OutputStore
    from handclust.synthetic import render_clip
    from handclust.video import probe

    work = Path(tempfile.mkdtemp(prefix="hc-bench-"))
    clip = args.clip
    if clip is None:
        w, h = (int(v) for v in args.size.split("x"))
        clip = work / "01_production_bench.mp4"
        t0 = time.perf_counter()
        render_clip(clip, "production", args.minutes * 60, seed=11, fps=args.fps, size=(w, h))
        print(f"rendered {clip.name} in {time.perf_counter() - t0:.1f} s")
    info = probe(clip)
    cfg = load_config(None, ["progress=false"])
    result: dict[str, object] = {
        "clip": {"duration_s": info.duration_s, "source_fps": info.source_fps, "size": f"{info.width}x{info.height}", "codec": info.codec,
                 "bitrate_mbit_s": round(clip.stat().st_size * 8 / info.duration_s / 1e6, 2)},
        "sample_fps": cfg.decode.sample_fps, "decode_width": cfg.decode.width,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "repeats": args.repeats,
    }
    decode: dict[str, dict[str, float]] = {}
    for backend in ("decord", "pyav"):
        times = []
        for _ in range(args.repeats):
            dt, n = decode_only(clip, backend, cfg.decode.sample_fps, cfg.decode.width)
            times.append(dt)
        best = min(times)
        decode[backend] = {"wall_s": best, "frames": n, "x_realtime": info.duration_s / best}
        print(f"decode-only {backend:7s}: {info.duration_s / best:6.1f} x real time ({n} frames in {best:.2f} s)")
    result["decode_only"] = decode

    times = []
    stages: dict[str, float] = {}
    for _ in range(args.repeats):
        out = OutputStore(work / f"run-{time.time_ns()}")
        runner = LocalRunner(cfg, out, Progress(enabled=False))
        runner._setup()
        c = find_clips([clip], cfg.phase.pattern)[0]
        t0 = time.perf_counter()
        status = runner.process_clip(c)
        times.append(time.perf_counter() - t0)
        assert status["status"] == "ok", status
    best = min(times)
    result["pipeline_per_clip"] = {"wall_s": best, "x_realtime": info.duration_s / best, "backend": cfg.decode.backend}
    floor = decode["decord"]["x_realtime"]
    result["pipeline_over_decode_time"] = float(np.round(best / decode["decord"]["wall_s"], 2))
    print(f"pipeline         : {info.duration_s / best:6.1f} x real time ({best:.2f} s); "
          f"{result['pipeline_over_decode_time']} x the decode-only time (decode floor {floor:.1f} x real time)")
    # Where the time goes: the same stages, timed one by one on the same clip.
    from handclust.pipeline import PIXEL_COLUMNS, concat_batches, frame_batches
    from handclust.video import open_video

    runner = LocalRunner(cfg, OutputStore(work / "stages"), Progress(enabled=False))
    runner._setup()
    d = cfg.decode
    src = open_video(clip, d.sample_fps, d.width, d.chunk_frames, d.backend)
    it = frame_batches(c, cfg, src)
    parts = []
    while True:
        t0 = time.perf_counter()
        batch = next(it, None)
        stages["decode"] = stages.get("decode", 0.0) + time.perf_counter() - t0
        if batch is None:
            break
        for stage in runner.stages:
            t0 = time.perf_counter()
            batch = stage(batch)
            stages[stage.name] = stages.get(stage.name, 0.0) + time.perf_counter() - t0
        parts.append({k: v for k, v in batch.items() if k not in PIXEL_COLUMNS})
    t0 = time.perf_counter()
    runner.describer(concat_batches(parts))
    stages["segments"] = time.perf_counter() - t0
    result["stage_seconds"] = {k: round(v, 3) for k, v in stages.items()}
    print("stage seconds:", result["stage_seconds"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
