"""Throughput: seconds of footage processed per second of wall time, against the decode floor.

Renders one synthetic clip (or uses --clip), then on the same file in the same process, in
interleaved rounds (so load from other jobs hits every variant alike):
  1. decode-only: sample frames at the configured rate with each backend (PyAV, decord);
  2. per-clip pipeline: decode + per-frame features + segmentation + descriptors
     (LocalRunner.process_clip, what every clip costs before clustering), with the defaults and
     with each --variant (config overrides, e.g. "decode.prefetch_chunks=0 pose.fps=2.5").
The figure that matters is ``pipeline_over_fastest_decode``: pipeline speed / the fastest
decode-only backend's speed (1.0 = at the decode floor). Also records the load average, and the
stage seconds of one sequential pass. Writes benchmarks/results/throughput_cpu.json.

    python benchmarks/throughput.py [--clip FILE] [--minutes 1] [--size 1280x720] [--fps 30] [--variant "k=v k=v"]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def decode_only(path: Path, backend: str, sample_fps: float, width: int) -> tuple[float, int]:
    from handclust.io.video import open_video

    t0 = time.perf_counter()
    src = open_video(path, sample_fps=sample_fps, width=width, backend=backend)
    n = sum(len(c.frames) for c in src.chunks())
    return time.perf_counter() - t0, n


def ceiling(decode_wall_s: float, cpu_s: dict[str, float], n_cpu: int) -> float:
    """The best ratio this machine allows: the pipeline cannot finish before decoding alone does, nor
    before all its CPU seconds (decode's, on its own threads, plus every stage's) are spread over
    every core with no idle moment and no other load."""
    return round(decode_wall_s / max(decode_wall_s, sum(cpu_s.values()) / n_cpu), 3)


def pipeline_once(clip: Path, overrides: list[str], work: Path) -> tuple[float, dict]:
    from handclust.config import load_config
    from handclust.io.footage import find_clips
    from handclust.io.storage import OutputStore
    from handclust.pipeline import LocalRunner
    from handclust.progress import Progress

    cfg = load_config(None, ["progress=false", *overrides])
    runner = LocalRunner(cfg, OutputStore(work / f"run-{time.time_ns()}"), Progress(enabled=False))
    runner._setup()
    c = find_clips([clip], cfg.phase.pattern)[0]
    t0 = time.perf_counter()
    status = runner.process_clip(c)
    dt = time.perf_counter() - t0
    assert status["status"] == "ok", status
    return dt, status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variant", action="append", default=[], help="config overrides to time beside the defaults")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "throughput_cpu.json")
    args = ap.parse_args()

    from handclust.config import load_config
    from handclust.io.footage import find_clips
    from handclust.io.storage import OutputStore
    from handclust.io.video import probe
    from handclust.modalities.features.keypoints import HandPoseKeypoints
    from handclust.pipeline import LocalRunner
    from handclust.progress import Progress
    from handclust.synthetic.footage_v1 import render_clip

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
    from handclust.modalities.encoders import scene_encoder

    pose = HandPoseKeypoints(cfg.pose, cfg.decode.sample_fps)
    result: dict[str, object] = {
        "clip": {"duration_s": info.duration_s, "source_fps": info.source_fps, "size": f"{info.width}x{info.height}", "codec": info.codec,
                 "bitrate_mbit_s": round(clip.stat().st_size * 8 / info.duration_s / 1e6, 2)},
        "sample_fps": cfg.decode.sample_fps, "decode_width": cfg.decode.width,
        # handclust.cost adds EfficientNet-Lite0's CPU time to this pipeline's unless it is the encoder that ran here.
        "scene_encoder": scene_encoder(cfg.scene).encoder,
        "defaults": {"decode.prefetch_chunks": cfg.decode.prefetch_chunks, "pose.fps": cfg.pose.fps,
                     "pose.idle_fps": cfg.pose.idle_fps, "keypoints_every_nth_frame": pose.step,
                     "keypoints_every_nth_frame_idle": pose.idle_step},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "load_average_before": list(os.getloadavg()),
        "repeats": args.repeats,
    }
    variants = {"defaults": [], **{v: v.split() for v in args.variant}}
    decode_times: dict[str, list[float]] = {"pyav": [], "decord": []}
    frames: dict[str, int] = {}
    pipe_times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.repeats):
        for backend in decode_times:
            dt, frames[backend] = decode_only(clip, backend, cfg.decode.sample_fps, cfg.decode.width)
            decode_times[backend].append(dt)
        for name, sets in variants.items():
            pipe_times[name].append(pipeline_once(clip, sets, work)[0])
        print(f"round {r + 1}: decode " + ", ".join(f"{b} {t[-1]:.2f} s" for b, t in decode_times.items())
              + "; pipeline " + ", ".join(f"[{n}] {t[-1]:.2f} s" for n, t in pipe_times.items()), flush=True)
    decode = {b: {"wall_s": min(t), "frames": frames[b], "x_realtime": info.duration_s / min(t)} for b, t in decode_times.items()}
    fastest = max(decode, key=lambda b: decode[b]["x_realtime"])
    result["decode_only"] = decode
    result["fastest_decode_backend"] = fastest
    for b, d in decode.items():
        print(f"decode-only {b:7s}: {d['x_realtime']:6.1f} x real time ({d['frames']} frames in {d['wall_s']:.2f} s)")
    pipes = {}
    for name, t in pipe_times.items():
        best = min(t)
        pipes[name] = {"overrides": variants[name], "wall_s": best, "x_realtime": info.duration_s / best,
                       "over_fastest_decode": round(decode[fastest]["wall_s"] / best, 3),
                       "over_fastest_decode_per_round": [round(d / p, 3) for d, p in zip(decode_times[fastest], t, strict=True)]}
        print(f"pipeline [{name}]: {info.duration_s / best:6.1f} x real time ({best:.2f} s): "
              f"{pipes[name]['over_fastest_decode']} of the fastest decode-only speed ({fastest})")
    result["pipeline_per_clip"] = pipes["defaults"]
    result["pipeline_over_fastest_decode"] = pipes["defaults"]["over_fastest_decode"]
    result["variants"] = {k: v for k, v in pipes.items() if k != "defaults"}
    # Where the time goes: the same stages, timed one by one (decode in this thread) on the same clip.
    from handclust.io.video import open_video
    from handclust.pipeline import PIXEL_COLUMNS, concat_batches, frame_batches

    stages: dict[str, float] = {}
    cpu: dict[str, float] = {}  # CPU seconds of the whole process (all its threads) while each stage ran
    runner = LocalRunner(cfg, OutputStore(work / "stages"), Progress(enabled=False))
    runner._setup()
    c = find_clips([clip], cfg.phase.pattern)[0]
    d = cfg.decode
    src = open_video(clip, d.sample_fps, d.width, d.chunk_frames, d.backend)
    it = frame_batches(c, cfg, src)
    parts = []
    while True:
        t0, c0 = time.perf_counter(), time.process_time()
        batch = next(it, None)
        stages["decode"] = stages.get("decode", 0.0) + time.perf_counter() - t0
        cpu["decode"] = cpu.get("decode", 0.0) + time.process_time() - c0
        if batch is None:
            break
        for stage in runner.stages:
            t0, c0 = time.perf_counter(), time.process_time()
            batch = stage(batch)
            stages[stage.name] = stages.get(stage.name, 0.0) + time.perf_counter() - t0
            cpu[stage.name] = cpu.get(stage.name, 0.0) + time.process_time() - c0
        parts.append({k: v for k, v in batch.items() if k not in PIXEL_COLUMNS})
    t0 = time.perf_counter()
    runner.describer(concat_batches(parts))
    stages["segments"] = time.perf_counter() - t0
    result["stage_seconds"] = {k: round(v, 3) for k, v in stages.items()}
    result["stage_cpu_seconds"] = {k: round(v, 3) for k, v in cpu.items()}
    result["ceiling_over_fastest_decode"] = ceiling(decode[fastest]["wall_s"], cpu, os.cpu_count() or 1)
    result["load_average_after"] = list(os.getloadavg())
    if max(result["load_average_before"][0], result["load_average_after"][0]) > (os.cpu_count() or 1):  # type: ignore[index]
        # `handclust estimate` reads the absolute x_realtime from throughput_cpu.json: keep a loaded run out of it.
        print(f"note: load average above the {os.cpu_count()} CPUs: compare the ratios within this run; the absolute rates are "
              "the machine's share, not its speed (write them elsewhere with --out)")
    print("stage seconds:", result["stage_seconds"], "CPU seconds:", result["stage_cpu_seconds"],
          "ceiling with perfect overlap:", result["ceiling_over_fastest_decode"],
          "load average", result["load_average_before"], "->", result["load_average_after"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
