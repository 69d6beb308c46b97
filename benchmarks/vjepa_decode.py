"""What feeding V-JEPA-2 costs on CPU before the model runs: decoding its frames.

On one synthetic clip (720p30 H.264 by default), in interleaved rounds:
  1. ``decode``: the run's decode alone (5 fps at ``decode.width``), what every run pays;
  2. ``decode + model frames``: the same decode also giving each sampled frame at V-JEPA-2's
     input size (292 x 292 for the 256 px crop): what a run with ``video.enabled`` pays now;
  3. ``decode + re-decode per segment``: the decode, then every 8 s segment's range decoded again at
     the model's size, 16 frames per 2 s window at 8 fps, as the stage did before it moved onto the
     decoded frames (``handclust.io.video.read_range``, the function it used).
CPU seconds are process CPU time (all threads). Writes benchmarks/results/vjepa_decode_cpu.json.

    python benchmarks/vjepa_decode.py [--minutes 1] [--size 1280x720] [--rounds 3]
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

SHORT_SIDE = 292  # VJEPA2VideoProcessor for the 256 px crop: 256 x 256 / 224
SEGMENT_S = 8.0
OLD_WINDOW = (16, 8.0)  # frames per window, fps inside it: the former defaults (2 s per window)


def timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "vjepa_decode_cpu.json")
    args = ap.parse_args()

    from handclust.config import load_config
    from handclust.io.video import open_video, output_size, probe, read_range
    from handclust.synthetic.footage_v1 import render_clip

    cfg = load_config(None, [])
    d = cfg.decode
    w, h = (int(v) for v in args.size.split("x"))
    clip = Path(tempfile.mkdtemp(prefix="hc-vjepa-decode-")) / "01_production_bench.mp4"
    render_clip(clip, "production", args.minutes * 60, seed=11, fps=args.fps, size=(w, h))
    info = probe(clip)
    model_w = output_size(info.width, info.height, int(np.ceil(SHORT_SIDE * info.width / min(info.width, info.height))))[0]

    def decode(model_input: tuple[int, int] | None) -> None:
        src = open_video(clip, d.sample_fps, d.width, d.chunk_frames, "pyav", model_input)
        for _ in src.chunks():
            pass

    def redecode_segments() -> None:
        frames, fps = OLD_WINDOW
        for a in np.arange(0.0, info.duration_s, SEGMENT_S):
            b = min(a + SEGMENT_S, info.duration_s)
            k = int(min(max(round((b - a) * fps / frames), 1), 8))
            read_range(clip, float(a), float(b), k * frames, width=model_w)

    variants = {
        "decode": lambda: decode(None),
        "decode + model frames": lambda: decode((SHORT_SIDE, SHORT_SIDE)),
        "decode + re-decode per segment": lambda: (decode(None), redecode_segments()),
    }
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    load0 = os.getloadavg()
    for _ in range(args.rounds):
        for name, fn in variants.items():
            runs[name].append(timed(fn))
    out = {
        "clip": {"duration_s": info.duration_s, "size": f"{info.width}x{info.height}", "source_fps": info.source_fps,
                 "codec": info.codec},
        "sample_fps": d.sample_fps, "decode_width": d.width, "model_frame": f"{SHORT_SIDE}x{SHORT_SIDE}",
        "old_segments": {"segment_s": SEGMENT_S, "frames_per_window": OLD_WINDOW[0], "fps": OLD_WINDOW[1],
                         "decode_width": model_w},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average_before": list(load0), "rounds": args.rounds,
        "variants": {name: {"wall_s": round(float(np.median([r[0] for r in rs])), 3),
                            "cpu_s": round(float(np.median([r[1] for r in rs])), 3),
                            "cpu_s_per_footage_min": round(float(np.median([r[1] for r in rs])) / (info.duration_s / 60), 3)}
                     for name, rs in runs.items()},
        "load_average_after": list(os.getloadavg()),
    }
    base = out["variants"]["decode"]["cpu_s"]
    for v in out["variants"].values():
        v["cpu_over_decode"] = round(v["cpu_s"] / base, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["variants"], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
