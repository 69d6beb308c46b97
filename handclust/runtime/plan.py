"""The stage plan: which stages a config runs and in what order (from the modality registry), the
frame batches they see, the fingerprint of what they compute, the segment describer, and the per-clip
steps both runners share.

:mod:`handclust.pipeline` (the local runner) and :mod:`handclust.runtime.ray_runner` both build on this
module, so neither imports the other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from handclust import schema
from handclust.config import DescriptorConfig, RunConfig, SegmentConfig, config_to_dict
from handclust.core.held import HeldFrameTracker
from handclust.io.footage import Clip
from handclust.modalities import registry as modalities
from handclust.modalities.descriptors import DescribeFn, Frames, describe_segment
from handclust.stages import Batch

log = logging.getLogger(__name__)

PIXEL_COLUMNS = ("frame", "prev_grey", "video_px")
FEATURE_SECTIONS = ("decode", "flow", "scene", "segment", "descriptor")
# How decoding runs, not what it gives: changing these keeps resume valid.
RUN_ONLY_DECODE_KEYS = ("prefetch_chunks",)


def feature_fingerprint(cfg: RunConfig) -> str:
    """Hash of the config sections that change per-clip outputs: a change invalidates resume."""
    from handclust.modalities.encoders import fingerprint_sections
    from handclust.modalities.features.scene import scene_encoder, scene_fps

    d = config_to_dict(cfg)
    # What runs, not what was asked: installing EfficientNet under scene.encoder=auto redoes the clips.
    encoder = scene_encoder(cfg.scene).encoder
    d["scene"] = {**d["scene"], "encoder": encoder, "fps": scene_fps(cfg.scene, encoder)}
    d["decode"] = {k: v for k, v in d["decode"].items() if k not in RUN_ONLY_DECODE_KEYS}
    blob: dict[str, Any] = {**{k: d[k] for k in FEATURE_SECTIONS}, **fingerprint_sections(d, modalities.switch_sections())}
    extra = modalities.extra_names(cfg)
    if extra:  # absent with only the built-in modalities: runs from before the registry still resume
        blob["modalities"] = sorted(extra)
    return hashlib.sha1(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def frame_stages(cfg: RunConfig) -> list[Any]:
    """Per-frame stages in order (registry order; learned ones import torch only in ``setup()``).
    Each sees ``frame`` (and ``prev_grey``) and adds columns."""
    return modalities.frame_stages(cfg)


def segment_stages(cfg: RunConfig) -> list[Any]:
    """Stages that add descriptor columns to a clip's segment rows (after segmentation), in order."""
    return modalities.segment_stages(cfg)


def hand_tracks(cfg: RunConfig) -> Any:
    """The per-clip hand pass (:class:`~handclust.modalities.features.hands.HandTracks`), or None when hands are off."""
    if not (cfg.pose.enabled and cfg.pose.hands):
        return None
    from handclust.modalities.features.hands import HandTracks

    d = cfg.decode
    return HandTracks(cfg.pose, d.sample_fps, d.width, d.chunk_frames)


def video_model_input(cfg: RunConfig) -> tuple[int, int] | None:
    """The size decoding also gives each frame in for V-JEPA-2 (:func:`handclust.modalities.encoders.vjepa2.model_input`), or None when video is off."""
    if not cfg.video.enabled:
        return None
    from handclust.modalities.encoders.vjepa2 import model_input

    return model_input(cfg.video)


def apply_hand_tracks(stage: Any, frames: Batch, status: dict[str, Any]) -> Batch:
    """Run the hand pass on one clip's ordered frame columns; records its coverage in ``status["hands"]``.

    ``status`` names the clip (``path``), how the first pass decoded it (``backend``) and the decoded
    frame size (``frame_size``, [height, width]); both runners call this before segmentation.
    """
    if stage is None:
        return frames
    from handclust.modalities.features.hands import hand_coverage

    t0 = time.perf_counter()
    frames = stage(frames, status["path"], status["frame_size"], backend=status.get("backend") or "auto")
    status["hands"] = {**hand_coverage(frames, stage.cfg.fps, stage.sample_fps, stage.idle_step),
                       "seconds": time.perf_counter() - t0}
    return frames


def apply_segment_stages(stages: list[Any], segments: Batch, path: str) -> Batch:
    """Run segment stages (registered modalities' ``segment_stage``) on one clip's segment rows, with the clip's ``path``."""
    if not stages or not len(segments.get("segment_id", ())):
        return segments
    batch = {**segments, "path": np.full(len(segments["segment_id"]), path, dtype=object)}
    for stage in stages:
        batch = stage(batch)
    batch.pop("path")
    return batch


def frame_batches(clip: Clip, cfg: RunConfig, source: Any) -> Iterator[Batch]:
    """Decoded chunks as frame batches; each row carries what optical flow compares it with.

    ``fresh``: the frame shows a new source image (:mod:`handclust.core.held`).
    ``prev_grey``: the last distinct frame before it in grey (what optical flow compares; a third
    of an RGB copy, and every row carries one through every stage pool), ``motion_dt`` seconds
    earlier, with ``has_prev``; a held frame (and a clip's first) has no previous frame
    (``has_prev`` False, ``motion_dt`` NaN, ``prev_grey`` zeros). Freshness is followed across
    chunks, so the rows never depend on ``decode.chunk_frames``.
    """
    tracker = HeldFrameTracker()
    for chunk in source.chunks():
        n = len(chunk.frames)
        prev_grey = np.zeros(chunk.frames.shape[:3], np.uint8)  # held and first frames: never read
        has_prev = np.zeros(n, bool)
        fresh = np.zeros(n, bool)
        motion_dt = np.full(n, np.nan, np.float32)
        for i in range(n):
            fresh[i], prev, dt = tracker.step(chunk.frames[i], float(chunk.t[i]))
            if prev is not None:
                prev_grey[i], has_prev[i], motion_dt[i] = prev, True, dt
        batch = {
            "clip_id": np.full(n, clip.clip_id, dtype=object),
            "frame_idx": chunk.frame_idx,
            "t": chunk.t,
            "frame": chunk.frames,
            "prev_grey": prev_grey,
            "has_prev": has_prev,
            "fresh": fresh,
            "motion_dt": motion_dt,
        }
        if chunk.model is not None:  # the frames at the video model's input size (encoders/vjepa2.py)
            batch["video_px"] = chunk.model
        yield batch


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


class SegmentDescriber:
    """Stage: one clip's frame columns in, its segment rows out (segmentation + descriptors).

    Runs once per clip (Ray: ``groupby("clip_id").map_groups``); frames must be sorted by
    ``frame_idx``. Segment ids are uuid5 of the clip id and frame range, so a retried clip writes
    the same rows. The registered modalities' descriptor functions and the segments schema are
    taken when it is made (on the driver), so Ray workers describe and write what the driver registered.
    """

    name = "segments"

    def __init__(self, seg_cfg: SegmentConfig, desc_cfg: DescriptorConfig, sample_fps: float,
                 describers: list[tuple[str, DescribeFn]] | None = None):
        self.seg_cfg = seg_cfg
        self.desc_cfg = desc_cfg
        self.fps = sample_fps
        self.describers = modalities.describers() if describers is None else describers
        self.schema: pa.Schema = schema.segments_schema()
        self.frames_schema: pa.Schema = schema.frames_schema()

    def setup(self) -> None:
        pass

    def __call__(self, frames: Frames) -> dict[str, npt.NDArray[np.generic]]:
        from handclust.core.segmentation import motion_signals, segment_clip

        order = np.argsort(frames["frame_idx"], kind="stable")
        frames = {k: np.asarray(v)[order] for k, v in frames.items()}
        scene = np.asarray(frames["scene_embedding"], np.float64)
        seg = segment_clip(motion_signals(frames), scene, self.fps, self.seg_cfg)
        clip_id = str(frames["clip_id"][0])
        t = np.asarray(frames["t"], np.float64)
        rows: dict[str, list[object]] = {}
        for i, (a, b) in enumerate(zip(seg.starts, seg.ends, strict=True)):
            d = describe_segment(frames, int(a), int(b), self.fps, self.desc_cfg, self.describers)
            fi = frames["frame_idx"]
            rec = {
                "clip_id": clip_id,
                "segment_id": uuid.uuid5(uuid.NAMESPACE_OID, f"{clip_id}:{int(fi[a])}:{int(fi[b - 1]) + 1}").hex[:16],
                "seg_idx": i, "frame_start": int(fi[a]), "frame_end": int(fi[b - 1]) + 1,
                "t_start": float(t[a]), "t_end": float(t[b - 1]) + 1.0 / self.fps,
                "boundary_detectors": seg.detectors[i], "boundary_score": float(seg.scores[i]), **d,
            }
            for k, v in rec.items():
                rows.setdefault(k, []).append(v)
        out: dict[str, npt.NDArray[np.generic]] = {}
        for k, v in rows.items():
            if k.startswith("desc_"):
                out[k] = np.stack(v)
            elif isinstance(v[0], str | list):
                out[k] = np.empty(len(v), dtype=object)  # element by element: lists of equal length stay lists
                for i, x in enumerate(v):
                    out[k][i] = x
            else:
                out[k] = np.asarray(v)
        return out


def descriptor_dims(cfg: RunConfig) -> dict[str, int]:
    """Width of each ``desc_*`` column this version writes under ``cfg``, without any footage.

    Only modalities whose width follows from the config: each computed modality declares the frame
    columns its stage writes and their widths (``Modality.frame_columns``: scene with the histogram or
    EfficientNet-Lite0 encoder, motion, tools (one score per prompt), pose (MediaPipe layout), ...), and
    registered modalities that describe these columns. A modality whose own columns' width comes from a
    checkpoint named in the config (DINOv2 scene, V-JEPA-2 video) is not listed. Computed by describing
    placeholder frame columns of the declared widths, so a change to a descriptor function changes the answer too.
    """
    n, fps = 8, cfg.decode.sample_fps
    frames: Frames = {}
    from_checkpoint: set[str] = set()  # modalities whose own columns are as wide as a checkpoint says
    for m in modalities.computed(cfg):
        for col, fc in m.frame_columns.items():
            if fc.dtype != schema.VECTOR:  # one sampled frame apart, so rhythm sees a measurable segment
                frames[col] = np.full(n, 1.0 / fps, np.float32)
                continue
            width = fc.width_for(cfg)
            if width is None:
                from_checkpoint.add(m.name)
            frames[col] = np.ones((n, 1 if width is None else width), np.float32)
    widths: dict[str, int] = {}
    for name, describe in modalities.describers():
        try:
            d = describe_segment(frames, 0, n, fps, cfg.descriptor, [(name, describe)])
        except KeyError:  # a registered modality reading a frame column not made up here: known once it ran
            continue
        if f"desc_{name}" in d and name not in from_checkpoint:
            widths[name] = int(np.shape(d[f"desc_{name}"])[-1])
    return widths
