"""Does embedding fewer frames (``scene.fps``, vectors held between) cost segment boundaries?

Renders the synthetic sample footage (known activity per frame), runs the per-clip pipeline (decode,
frame features, segmentation) with the histogram, and with EfficientNet-Lite0 at several rates, and
scores each run's boundaries against the true activity changes: a boundary within ``--tol`` seconds
of a true change is a hit (precision, recall, F1), and counts how many boundaries the appearance
detector voted for. Synthetic data: what it shows is whether holding vectors breaks the detectors,
not how well either encoder separates real activities (docs/encoders.md has the real-footage figures).
Writes benchmarks/results/scene_rate_boundaries.json.

    python benchmarks/scene_rate.py [--clips 4] [--minutes 1] [--tol 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "scene_rate_boundaries.json"
VARIANTS = {
    "histogram": ["scene.encoder=histogram"],
    "efficientnet every frame (5 fps)": ["scene.encoder=efficientnet", "scene.fps=5"],
    "efficientnet 1 fps (default)": ["scene.encoder=efficientnet"],
    "efficientnet 0.5 fps": ["scene.encoder=efficientnet", "scene.fps=0.5"],
}


def score(found: np.ndarray, true: np.ndarray, tol: float) -> tuple[int, int, int]:
    """(hits among true changes, boundaries near no true change, true changes missed)."""
    hit = sum(bool(np.any(np.abs(found - t) <= tol)) for t in true)
    false = sum(not np.any(np.abs(true - f) <= tol) for f in found)
    return hit, false, len(true) - hit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--tol", type=float, default=1.0, help="seconds a boundary may be off a true change")
    args = ap.parse_args()

    import pandas as pd

    from handclust.config import load_config
    from handclust.io.footage import find_clips
    from handclust.io.storage import OutputStore
    from handclust.pipeline import LocalRunner
    from handclust.progress import Progress
    from handclust.synthetic.sample import make_sample_footage

    load_before = list(os.getloadavg())
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        footage = make_sample_footage(Path(tmp) / "footage", n_clips=args.clips, minutes=args.minutes, seed=7, fps=10.0, size=(320, 180))
        truth = pd.read_parquet(footage / "ground_truth.parquet")
        clips = find_clips(sorted(footage.glob("*.mp4")), load_config().phase.pattern)
        for name, sets in VARIANTS.items():
            cfg = load_config(None, ["progress=false", "pose.enabled=false", *sets])
            out = Path(tmp) / f"run-{len(results)}"
            runner = LocalRunner(cfg, OutputStore(out), Progress(enabled=False))
            runner._setup()
            t0, c0 = time.perf_counter(), time.process_time()
            for clip in clips:
                assert runner.process_clip(clip)["status"] == "ok"
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            seg = pd.read_parquet(out / "segments")
            hit = false = missed = appearance = 0
            for clip in clips:
                t = truth[truth.file == Path(clip.path).name].sort_values("t")
                act = t.activity.to_numpy()
                true = t.t.to_numpy()[1:][act[1:] != act[:-1]]
                s = seg[seg.clip_id == clip.clip_id].sort_values("seg_idx")
                found = s.t_start.to_numpy()[1:]
                appearance += sum("appearance" in d for d in s.boundary_detectors.to_numpy()[1:])
                h, f, m = score(found, true, args.tol)
                hit, false, missed = hit + h, false + f, missed + m
            p, r = hit / max(hit + false, 1), hit / max(hit + missed, 1)
            results[name] = {"overrides": sets, "precision": round(p, 3), "recall": round(r, 3),
                             "f1": round(2 * p * r / max(p + r, 1e-9), 3), "boundaries": int(len(seg) - len(clips)),
                             "true_changes": hit + missed, "boundaries_with_appearance_vote": appearance,
                             "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}
            print(name, results[name], flush=True)
    OUT.write_text(json.dumps({
        "what": "segment boundaries against the true activity changes, per scene encoder and scene.fps (per-clip pipeline, "
                "pose off); wall and CPU seconds include decoding and every frame stage (and loading torch on first use)",
        "data": f"synthetic: make_sample_footage({args.clips} clips x {args.minutes} min, seed 7, 320x180, 10 fps)",
        "tolerance_s": args.tol, "machine": {"cpus": os.cpu_count()}, "load_average_before": load_before,
        "variants": results, "load_average_after": list(os.getloadavg())}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
