"""EfficientNet-Lite0 scene encoder on CPU: ms a frame on one thread, CPU seconds per minute of footage
at each ``scene.fps``, and what its 1280-d vectors cost in Parquet, beside the histogram descriptor.

The frames are decoded from a rendered synthetic clip at the run's defaults (``decode.sample_fps``,
``decode.width``), so preprocessing (resize, crop) is timed on the frame size a run feeds it; a
forward pass costs the same whatever the pixels show. The vectors whose Parquet size is measured are
the real model's outputs on those synthetic frames (synthetic data, real weights). Timings are CPU
seconds of this process (``time.process_time``) with torch, OpenCV and BLAS held to one thread, so
load from other jobs on the machine stretches the wall time more than them; both are written.
Writes benchmarks/results/efficientnet_cpu.json.

    python benchmarks/efficientnet_cpu.py [--frames 96] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "efficientnet_cpu.json"


def timed(fn: Any, n_frames: int, repeats: int) -> dict[str, float]:
    """Best of ``repeats`` calls of ``fn()``: CPU ms and wall ms per frame."""
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append((time.process_time() - c0) / n_frames * 1000)
        wall.append((time.perf_counter() - w0) / n_frames * 1000)
    return {"cpu_ms_per_frame": round(min(cpu), 2), "wall_ms_per_frame": round(min(wall), 2),
            "cpu_ms_per_frame_rounds": [round(x, 2) for x in cpu]}


def parquet_bytes(emb: np.ndarray) -> int:
    """Bytes of one ``scene_embedding`` column (the frames table's type) written as the run writes tables."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from handclust.schema import VECTOR

    buf = io.BytesIO()
    pq.write_table(pa.table({"scene_embedding": pa.array(list(emb.astype(np.float32)), type=VECTOR)}), buf)
    return buf.getbuffer().nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=96, help="frames timed per round")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=1.0, help="length of the clip whose Parquet size is measured")
    args = ap.parse_args()

    from handclust.stages import limit_threads

    limit_threads(1)
    import torch

    torch.set_num_threads(1)
    from handclust.config import load_config
    from handclust.io.video import open_video
    from handclust.modalities.encoders.efficientnet import CPU_BATCH, EfficientNetFrameEncoder
    from handclust.modalities.features.scene import HistogramSceneEncoder, hold_scene_embedding, scene_step
    from handclust.synthetic.footage_v1 import render_clip

    cfg = load_config(None, ["progress=false"])
    d = cfg.decode
    load_before = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "production_000.mp4"
        render_clip(clip, "production", args.minutes * 60, seed=11, fps=15.0, size=(640, 360))
        frames = np.concatenate([c.frames for c in open_video(clip, d.sample_fps, d.width).chunks()])
    n = min(args.frames, len(frames))
    sub = frames[:n]
    enc = EfficientNetFrameEncoder(cfg.scene, d.sample_fps)
    t0 = time.perf_counter()
    enc.setup()
    load_s = time.perf_counter() - t0
    hist = HistogramSceneEncoder(cfg.scene, d.sample_fps)
    hist.setup()
    enc.embed(sub[:2])  # first-call allocations out of the timing

    per_batch: dict[str, Any] = {}
    for bs in (1, 4, 8, cfg.scene.batch_size):
        enc.forward_batch = bs
        per_batch[str(bs)] = timed(lambda: enc.embed(sub), n, args.repeats)
        print(f"efficientnet batch {bs:3d}: {per_batch[str(bs)]}", flush=True)
    enc.forward_batch = CPU_BATCH
    square = np.ascontiguousarray(np.resize(sub[:, :, :, :], (n, 224, 224, 3)))  # a frame already at the model's size
    at_224 = timed(lambda: enc.embed(square), n, args.repeats)
    print(f"efficientnet 224x224 input: {at_224}", flush=True)
    histogram = timed(lambda: [hist.encode(f) for f in sub], n, args.repeats)
    print(f"histogram: {histogram}", flush=True)

    default_ms = per_batch[str(CPU_BATCH)]["cpu_ms_per_frame"]
    throughput = json.loads((OUT.parent / "throughput_cpu.json").read_text()) if (OUT.parent / "throughput_cpu.json").is_file() else {}
    stage_cpu = throughput.get("stage_cpu_seconds") or {}
    rest = sum(float(v) for v in stage_cpu.values())  # decode + histogram scene + motion + pose, per minute (720p)
    minute = {}
    for fps in (d.sample_fps, 2.5, 1.0, 0.5):
        step = max(1, round(d.sample_fps / fps))
        s = 60 * d.sample_fps / step * default_ms / 1000
        minute[f"{d.sample_fps / step:g}"] = {"every_nth_frame": step, "cpu_s_per_footage_minute": round(s, 2),
                                               "over_rest_of_pipeline_cpu": round(s / rest, 2) if rest else None}

    # Parquet: one minute of frames at the default rate, as the frames table stores scene_embedding.
    emb_all = enc.embed(frames)
    step = scene_step(cfg.scene, "efficientnet", d.sample_fps)
    held = emb_all.copy()
    held[np.arange(len(held)) % step != 0] = np.nan
    held = hold_scene_embedding({"scene_embedding": held})["scene_embedding"]
    hist_all = np.stack([hist.encode(f) for f in frames])
    per_min = 60 * d.sample_fps / len(frames)
    sizes = {
        "frames": len(frames),
        "histogram_every_frame_kb_per_min": round(parquet_bytes(hist_all) * per_min / 1024, 1),
        "efficientnet_every_frame_kb_per_min": round(parquet_bytes(emb_all) * per_min / 1024, 1),
        f"efficientnet_held_every_{step}_kb_per_min": round(parquet_bytes(held) * per_min / 1024, 1),
        "histogram_dim": hist.dim, "efficientnet_dim": enc.dim,
    }
    print(f"parquet: {sizes}", flush=True)
    # How much holding changes the vectors a segment averages (desc_scene): cosine of 8 s means, held vs every frame.
    w = int(8 * d.sample_fps)
    cos = []
    for a in range(0, len(frames) - w + 1, w):
        u, v = emb_all[a:a + w].mean(0), held[a:a + w].mean(0)
        cos.append(float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v))))

    result = {
        "what": "EfficientNet-Lite0 scene encoder (handclust.modalities.encoders.efficientnet) on CPU, one thread; the histogram "
                "descriptor on the same frames. Synthetic frames (a rendered clip, decoded as a run decodes), real weights.",
        "data": "synthetic (handclust.synthetic.footage_v1.render_clip); cost does not depend on the pixels",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "load_average_before": load_before,
        "decode": {"sample_fps": d.sample_fps, "width": d.width, "frame_size": list(frames.shape[1:3])},
        "weights_load_s": round(load_s, 2),
        "frames_timed": n, "repeats": args.repeats,
        "efficientnet_by_batch_size": per_batch,
        "efficientnet_224x224_input": at_224,
        "histogram": histogram,
        "default_batch_size": CPU_BATCH,
        "default_ms_per_frame": default_ms,
        "default_fps": enc.fps,
        "cpu_s_per_footage_minute_by_fps": minute,
        "rest_of_pipeline_cpu_s_per_footage_minute": {"value": round(rest, 2), "from": "throughput_cpu.json stage_cpu_seconds "
                                                      "(1 min of 720p H.264: decode, histogram scene, motion, pose)"} if rest else None,
        "parquet_scene_embedding": sizes,
        "held_vs_every_frame_8s_segment_mean_cosine": {"min": round(min(cos), 4), "mean": round(float(np.mean(cos)), 4)} if cos else None,
        "load_average_after": list(os.getloadavg()),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
