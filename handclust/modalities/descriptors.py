"""Segment descriptors, one function per modality: pooled scene and motion features, ego-motion
summary, flow rhythm and repetition period, tool presence, hand and body keypoints. Pure numpy on
one clip's frame arrays; :mod:`handclust.modalities.registry` registers each function with its modality.

Each function takes a :class:`SegmentFrames` (one segment of one clip) and returns a
:class:`Description` (the ``desc_<modality>`` vector, whether the segment could measure it, and any
extra segment columns), or None when the clip's frames hold nothing of the modality (its frame
stage is off), so the column is written empty.

Flow rhythm is a windowed FFT (Welch) of the segment's dominant signed flow signal (first
principal component of the flow grid, so a reach-and-return shows its full period, not half of
it as the flow *magnitude* would): band powers between ``1/max_period`` and ``1/min_period``,
the dominant period and its strength (share of in-band power at the peak). The repetition
period is kept only where the scene self-similarity and the flow autocorrelation agree within
``repetition_agreement``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from handclust.config import DescriptorConfig
from handclust.core.periodicity import autocorr_period, rhythm, rhythm_measurable, ssm_period

Frames = dict[str, npt.NDArray[np.generic]]


@dataclass(frozen=True)
class SegmentFrames:
    """Frames ``[a, b)`` of one clip, as every modality's descriptor function sees them.

    ``frames`` holds the clip's frame columns (``(n_frames, ...)`` each), sampled at ``fps``.
    """

    frames: Frames
    a: int
    b: int
    fps: float
    cfg: DescriptorConfig

    def column(self, name: str) -> npt.NDArray[np.generic]:
        """The segment's rows of one frame column."""
        return np.asarray(self.frames[name][self.a:self.b])

    @functools.cached_property
    def measured(self) -> npt.NDArray[np.intp]:
        """Clip frame indices in ``[a, b)`` with a motion measurement (finite ``flow_mag_mean``; held
        frames of a low-rate source have none)."""
        return np.flatnonzero(np.isfinite(np.asarray(self.column("flow_mag_mean"), np.float64))) + self.a


@dataclass(frozen=True)
class Description:
    """One modality's description of one segment.

    ``vector``: the ``desc_<modality>`` row; ``measured`` False lists the modality in the segment's
    ``unmeasured`` column (its vector is then zeros, so fusion leaves it out); ``columns``: other
    segment columns the modality writes (e.g. rhythm's periods).
    """

    vector: npt.NDArray[np.floating]
    measured: bool = True
    columns: Mapping[str, object] = field(default_factory=dict)


DescribeFn = Callable[[SegmentFrames], Description | None]


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


def _unit_mean(rows: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The mean of ``(n, D)`` rows, scaled to unit length."""
    mean = np.asarray(rows, np.float64).mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-9)


def describe_scene(seg: SegmentFrames) -> Description:
    """``desc_scene``: the unit-length mean of the segment's scene embeddings."""
    return Description(_unit_mean(seg.column("scene_embedding")))


def describe_motion(seg: SegmentFrames) -> Description:
    """``desc_motion``: log flow speed (mean, p90: mean and std), direction histogram and flow grid
    (mean and std), pooled over the frames with a motion measurement; zeros, unmeasured, without one."""
    hist_all = np.asarray(seg.column("flow_direction_hist"), np.float64)
    grid_all = np.asarray(seg.column("flow_grid"), np.float64)
    m = seg.measured
    if not len(m):
        return Description(np.zeros(4 + 2 * hist_all.shape[1] + 2 * grid_all.shape[1]), measured=False)
    f = seg.frames
    mag, p90 = _log_speed(f["flow_mag_mean"][m]), _log_speed(f["flow_mag_p90"][m])
    hist, grid = hist_all[m - seg.a], grid_all[m - seg.a]
    return Description(np.concatenate([
        [mag.mean(), mag.std(), p90.mean(), p90.std()],
        hist.mean(axis=0), hist.std(axis=0),
        _log_speed(np.abs(grid).mean(axis=0)), _log_speed(grid.std(axis=0)),
    ]))


def describe_ego(seg: SegmentFrames) -> Description:
    """``desc_ego``: mean and std of the head's motion (speed, translation, rotation, zoom), the motion it
    does not explain and the fit's quality, over the frames with a motion measurement."""
    m = seg.measured
    if not len(m):
        return Description(np.zeros(16), measured=False)
    f = seg.frames
    head = np.hypot(f["ego_tx"][m], f["ego_ty"][m])
    cols = [_log_speed(head), _log_speed(f["ego_tx"][m]), _log_speed(f["ego_ty"][m]),
            np.asarray(f["ego_rotation"][m], np.float64), np.asarray(f["ego_scale"][m], np.float64),
            _log_speed(f["ego_residual"][m]), np.asarray(f["ego_ratio"][m], np.float64),
            np.asarray(f["ego_inliers"][m], np.float64)]
    return Description(np.concatenate([[c.mean() for c in cols], [c.std() for c in cols]]))


def describe_rhythm(seg: SegmentFrames) -> Description:
    """``desc_rhythm``: flow-rhythm band powers, strength and strength x log period; also the period
    columns (``rhythm_period_s``, ``rhythm_strength``, ``ssm_period_s``, ``flow_period_s``,
    ``repetition_period_s``). Unmeasured where distinct frames are too few or too irregular to resolve
    periods down to ``descriptor.min_period_s``: zeros and NaN periods, not the hold's period."""
    from handclust.core.held import fill_held

    cfg, m = seg.cfg, seg.measured
    dts = np.asarray(seg.frames["motion_dt"][m], np.float64) if "motion_dt" in seg.frames else np.full(len(m), 1.0 / seg.fps)
    measurable = rhythm_measurable(dts, (seg.b - seg.a) / seg.fps, cfg)
    if measurable:
        sig = flow_signal(fill_held(np.asarray(seg.column("flow_grid"), np.float64)))
        bands, period, strength = rhythm(sig, seg.fps, cfg)
        flow_p = autocorr_period(sig, seg.fps, cfg)
        ssm_p = ssm_period(np.asarray(seg.column("scene_embedding"), np.float64), seg.fps, cfg)
    else:
        bands, period, strength = np.zeros(cfg.rhythm_bands, np.float32), float("nan"), float("nan")
        flow_p = ssm_p = float("nan")
    rep = float("nan")
    if np.isfinite(flow_p) and np.isfinite(ssm_p) and abs(flow_p - ssm_p) <= cfg.repetition_agreement * max(flow_p, ssm_p):
        rep = 0.5 * (flow_p + ssm_p)
    log_period = np.log(period) if np.isfinite(period) else np.log(cfg.max_period_s)
    desc = np.concatenate([bands, [strength, strength * log_period]]) if np.isfinite(strength) else np.zeros(len(bands) + 2)
    return Description(desc, measured=measurable, columns={
        "rhythm_period_s": period, "rhythm_strength": strength, "ssm_period_s": ssm_p, "flow_period_s": flow_p,
        "repetition_period_s": rep})


def describe_tools(seg: SegmentFrames) -> Description | None:
    """``desc_tools`` (:func:`tool_presence`); None when OWLv2 did not run on the clip."""
    if "tool_scores" not in seg.frames:
        return None
    return Description(tool_presence(seg.frames["tool_scores"], seg.a, seg.b))


def describe_video(seg: SegmentFrames) -> Description | None:
    """``desc_video``: the unit-length mean of the segment's rows' V-JEPA-2 window vectors (each
    window weighted by how many of its frames the segment holds); None when V-JEPA-2 did not run."""
    v = seg.frames.get("video_emb")
    if v is None or not np.shape(v)[-1]:
        return None
    return Description(_unit_mean(v[seg.a:seg.b]))


def describe_pose(seg: SegmentFrames) -> Description | None:
    """``desc_pose`` (:func:`handclust.modalities.features.keypoints.pose_descriptor`) and the segment's hand
    coverage (``hand_looked``, ``hand_detected``, ``hand_propagated``); None when MediaPipe did not run."""
    f, a, b = seg.frames, seg.a, seg.b
    hands, body = f.get("hand_landmarks"), f.get("body_landmarks")
    if hands is None or body is None or not (np.shape(hands)[-1] or np.shape(body)[-1]):
        return None
    from handclust.modalities.features.keypoints import pose_descriptor

    desc = pose_descriptor(hands, body, a, b, seg.fps, hand_motion=f.get("hand_motion"), desc_cfg=seg.cfg)
    columns: dict[str, object] = {}
    if np.shape(hands)[-1] and "hand_source" in f:
        from handclust.modalities.features.hands import DETECTED, PROPAGATED

        looked = ~np.isnan(np.asarray(hands[a:b, 0], np.float64))
        src = np.asarray(f["hand_source"][a:b])[looked]
        columns = {"hand_looked": int(looked.sum()), "hand_detected": int((src == DETECTED).sum()),
                   "hand_propagated": int((src == PROPAGATED).sum())}
    return Description(desc, columns=columns)


def describe_segment(frames: Frames, a: int, b: int, fps: float, cfg: DescriptorConfig,
                     describers: Iterable[tuple[str, DescribeFn]]) -> dict[str, object]:
    """Segment columns of frames ``[a, b)`` of one clip: ``desc_<name>`` of each ``(name, function)``
    in ``describers`` that describes the clip, their extra columns, and ``unmeasured`` (the names,
    in order, that could not be measured there)."""
    seg = SegmentFrames(frames, a, b, fps, cfg)
    out: dict[str, object] = {}
    unmeasured: list[str] = []
    for name, describe in describers:
        d = describe(seg)
        if d is None:
            continue
        out.update(d.columns)
        out[f"desc_{name}"] = np.asarray(d.vector).astype(np.float32)
        if not d.measured:
            unmeasured.append(name)
    out["unmeasured"] = unmeasured
    return out
