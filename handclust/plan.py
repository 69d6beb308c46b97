"""The stage plan: which stages a config runs and in what order, the frame batches they see, the
fingerprint of what they compute, and the per-clip steps both runners share.

:mod:`handclust.pipeline` (the local runner) and :mod:`handclust.ray_runner` both build on this
module, so neither imports the other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from handclust.config import RunConfig, config_to_dict
from handclust.features.held import HeldFrameTracker
from handclust.features.motion import MotionFeatures
from handclust.features.scene import HistogramSceneEncoder
from handclust.footage import Clip
from handclust.stages import Batch

log = logging.getLogger(__name__)

PIXEL_COLUMNS = ("frame", "prev_frame")
FEATURE_SECTIONS = ("decode", "flow", "scene", "segment", "descriptor")
# How decoding runs, not what it gives: changing these keeps resume valid.
RUN_ONLY_DECODE_KEYS = ("prefetch_chunks",)


def feature_fingerprint(cfg: RunConfig) -> str:
    """Hash of the config sections that change per-clip outputs: a change invalidates resume."""
    from handclust.encoders import fingerprint_sections

    d = config_to_dict(cfg)
    d["decode"] = {k: v for k, v in d["decode"].items() if k not in RUN_ONLY_DECODE_KEYS}
    blob = json.dumps({**{k: d[k] for k in FEATURE_SECTIONS}, **fingerprint_sections(d)}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def frame_stages(cfg: RunConfig) -> list[Any]:
    """Per-frame stages in order. Each sees ``frame`` (and ``prev_frame``) and adds columns."""
    from handclust.encoders import encoder_stages

    learned = encoder_stages(cfg)  # DINOv2 / OWLv2 when configured; no torch import until setup()
    scene = learned.get("scene") or HistogramSceneEncoder(cfg.scene)
    stages = [scene, MotionFeatures(cfg.flow, cfg.decode.sample_fps)]
    if cfg.pose.enabled:
        from handclust.features.keypoints import HandPoseKeypoints

        stages.append(HandPoseKeypoints(cfg.pose, cfg.decode.sample_fps))
    return stages + ([learned["tools"]] if "tools" in learned else [])


def hand_tracks(cfg: RunConfig) -> Any:
    """The per-clip hand pass (:class:`~handclust.features.hands.HandTracks`), or None when hands are off."""
    if not (cfg.pose.enabled and cfg.pose.hands):
        return None
    from handclust.features.hands import HandTracks

    d = cfg.decode
    return HandTracks(cfg.pose, d.sample_fps, d.width, d.chunk_frames)


def apply_hand_tracks(stage: Any, frames: Batch, status: dict[str, Any]) -> Batch:
    """Run the hand pass on one clip's ordered frame columns; records its coverage in ``status["hands"]``.

    ``status`` names the clip (``path``), how the first pass decoded it (``backend``) and the decoded
    frame size (``frame_size``, [height, width]); both runners call this before segmentation.
    """
    if stage is None:
        return frames
    from handclust.features.hands import hand_coverage

    t0 = time.perf_counter()
    frames = stage(frames, status["path"], status["frame_size"], backend=status.get("backend") or "auto")
    status["hands"] = {**hand_coverage(frames, stage.cfg.fps, stage.sample_fps), "seconds": time.perf_counter() - t0}
    return frames


def apply_segment_stages(stages: list[Any], segments: Batch, path: str) -> Batch:
    """Run segment stages (V-JEPA-2) on one clip's segment rows; they re-decode from ``path``."""
    if not stages or not len(segments.get("segment_id", ())):
        return segments
    batch = {**segments, "path": np.full(len(segments["segment_id"]), path, dtype=object)}
    for stage in stages:
        batch = stage(batch)
    batch.pop("path")
    return batch


def frame_batches(clip: Clip, cfg: RunConfig, source: Any) -> Iterator[Batch]:
    """Decoded chunks as frame batches; each row carries what optical flow compares it with.

    ``fresh``: the frame shows a new source image (:mod:`handclust.features.held`).
    ``prev_frame``: the last distinct frame before it, ``motion_dt`` seconds earlier, with
    ``has_prev``; a held frame (and a clip's first) has no ``prev_frame`` (``has_prev`` False,
    ``motion_dt`` NaN). Freshness is followed across chunks, so the rows never depend on
    ``decode.chunk_frames``.
    """
    tracker = HeldFrameTracker()
    for chunk in source.chunks():
        n = len(chunk.frames)
        prev_frames = chunk.frames.copy()  # held and first frames: themselves, never read
        has_prev = np.zeros(n, bool)
        fresh = np.zeros(n, bool)
        motion_dt = np.full(n, np.nan, np.float32)
        for i in range(n):
            fresh[i], prev, dt = tracker.step(chunk.frames[i], float(chunk.t[i]))
            if prev is not None:
                prev_frames[i], has_prev[i], motion_dt[i] = prev, True, dt
        yield {
            "clip_id": np.full(n, clip.clip_id, dtype=object),
            "frame_idx": chunk.frame_idx,
            "t": chunk.t,
            "frame": chunk.frames,
            "prev_frame": prev_frames,
            "has_prev": has_prev,
            "fresh": fresh,
            "motion_dt": motion_dt,
        }


def source_rate(frames: Batch, segments: Batch, sample_fps: float, path: str) -> dict[str, Any]:
    """A clip's status fields on its source rate: ``effective_fps`` (distinct sampled frames per
    second) and ``unmeasured`` (modality -> segments that could not measure it). Warns, naming the
    clip, when some modality could not be measured; both runners call it."""
    n = len(frames["t"])
    fresh = np.asarray(frames["fresh"], bool) if "fresh" in frames else np.ones(n, bool)
    effective = float(fresh.sum()) * sample_fps / max(n, 1)
    counts: dict[str, int] = {}
    for names in segments.get("unmeasured", ()):
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    if counts:
        log.warning("%s: %.2f distinct frames per second (sampled at %g fps): the source is slower than the sampling "
                    "or holds frames; unmeasurable, so left out for those segments: %s", path, effective, sample_fps,
                    ", ".join(f"{k} ({v} of {len(segments['segment_id'])} segments)" for k, v in counts.items()))
    return {"effective_fps": effective, "unmeasured": counts}


def partial_message(path: str, truncated_at: float, full_s: float, gap: tuple[float, float] | list[float] | None) -> str:
    """Why a clip is ``partial``, naming the file, where it stopped and what to do."""
    if gap:
        a, b = gap
        return (f"{path}: {b - a:.1f} s with no frame between {a:.1f} s and {b:.1f} s (a gap in the recording); only the "
                f"part before it was used, no frames were made up across it. To use the rest, split the clip at the gap, "
                f"e.g. `ffmpeg -ss {b:.1f} -i IN -c copy OUT.mp4`")
    return (f"{path}: decoding stopped at {truncated_at:.1f} s of {full_s:.1f} s (truncated or corrupt); "
            "the part before it was used")


def concat_batches(batches: list[Batch]) -> Batch:
    if not batches:
        return {}
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
