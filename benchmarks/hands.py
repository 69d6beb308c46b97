"""What anchored hand propagation adds to a run: cost per frame, and coverage lift on the sample footage.

Two measurements, both through the stages a run uses (CPU, one OpenCV thread as in a run):

1. **Cost per sampled frame** of :class:`handclust.modalities.features.hands.HandTracks` on a generated
   clip at the default rate (decode.sample_fps, decode.width, pose.fps, pose.max_age_frames),
   with anchors planted on ``--anchor-rate`` of the looked-at frames (real helmet footage: 3-7 %),
   split into Lucas-Kanade tracking (grey frames handed in from memory) and the re-decode the
   pass does in a run (grey frames read back from the encoded file).
2. **Coverage before / after** on the sample footage (:mod:`handclust.synthetic.footage_v1`, gloved hands
   drawn): MediaPipe at pose.fps, then the hand pass, per clip. If MediaPipe finds no anchor there,
   the lift is 0 and the record says so.

Writes benchmarks/results/hands_cpu.json.

    python benchmarks/hands.py                      # a few minutes on 2 cores
    python benchmarks/hands.py --clips 4 --minutes 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SOURCE_FPS = 15.0

def planted_clip(path: Path, n: int, fps: float, size: tuple[int, int], seed: int = 0) -> None:
    """``n`` frames of a textured scene the camera pans and turns over, written as H.264 at ``fps``."""
    import cv2

    from handclust.synthetic.footage_v1 import Mp4Writer

    w, h = size
    rng = np.random.default_rng(seed)
    world = cv2.GaussianBlur(rng.uniform(0, 255, (1600, 2400, 3)).astype(np.float32), (0, 0), 2.5)
    world = cv2.normalize(world, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    with Mp4Writer(path, fps, size) as out:
        for k in range(n):
            a = np.deg2rad(3 * np.sin(k / 20))
            r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            c = np.array([w / 2, h / 2])
            origin = np.array([400 + (4 * k) % 1400, 600 + 40 * np.sin(k / 15)]) / 3
            m = np.zeros((2, 3))
            m[:, :2] = r
            m[:, 2] = r @ (-origin - c) + c
            out.write(cv2.warpAffine(world, m, (w, h), borderMode=cv2.BORDER_REFLECT))


def cost_per_frame(cfg: Any, tmp: Path, n: int, anchor_rate: float, repeats: int) -> dict[str, Any]:
    from handclust.io.video import open_video
    from handclust.modalities.features.hands import HandTracks, grey_frames, needed_frames
    from handclust.modalities.features.keypoints import HAND_POINTS, HAND_SLOT
    from handclust.pipeline import frame_batches
    from handclust.stages import frame_step

    d, pose = cfg.decode, cfg.pose
    path = tmp / "planted.mp4"
    # A 640x360, 15 fps source like the sample footage; the run decodes it at decode.width / sample_fps.
    planted_clip(path, round(n * SOURCE_FPS / d.sample_fps), SOURCE_FPS, (640, 360))
    size = (d.width, round(d.width * 9 / 16))
    step = frame_step(pose.fps, d.sample_fps)
    rng = np.random.default_rng(1)
    looked = np.arange(n) % step == 0
    anchors = looked & (rng.random(n) < anchor_rate)
    rows = np.full((n, pose.max_hands * HAND_SLOT), np.nan, np.float32)
    rows[looked, ::HAND_SLOT] = 0.0
    # Each anchor: a hand in the middle of frame k, fixed to the world there, so tracking it is well posed.
    img = np.array([[size[0] * 0.5 + 6 * np.cos(t), size[1] * 0.6 + 6 * np.sin(t)] for t in np.linspace(0, 6, HAND_POINTS)])
    for k in np.flatnonzero(anchors):
        p = np.zeros((HAND_POINTS, 3), np.float32)
        p[:, 0], p[:, 1] = img[:, 0] / size[0], img[:, 1] / size[1]
        rows[k, 0], rows[k, 1:HAND_SLOT] = 0.9, p.ravel()
    source = open_video(path, d.sample_fps, d.width, d.chunk_frames, d.backend)
    frames_cols: dict[str, list[np.ndarray]] = {}
    from handclust.modalities.features.motion import MotionFeatures

    motion = MotionFeatures(cfg.flow, d.sample_fps)
    grey: list[np.ndarray] = []
    import cv2

    class _Clip:
        clip_id = "planted"

    for batch in frame_batches(_Clip(), cfg, source):  # type: ignore[arg-type]
        batch = motion(batch)
        grey += [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in batch["frame"]]
        for k, v in batch.items():
            if k not in ("frame", "prev_grey"):
                frames_cols.setdefault(k, []).append(v)
    frames = {k: np.concatenate(v) for k, v in frames_cols.items()}
    n = len(grey)
    frames["hand_landmarks"] = rows[:n]
    hw = grey[0].shape
    stage = HandTracks(pose, d.sample_fps, d.width, d.chunk_frames)
    stage.setup()

    def from_memory(needed: np.ndarray):
        return ((int(k), grey[k]) for k in np.flatnonzero(needed))

    track_s, full_s = [], []
    out: dict[str, Any] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = stage(frames, str(path), hw, read_grey=from_memory)
        track_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        stage(frames, str(path), hw, backend=source.backend)
        full_s.append(time.perf_counter() - t0)
    need = needed_frames(np.asarray(anchors[:n]), pose.max_age_frames)
    decode_s, first_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        decoded = sum(1 for _ in grey_frames(str(path), need, d.sample_fps, d.width, d.chunk_frames, source.backend))
        decode_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in open_video(path, d.sample_fps, d.width, d.chunk_frames, d.backend).chunks():
            pass
        first_s.append(time.perf_counter() - t0)
    src = out["hand_source"]
    n_looked = int(looked[:n].sum())
    return {
        "clip": f"{n} sampled frames at {d.sample_fps:g} fps ({hw[1]}x{hw[0]}) of a 640x360 {SOURCE_FPS:g} fps H.264 source, "
                "camera panning and turning over a texture",
        "anchors": int(anchors[:n].sum()), "anchor_rate_of_looked": round(float(anchors[:n].sum() / n_looked), 4),
        "frames_needed": int(need.sum()), "frames_redecoded": decoded,
        "tracking_ms_per_frame": round(1000 * float(np.median(track_s)) / n, 3),
        "redecode_ms_per_frame": round(1000 * float(np.median(decode_s)) / n, 3),
        "first_pass_decode_ms_per_frame": round(1000 * float(np.median(first_s)) / n, 3),
        "total_ms_per_frame": round(1000 * float(np.median(full_s)) / n, 3),
        "coverage_before": round(float((src[looked[:n]] == 1).mean()), 4),
        "coverage_after": round(float((src[looked[:n]] > 0).mean()), 4),
        "note": "ms per sampled frame of the clip (all frames, not only looked-at ones); total = re-decode of the frames "
                "within max_age_frames of an anchor + tracking + ego-compensated wrist motion, as a run pays it; "
                "first_pass_decode is what decoding the whole clip costs the run anyway; coverage over looked-at frames",
    }


def sample_footage(cfg: Any, tmp: Path, clips: int, minutes: float) -> dict[str, Any]:
    from handclust.io.footage import find_clips
    from handclust.io.video import open_video
    from handclust.modalities.features.hands import hand_coverage
    from handclust.modalities.features.keypoints import HandPoseKeypoints
    from handclust.pipeline import apply_hand_tracks, concat_batches, frame_batches, hand_tracks
    from handclust.synthetic.sample import make_sample_footage

    d = cfg.decode
    footage = make_sample_footage(tmp / "footage", n_clips=clips, minutes=minutes, seed=3, fps=15.0, size=(640, 360))
    keypoints = HandPoseKeypoints(cfg.pose, d.sample_fps)
    keypoints.setup()
    hands = hand_tracks(cfg)
    hands.setup()
    from handclust.modalities.features.motion import MotionFeatures

    motion = MotionFeatures(cfg.flow, d.sample_fps)
    per_clip = []
    for clip in find_clips(footage, cfg.phase.pattern):
        source = open_video(clip.path, d.sample_fps, d.width, d.chunk_frames, d.backend)
        parts, size = [], None
        t0 = time.perf_counter()
        for batch in frame_batches(clip, cfg, source):
            size = list(batch["frame"].shape[1:3])
            batch = keypoints(motion(batch))
            parts.append({k: v for k, v in batch.items() if k not in ("frame", "prev_grey")})
        first_s = time.perf_counter() - t0
        frames = concat_batches(parts)
        status: dict[str, Any] = {"path": clip.path, "frame_size": size, "backend": source.backend}
        frames = apply_hand_tracks(hands, frames, status)
        cov = hand_coverage(frames, cfg.pose.fps, d.sample_fps)
        per_clip.append({"clip": Path(clip.path).name, "frames": int(len(frames["t"])), **cov,
                         "first_pass_s": round(first_s, 2), "hand_pass_s": round(status["hands"]["seconds"], 3)})
    anchors = sum(c["detected"] for c in per_clip)
    return {"footage": f"handclust.synthetic.footage_v1 v1, {clips} clips x {minutes:g} min, 640x360 at 15 fps (gloved hands drawn)",
            "per_clip": per_clip, "anchors_found": anchors,
            "note": ("MediaPipe found no hand on the sample footage's drawn gloves: no anchors, so no lift and no "
                     "re-decode (the pass costs only the compensated-motion arithmetic)") if anchors == 0 else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=600, help="sampled frames of the planted clip (600 = 2 min at 5 fps)")
    ap.add_argument("--anchor-rate", type=float, default=0.05, help="share of looked-at frames with a planted detection")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "hands_cpu.json"))
    args = ap.parse_args()

    import cv2

    from handclust.config import load_config

    cv2.setNumThreads(1)
    cfg = load_config(None, [])
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        cost = cost_per_frame(cfg, Path(tmp), args.frames, args.anchor_rate, args.repeats)
        footage = sample_footage(cfg, Path(tmp), args.clips, args.minutes)
    p = cfg.pose
    record = {
        "what": "anchored hand propagation (features/hands.py): cost per sampled frame and coverage lift",
        "device": "cpu", "cpu_count": os.cpu_count(), "opencv_threads": 1,
        "load_avg_1m_start_end": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "machine": platform.platform(), "opencv": cv2.__version__,
        "defaults": {"sample_fps": cfg.decode.sample_fps, "width": cfg.decode.width, "pose_fps": p.fps,
                     "max_age_frames": p.max_age_frames, "track_fb_error_px": p.track_fb_error_px,
                     "track_min_points": p.track_min_points, "track_max_drift": p.track_max_drift},
        "planted": cost, "sample_footage": footage,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
