"""Describe each segment: pooled scene and motion features, ego-motion summary, flow rhythm and
repetition period. Pure numpy on one clip's frame arrays.

Flow rhythm is a windowed FFT (Welch) of the segment's dominant signed flow signal (first
principal component of the flow grid, so a reach-and-return shows its full period, not half of
it as the flow *magnitude* would): band powers between ``1/max_period`` and ``1/min_period``,
the dominant period and its strength (share of in-band power at the peak). The repetition
period is kept only where the scene self-similarity and the flow autocorrelation agree within
``repetition_agreement``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from handclust.config import DescriptorConfig, RunConfig, SegmentConfig
from handclust.periodicity import autocorr_period, rhythm, rhythm_measurable, ssm_period

Frames = dict[str, npt.NDArray[np.generic]]


def flow_signal(flow_grid: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """The segment's dominant signed motion signal: projection on the flow grid's first PC."""
    g = np.asarray(flow_grid, np.float64)
    g = g - g.mean(axis=0)
    if len(g) < 3 or not np.any(g):
        return np.zeros(len(g))
    _, _, vt = np.linalg.svd(g, full_matrices=False)
    return g @ vt[0]


def _log_speed(x: npt.NDArray[np.generic]) -> npt.NDArray[np.float64]:
    return np.sign(x) * np.log1p(10 * np.abs(np.asarray(x, np.float64)))


def tool_presence(scores: npt.NDArray[np.floating], a: int, b: int) -> npt.NDArray[np.float32]:
    """``desc_tools`` of frames ``[a, b)``: mean over the scored frames (rows without NaN) of each
    prompt's max score; a segment with no scored frame takes the scored frame nearest its centre.

    ``scores`` is the clip's ``(n_frames, n_prompts)`` ``tool_scores``; ``(n_frames, 0)`` gives ``(0,)``.
    """
    s = np.asarray(scores, np.float64)
    if s.ndim != 2 or s.shape[1] == 0:
        return np.zeros(0, np.float32)
    scored = np.flatnonzero(~np.isnan(s).any(axis=1))
    idx = scored[(scored >= a) & (scored < b)]
    if len(idx) == 0:
        if len(scored) == 0:
            return np.zeros(s.shape[1], np.float32)
        idx = scored[[int(np.argmin(np.abs(scored - (a + b - 1) / 2)))]]
    return s[idx].mean(axis=0).astype(np.float32)


def describe_segment(frames: Frames, a: int, b: int, fps: float, cfg: DescriptorConfig) -> dict[str, object]:
    """Descriptors of frames ``[a, b)`` of one clip (``frames`` holds that clip's columns).

    Motion and ego-motion are pooled over the frames with a motion measurement (finite
    ``flow_mag_mean``; held frames of a low-rate source have none). ``unmeasured`` lists the
    modalities the segment could not measure; their descriptors are zeros and periods NaN.
    """
    from handclust.features.held import fill_held

    sl = slice(a, b)
    scene = np.asarray(frames["scene_embedding"][sl], np.float64)
    desc_scene = scene.mean(axis=0)
    desc_scene /= max(float(np.linalg.norm(desc_scene)), 1e-9)

    hist_all = np.asarray(frames["flow_direction_hist"][sl], np.float64)
    grid_all = np.asarray(frames["flow_grid"][sl], np.float64)
    measured = np.flatnonzero(np.isfinite(np.asarray(frames["flow_mag_mean"][sl], np.float64)))
    m = measured + a
    unmeasured: list[str] = []
    if len(measured):
        mag = _log_speed(frames["flow_mag_mean"][m])
        p90 = _log_speed(frames["flow_mag_p90"][m])
        hist, grid = hist_all[measured], grid_all[measured]
        desc_motion = np.concatenate([
            [mag.mean(), mag.std(), p90.mean(), p90.std()],
            hist.mean(axis=0), hist.std(axis=0),
            _log_speed(np.abs(grid).mean(axis=0)), _log_speed(grid.std(axis=0)),
        ])
        head = np.hypot(frames["ego_tx"][m], frames["ego_ty"][m])
        ego_cols = [_log_speed(head), _log_speed(frames["ego_tx"][m]), _log_speed(frames["ego_ty"][m]),
                    np.asarray(frames["ego_rotation"][m], np.float64), np.asarray(frames["ego_scale"][m], np.float64),
                    _log_speed(frames["ego_residual"][m]), np.asarray(frames["ego_ratio"][m], np.float64),
                    np.asarray(frames["ego_inliers"][m], np.float64)]
        desc_ego = np.concatenate([[c.mean() for c in ego_cols], [c.std() for c in ego_cols]])
    else:
        unmeasured += ["motion", "ego"]
        desc_motion = np.zeros(4 + 2 * hist_all.shape[1] + 2 * grid_all.shape[1])
        desc_ego = np.zeros(16)

    dts = np.asarray(frames["motion_dt"][m], np.float64) if "motion_dt" in frames else np.full(len(m), 1.0 / fps)
    if rhythm_measurable(dts, (b - a) / fps, cfg):
        sig = flow_signal(fill_held(grid_all))
        bands, period, strength = rhythm(sig, fps, cfg)
        flow_p = autocorr_period(sig, fps, cfg)
        ssm_p = ssm_period(scene, fps, cfg)
    else:
        unmeasured.append("rhythm")
        bands, period, strength = np.zeros(cfg.rhythm_bands, np.float32), float("nan"), float("nan")
        flow_p = ssm_p = float("nan")
    rep = float("nan")
    if np.isfinite(flow_p) and np.isfinite(ssm_p) and abs(flow_p - ssm_p) <= cfg.repetition_agreement * max(flow_p, ssm_p):
        rep = 0.5 * (flow_p + ssm_p)
    log_period = np.log(period) if np.isfinite(period) else np.log(cfg.max_period_s)
    desc_rhythm = np.concatenate([bands, [strength, strength * log_period]]) if np.isfinite(strength) else np.zeros(len(bands) + 2)
    extra: dict[str, object] = {}
    if "tool_scores" in frames:
        extra["desc_tools"] = tool_presence(frames["tool_scores"], a, b)
    hands, body = frames.get("hand_landmarks"), frames.get("body_landmarks")
    if hands is not None and body is not None and (np.shape(hands)[-1] or np.shape(body)[-1]):
        from handclust.features.keypoints import pose_descriptor

        extra["desc_pose"] = pose_descriptor(hands, body, a, b, fps, hand_motion=frames.get("hand_motion"), desc_cfg=cfg)
    if hands is not None and np.shape(hands)[-1] and "hand_source" in frames:
        from handclust.features.hands import DETECTED, PROPAGATED

        looked = ~np.isnan(np.asarray(hands[a:b, 0], np.float64))
        src = np.asarray(frames["hand_source"][a:b])[looked]
        extra.update(hand_looked=int(looked.sum()), hand_detected=int((src == DETECTED).sum()),
                     hand_propagated=int((src == PROPAGATED).sum()))
    return {
        **extra,
        "desc_scene": desc_scene.astype(np.float32),
        "desc_motion": desc_motion.astype(np.float32),
        "desc_ego": desc_ego.astype(np.float32),
        "desc_rhythm": desc_rhythm.astype(np.float32),
        "rhythm_period_s": period,
        "rhythm_strength": strength,
        "ssm_period_s": ssm_p,
        "flow_period_s": flow_p,
        "repetition_period_s": rep,
        "unmeasured": unmeasured,
    }


def descriptor_dims(cfg: RunConfig) -> dict[str, int]:
    """Width of each ``desc_*`` column this version writes under ``cfg``, without any footage.

    Only modalities whose width follows from the config: scene with the histogram encoder, motion,
    ego, rhythm, pose (MediaPipe layout), tools (one score per prompt). Widths of learned encoders
    (DINOv2 scene, V-JEPA-2 video) come from their checkpoints and are not listed. Computed by
    describing placeholder frame columns of the widths the frame stages write, so a change to
    :func:`describe_segment` changes the answer too.
    """
    from handclust.features.keypoints import BODY_WIDTH, HAND_SLOT
    from handclust.features.scene import scene_dim

    n, fps = 8, cfg.decode.sample_fps
    ones = np.ones(n, np.float32)
    frames: Frames = {
        "scene_embedding": np.ones((n, scene_dim(cfg.scene)), np.float32),
        "flow_direction_hist": np.ones((n, cfg.flow.direction_bins), np.float32),
        "flow_grid": np.ones((n, cfg.flow.grid * cfg.flow.grid * 2), np.float32),
        "motion_dt": np.full(n, 1.0 / fps, np.float32),
        **{k: ones for k in ("flow_mag_mean", "flow_mag_p90", "ego_tx", "ego_ty", "ego_rotation", "ego_scale",
                             "ego_residual", "ego_ratio", "ego_inliers")},
    }
    if cfg.tools.enabled:
        frames["tool_scores"] = np.zeros((n, len(cfg.tools.prompts)), np.float32)
    if cfg.pose.enabled:
        frames["hand_landmarks"] = np.zeros((n, cfg.pose.max_hands * HAND_SLOT if cfg.pose.hands else 0), np.float32)
        frames["body_landmarks"] = np.zeros((n, BODY_WIDTH if cfg.pose.body else 0), np.float32)
    d = describe_segment(frames, 0, n, fps, cfg.descriptor)
    widths = {k.removeprefix("desc_"): int(np.shape(v)[-1]) for k, v in d.items() if k.startswith("desc_")}
    if cfg.scene.encoder != "histogram":
        widths.pop("scene")
    return widths


class SegmentDescriber:
    """Stage: one clip's frame columns in, its segment rows out (segmentation + descriptors).

    Runs once per clip (Ray: ``groupby("clip_id").map_groups``); frames must be sorted by
    ``frame_idx``. Segment ids are uuid5 of the clip id and frame range, so a retried clip writes
    the same rows.
    """

    name = "segments"

    def __init__(self, seg_cfg: SegmentConfig, desc_cfg: DescriptorConfig, sample_fps: float):
        self.seg_cfg = seg_cfg
        self.desc_cfg = desc_cfg
        self.fps = sample_fps

    def setup(self) -> None:
        pass

    def __call__(self, frames: Frames) -> dict[str, npt.NDArray[np.generic]]:
        import uuid

        from handclust.segmentation import motion_signals, segment_clip

        order = np.argsort(frames["frame_idx"], kind="stable")
        frames = {k: np.asarray(v)[order] for k, v in frames.items()}
        scene = np.asarray(frames["scene_embedding"], np.float64)
        seg = segment_clip(motion_signals(frames), scene, self.fps, self.seg_cfg)
        clip_id = str(frames["clip_id"][0])
        t = np.asarray(frames["t"], np.float64)
        rows: dict[str, list[object]] = {}
        for i, (a, b) in enumerate(zip(seg.starts, seg.ends, strict=True)):
            d = describe_segment(frames, int(a), int(b), self.fps, self.desc_cfg)
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
