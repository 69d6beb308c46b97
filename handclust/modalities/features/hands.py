"""Hands where the detector misses them, and hand motion without head motion.

On gloved, fisheye helmet footage MediaPipe finds a hand on a few percent of frames. Two passes
over one clip's columns make that sparse signal usable:

1. **Anchored propagation** (:func:`propagate_hands`). Frames where a detector found a hand are
   anchors. From each anchor the hand's 21 keypoints are carried forward and backward along the
   sampled frames with pyramidal Lucas-Kanade optical flow on the grey frames, one frame pair at
   a time, for at most ``pose.max_age_frames`` frames. A track stops at the first sign of
   failure: a keypoint whose forward-backward error exceeds ``pose.track_fb_error_px`` is lost,
   and the track ends when fewer than ``pose.track_min_points`` of them remain; it ends at a
   scene cut (:func:`scene_cuts`); and when it reaches the next frame with detections it ends
   there, kept only if it lands within ``pose.track_max_drift`` of a detected hand (or that frame
   detected fewer hands than the anchor did, so the track may be the hand it missed), else the
   whole track is dropped as drifted. Propagated hands are written on frames the detector looked
   at (``pose.fps``) and missed; frames between looks are tracked through, never written, so rates
   keep their meaning.

2. **Ego-compensated wrist motion** (:func:`compensated_hand_motion`). A wrist's image motion on a
   helmet camera is mostly the head. The per-frame similarity fit of
   :class:`~handclust.modalities.features.motion.MotionFeatures` (``ego_tx``, ``ego_ty``, ``ego_rotation``,
   ``ego_scale`` over ``motion_dt``) is composed between consecutive looked-at frames and applied
   to the earlier wrist; what is left is the hand moving in the world.

Columns added to a clip's frame columns (:class:`HandTracks`, a per-clip pass both runners run
after the frame stages, before segmentation):

- ``hand_landmarks``: detected hands, plus propagated hands on looked-at frames (same layout,
  :mod:`handclust.modalities.features.keypoints`; a propagated hand keeps its anchor's score).
- ``hand_source`` ``(n,)`` int8: :data:`NO_HAND`, :data:`DETECTED` (the detector found a hand on
  this frame) or :data:`PROPAGATED` (only propagated hands).
- ``hand_age`` ``(n, max_hands)`` float32 per slot: 0 detected, k propagated from an anchor k
  sampled frames away, NaN no hand.
- ``hand_motion`` ``(n, max_hands * 2)`` float32 per slot: ego-compensated wrist velocity (vx, vy)
  in frame widths per second since the previous looked-at frame with a hand, NaN where none.

Pixels are never kept: :class:`HandTracks` re-decodes the clip (same backend, rate and width as
the first pass, so the same frames) and keeps grey frames only within ``max_age_frames`` of an
anchor, then drops them; a clip without anchors is not decoded again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from handclust.config import PoseConfig
from handclust.modalities.features.keypoints import HAND_POINTS, HAND_SLOT, WRIST
from handclust.stages import Batch, frame_step

log = logging.getLogger(__name__)

NO_HAND, DETECTED, PROPAGATED = 0, 1, 2
HIST_BINS = 32
Grey = npt.NDArray[np.uint8]


class AnchorSource(Protocol):
    """Something that finds hands on a clip's frames: clip frame columns in, ``(n, max_hands *
    HAND_SLOT)`` hand rows out (the ``hand_landmarks`` layout; a slot with score 0 or NaN is empty).

    MediaPipe's rows (:class:`MediaPipeAnchors`) are the default; a second detector (a glove or
    box detector whose box is turned into keypoints) is another source, and its hands become
    anchors too.
    """

    def __call__(self, frames: Batch) -> npt.NDArray[np.float32]: ...


class MediaPipeAnchors:
    """The hands MediaPipe found (the ``hand_landmarks`` column) with a score of at least ``min_score``."""

    def __init__(self, min_score: float = 0.0):
        self.min_score = min_score

    def __call__(self, frames: Batch) -> npt.NDArray[np.float32]:
        rows = np.array(frames["hand_landmarks"], np.float32, copy=True)
        if rows.size:
            slots = rows.reshape(len(rows), -1, HAND_SLOT)
            weak = np.nan_to_num(slots[:, :, 0]) < max(self.min_score, 1e-9)
            slots[weak, 1:] = np.nan
            slots[weak & ~np.isnan(slots[:, :, 0]), 0] = 0.0
        return rows


def merge_anchor_rows(rows: Sequence[npt.NDArray[np.floating]], max_hands: int,
                      same_hand: float = 0.05) -> npt.NDArray[np.float32]:
    """Hands of several anchor sources, frame by frame: the highest-scoring hands first, a hand
    whose wrist lies within ``same_hand`` (frame units) of one already taken is the same hand.
    Slots are ordered left to right by wrist x, as MediaPipe's are."""
    out = np.array(rows[0], np.float32, copy=True)
    if len(rows) == 1:
        return out
    n = len(out)
    for i in range(n):
        hands = [(float(s[0]), s[1:].reshape(HAND_POINTS, 3)) for r in rows
                 for s in np.asarray(r[i], np.float32).reshape(-1, HAND_SLOT) if np.nan_to_num(s[0]) > 0]
        looked = any(not np.isnan(np.asarray(r[i], np.float32)[0]) for r in rows)
        out[i] = _row(_dedupe(sorted(hands, key=lambda h: -h[0]), same_hand, max_hands), max_hands, looked)
    return out


def _dedupe(hands: list[tuple[float, npt.NDArray[np.float32]]], radius: float, limit: int,
            ) -> list[tuple[float, npt.NDArray[np.float32]]]:
    kept: list[tuple[float, npt.NDArray[np.float32]]] = []
    for score, pts in hands:
        if all(np.hypot(*(pts[WRIST, :2] - k[WRIST, :2])) > radius for _, k in kept):
            kept.append((score, pts))
        if len(kept) == limit:
            break
    return kept


def _row(hands: list[tuple[float, npt.NDArray[np.float32]]], max_hands: int, looked: bool) -> npt.NDArray[np.float32]:
    row = np.full(max_hands * HAND_SLOT, np.nan, np.float32)
    if looked or hands:
        row[::HAND_SLOT] = 0.0
    for slot, (score, pts) in enumerate(sorted(hands, key=lambda h: float(h[1][WRIST, 0]))[:max_hands]):
        row[slot * HAND_SLOT] = score
        row[slot * HAND_SLOT + 1 : (slot + 1) * HAND_SLOT] = pts.ravel()
    return row


def scene_cuts(grey: Grey, min_similarity: float = 0.5) -> npt.NDArray[np.bool_]:
    """``(n,)`` True where frame ``k`` starts a new shot: its grey histogram overlaps the previous
    frame's by less than ``min_similarity`` (histogram intersection, 1 = same distribution).
    Camera motion moves the content but keeps its histogram; a cut to another scene does not."""
    n = len(grey)
    cuts = np.zeros(n, bool)
    prev = None
    for k in range(n):
        h = np.bincount((np.asarray(grey[k], np.uint8).ravel() >> 3).astype(np.int64), minlength=HIST_BINS).astype(np.float64)
        h /= max(h.sum(), 1.0)
        if prev is not None:
            cuts[k] = float(np.minimum(h, prev).sum()) < min_similarity
        prev = h
    return cuts


def _lk_step(a: Grey, b: Grey, pts: npt.NDArray[np.float32], fb_max: float,
             ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Track ``pts`` ``(k, 2)`` px from ``a`` to ``b``; returns the new points and which held
    (found both ways, forward-backward error at most ``fb_max`` px, inside the frame)."""
    import cv2

    params = {"winSize": (15, 15), "maxLevel": 3,
              "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)}
    p0 = np.ascontiguousarray(pts, np.float32).reshape(-1, 1, 2)
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, None, **params)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(b, a, p1, None, **params)
    fb = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
    h, w = a.shape[:2]
    q = p1.reshape(-1, 2)
    inside = (q[:, 0] >= 0) & (q[:, 0] < w) & (q[:, 1] >= 0) & (q[:, 1] < h)
    ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb <= fb_max) & inside
    return q.astype(np.float32), ok


def _hands_in(row: npt.NDArray[np.floating]) -> list[tuple[float, npt.NDArray[np.float32]]]:
    slots = np.asarray(row, np.float32).reshape(-1, HAND_SLOT)
    return [(float(s[0]), s[1:].reshape(HAND_POINTS, 3).copy()) for s in slots if np.nan_to_num(s[0]) > 0]


def propagate_hands(grey: Grey, hands: npt.NDArray[np.floating], cfg: PoseConfig,
                    looked: npt.NDArray[np.bool_] | None = None, cuts: npt.NDArray[np.bool_] | None = None,
                    ) -> dict[str, npt.NDArray[Any]]:
    """Carry detected hands to the frames around them where the detector missed.

    ``grey`` ``(n, H, W)`` uint8: consecutive sampled frames of one clip. ``hands`` ``(n,
    max_hands * HAND_SLOT)``: detections in the ``hand_landmarks`` layout (x, y in [0, 1] of the
    frame); every hand in it is an anchor. ``looked`` ``(n,)``: frames a propagated hand may be
    written on (default: the rows the detector looked at, slot-0 score not NaN). ``cuts`` ``(n,)``:
    True where a frame starts a new shot (default :func:`scene_cuts` of ``grey``).

    Returns ``hand_landmarks`` (same shape, detections kept, propagated hands added), ``hand_source``
    ``(n,)`` int8 and ``hand_age`` ``(n, max_hands)`` float32 (module docstring).
    """
    grey = np.asarray(grey, np.uint8)
    rows = np.asarray(hands, np.float32)
    n, max_hands = len(rows), cfg.max_hands
    h, w = grey.shape[1:3]
    scale = np.array([w, h], np.float32)
    looked = ~np.isnan(rows[:, 0]) if looked is None else np.asarray(looked, bool)
    cuts = scene_cuts(grey, cfg.cut_min_similarity) if cuts is None else np.asarray(cuts, bool)
    detected = [_hands_in(r) for r in rows]
    # candidates[k]: (age, score, points (21, 3)) of tracks that reached frame k and were kept
    candidates: list[list[tuple[int, float, npt.NDArray[np.float32]]]] = [[] for _ in range(n)]
    min_points = int(np.ceil(cfg.track_min_points * HAND_POINTS))
    drift_px = cfg.track_max_drift * w
    for a in np.flatnonzero([len(d) > 0 for d in detected]):
        for score, pts in detected[a]:
            for direction in (1, -1):
                track = _track(grey, cuts, detected, int(a), direction, pts[:, :2] * scale, cfg.max_age_frames,
                               cfg.track_fb_error_px, min_points, drift_px, scale)
                for k, p in track:
                    if looked[k]:
                        out_pts = pts.copy()
                        out_pts[:, :2] = p / scale
                        candidates[k].append((abs(k - int(a)), score, out_pts))
    out = rows.copy()
    source = np.where([len(d) > 0 for d in detected], DETECTED, NO_HAND).astype(np.int8)
    age = np.full((n, max_hands), np.nan, np.float32)
    radius = cfg.track_max_drift
    for k in range(n):
        found = [(0, s, p) for s, p in detected[k]]
        if not looked[k] or not candidates[k]:
            _ages(age, k, found, max_hands)
            continue
        pool = found + sorted(candidates[k], key=lambda c: (c[0], -c[1]))
        kept: list[tuple[int, float, npt.NDArray[np.float32]]] = []
        for c in pool:
            if all(np.hypot(*(c[2][WRIST, :2] - q[2][WRIST, :2])) > radius for q in kept):
                kept.append(c)
            if len(kept) == max_hands:
                break
        kept.sort(key=lambda c: float(c[2][WRIST, 0]))
        out[k] = _row([(s, p) for _, s, p in kept], max_hands, True)
        _ages(age, k, kept, max_hands)
        if not found and kept:
            source[k] = PROPAGATED
    return {"hand_landmarks": out, "hand_source": source, "hand_age": age}


def _ages(age: npt.NDArray[np.float32], k: int, hands: list[tuple[int, float, npt.NDArray[np.float32]]], max_hands: int) -> None:
    for slot, (a, _, _) in enumerate(sorted(hands, key=lambda c: float(c[2][WRIST, 0]))[:max_hands]):
        age[k, slot] = a


def _track(grey: Grey, cuts: npt.NDArray[np.bool_], detected: list[list[tuple[float, npt.NDArray[np.float32]]]],
           a: int, direction: int, pts: npt.NDArray[np.float32], max_age: int, fb_max: float, min_points: int,
           drift_px: float, scale: npt.NDArray[np.float32]) -> list[tuple[int, npt.NDArray[np.float32]]]:
    """Frames ``a + direction * j`` (j = 1..max_age) the hand at ``pts`` (px) reaches, with its points there."""
    n = len(grey)
    out: list[tuple[int, npt.NDArray[np.float32]]] = []
    p = pts.astype(np.float32)
    for j in range(1, max_age + 1):
        k = a + direction * j
        if not 0 <= k < n or cuts[max(k, k - direction)]:  # cut between k-1 and k (forward) or k and k+1 (backward)
            break
        q, ok = _lk_step(grey[k - direction], grey[k], p, fb_max)
        if ok.sum() < min_points:
            break
        # Lost keypoints follow the median motion of the held ones, so the hand keeps its shape.
        shift = np.median(q[ok] - p[ok], axis=0)
        p = np.where(ok[:, None], q, p + shift).astype(np.float32)
        if detected[k]:
            dist = min(float(np.linalg.norm(p - d[:, :2] * scale, axis=1).mean()) for _, d in detected[k])
            if dist <= drift_px:
                break  # agrees with a detection, which takes over from here
            if len(detected[k]) >= len(detected[a]):
                return []  # drifted away from every hand found there: nothing this track reached is trusted
            # Otherwise that frame found fewer hands than the anchor: this may be the one it missed.
        out.append((k, p.copy()))
    return out


def _similarity(tx: float, ty: float, rotation: float, scale: float, dt: float, centre: npt.NDArray[np.float64],
                ) -> npt.NDArray[np.float64]:
    """3x3 map of the previous frame's points to this frame's (frame-width units), from the ego columns."""
    th, s = rotation * dt, np.exp(scale * dt)
    a = s * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = centre - a @ centre + np.array([tx, ty]) * dt
    return m


def compensated_hand_motion(hand_landmarks: npt.NDArray[np.floating], frames: Batch, aspect: float, fps: float,
                            max_gap: int = 4) -> npt.NDArray[np.float32]:
    """``(n, max_hands * 2)`` ego-compensated wrist velocity per hand slot, frame widths per second.

    ``hand_landmarks`` ``(n, max_hands * HAND_SLOT)`` of one clip, in frame order; ``frames``
    holds that clip's ``ego_tx``, ``ego_ty``, ``ego_rotation``, ``ego_scale`` and ``motion_dt``
    (:mod:`handclust.modalities.features.motion`); ``aspect`` is height / width of the decoded frames. For
    each hand on a looked-at frame ``j``, the previous looked-at frame ``i`` with a hand (at most
    ``max_gap`` looks back) is found; the camera motion between them (the frame-to-frame
    similarity fits composed; a frame without a fit, held or first, shows the same image as the
    one before it) moves ``i``'s wrists to where they would be had the hand stayed still in the
    world, and the nearest of them is this hand's start. Velocity = (wrist at j - moved wrist) /
    (j - i) * fps. NaN where there is no earlier hand to compare with.
    """
    rows = np.asarray(hand_landmarks, np.float64)
    n = len(rows)
    if not rows.size:
        return np.zeros((n, 0), np.float32)
    slots = rows.reshape(n, -1, HAND_SLOT)
    n_slots = slots.shape[1]
    out = np.full((n, n_slots, 2), np.nan, np.float32)
    present = np.nan_to_num(slots[:, :, 0]) > 0
    looked = ~np.isnan(slots[:, 0, 0])
    wrists = slots[:, :, 1 + 3 * WRIST : 3 + 3 * WRIST] * np.array([1.0, aspect])  # (n, slots, 2) frame widths
    centre = np.array([0.5, 0.5 * aspect])
    cols = [np.asarray(frames[c], np.float64) for c in ("ego_tx", "ego_ty", "ego_rotation", "ego_scale")]
    dt = np.asarray(frames["motion_dt"], np.float64) if "motion_dt" in frames else np.full(n, 1.0 / fps)
    step = [np.eye(3) if not (np.isfinite(dt[k]) and all(np.isfinite(c[k]) for c in cols))
            else _similarity(*(c[k] for c in cols), dt[k], centre) for k in range(n)]
    seen = np.flatnonzero(looked)
    last = None  # index of the previous looked-at frame with a hand
    looks_since = 0
    for j in seen:
        if last is not None and present[j].any() and looks_since <= max_gap:
            m = np.eye(3)
            for k in range(last + 1, j + 1):
                m = step[k] @ m
            before = wrists[last][present[last]]
            moved = before @ m[:2, :2].T + m[:2, 2]
            for s in np.flatnonzero(present[j]):
                d = wrists[j, s] - moved[int(np.argmin(np.linalg.norm(moved - wrists[j, s], axis=1)))]
                out[j, s] = d * fps / (j - last)
        if present[j].any():
            last, looks_since = int(j), 0
        else:
            looks_since += 1
    return out.reshape(n, n_slots * 2)


def grey_frames(path: str, needed: npt.NDArray[np.bool_], sample_fps: float, width: int, chunk_frames: int,
                backend: str) -> Iterator[tuple[int, Grey]]:
    """``(frame_idx, grey)`` of the sampled frames marked in ``needed`` ``(n_frames,)``, re-decoded the
    way the first pass decoded them; stops decoding after the last one needed."""
    return sampled_frames(path, needed, sample_fps, width, chunk_frames, backend, grey=True)


def sampled_frames(path: str, needed: npt.NDArray[np.bool_], sample_fps: float, width: int, chunk_frames: int,
                   backend: str, grey: bool = False) -> Iterator[tuple[int, npt.NDArray[np.uint8]]]:
    """``(frame_idx, frame)`` of the sampled frames marked in ``needed``, RGB (or ``grey``), re-decoded
    the way the first pass decoded them; stops decoding after the last one needed."""
    import cv2

    from handclust.io.video import open_video

    if not needed.any():
        return
    last = int(np.flatnonzero(needed)[-1])
    source = open_video(path, sample_fps, width, chunk_frames, backend)
    chunks = source.chunks()
    try:
        for chunk in chunks:
            for i, fi in enumerate(chunk.frame_idx):
                if fi < len(needed) and needed[fi]:
                    yield int(fi), cv2.cvtColor(chunk.frames[i], cv2.COLOR_RGB2GRAY) if grey else chunk.frames[i]
            if int(chunk.frame_idx[-1]) >= last:
                break
    finally:
        chunks.close()  # type: ignore[attr-defined]


def dense_looks(hands: npt.NDArray[np.float32], step: int, idle_step: int) -> npt.NDArray[np.bool_]:
    """``(n,)`` frames the hand model should also look at: on the ``pose.fps`` grid (``frame_idx %
    step == 0``), not looked at yet, and within ``idle_step`` frames of a look that found a hand, so
    every stretch between two idle looks next to a found hand is looked at densely."""
    n = len(hands)
    if idle_step <= step or not n:
        return np.zeros(n, bool)
    looked = ~np.isnan(hands[:, 0])
    found = looked & (np.nan_to_num(hands.reshape(n, -1, HAND_SLOT)[:, :, 0]) > 0).any(axis=1)
    grid = np.arange(n) % step == 0
    return grid & ~looked & needed_frames(found, idle_step)


def needed_frames(anchor: npt.NDArray[np.bool_], max_age: int) -> npt.NDArray[np.bool_]:
    """``(n,)`` frames within ``max_age`` of an anchor: the only ones propagation looks at.

    A window sum over a cumulative count, not ``np.convolve(mode="same")``: that returns
    ``max(n, kernel)`` values, so a clip shorter than the window (under ~4 s at 5 fps) failed.
    """
    n = len(anchor)
    counts = np.concatenate([[0], np.cumsum(np.asarray(anchor, bool), dtype=np.int64)])
    idx = np.arange(n)
    lo, hi = np.clip(idx - max_age, 0, n), np.clip(idx + max_age + 1, 0, n)
    return np.asarray(counts[hi] - counts[lo] > 0, dtype=bool)


class HandTracks:
    """Per-clip pass (after the frame stages, before segmentation; both runners): anchored
    propagation and ego-compensated wrist motion on one clip's frame columns (module docstring).

    First, where the frame stage looked at the idle rate (``pose.idle_fps``) and found a hand, the
    hand model looks at ``pose.fps`` around it (:func:`dense_looks`, re-decoded RGB frames).

    ``anchor_sources``: detectors whose hands are anchors (default: MediaPipe's ``hand_landmarks``).
    ``read_grey``: ``(needed) -> iterable of (frame_idx, grey)``; default re-decodes ``path``.
    ``hand_model``: ``(RGB frames) -> hand rows`` for the dense looks; default MediaPipe Hands
    (:meth:`~handclust.modalities.features.keypoints.HandPoseKeypoints.hand_rows`), built on first use.
    """

    name = "hand_tracks"

    def __init__(self, cfg: PoseConfig, sample_fps: float, width: int, chunk_frames: int,
                 anchor_sources: Sequence[AnchorSource] = (),
                 hand_model: Callable[[list[npt.NDArray[np.uint8]]], npt.NDArray[np.float32]] | None = None):
        from handclust.modalities.features.keypoints import idle_step

        self.cfg = cfg
        self.sample_fps = sample_fps
        self.width = width
        self.chunk_frames = chunk_frames
        self.anchor_sources = list(anchor_sources) or [MediaPipeAnchors()]
        self.step = frame_step(cfg.fps, sample_fps)
        self.idle_step = idle_step(cfg, sample_fps)
        self._hand_model = hand_model

    def hand_model(self) -> Callable[[list[npt.NDArray[np.uint8]]], npt.NDArray[np.float32]]:
        if self._hand_model is None:
            from handclust.modalities.features.keypoints import HandPoseKeypoints

            self._hand_model = HandPoseKeypoints(self.cfg.model_copy(update={"body": False}), self.sample_fps).hand_rows
        return self._hand_model

    def setup(self) -> None:
        import cv2

        cv2.setNumThreads(1)

    def __call__(self, frames: Batch, path: str, frame_size: Sequence[int], backend: str = "auto",
                 read_grey: Callable[[npt.NDArray[np.bool_]], Iterable[tuple[int, Grey]]] | None = None) -> Batch:
        """``frames``: one clip's columns sorted by ``frame_idx`` (0..n-1), with ``hand_landmarks``;
        ``frame_size``: (height, width) of the decoded frames. Returns the columns with the hand
        columns above added (``hand_landmarks`` replaced)."""
        out = dict(frames)
        hands = np.asarray(frames["hand_landmarks"], np.float32)
        n = len(hands)
        if hands.ndim != 2 or hands.shape[1] == 0:  # pose.hands off
            out["hand_source"] = np.zeros(n, np.int8)
            out["hand_age"] = out["hand_motion"] = np.zeros((n, 0), np.float32)
            return out
        dense = dense_looks(hands, self.step, self.idle_step)
        anchors = merge_anchor_rows([src(frames) for src in self.anchor_sources], self.cfg.max_hands)
        has = np.array([len(_hands_in(r)) > 0 for r in anchors])
        looked = ~np.isnan(hands[:, 0])
        result = {"hand_landmarks": anchors, "hand_source": np.where(has, DETECTED, NO_HAND).astype(np.int8),
                  "hand_age": _detected_ages(anchors, self.cfg.max_hands)}
        # One re-decode serves both: the dense looks, and propagation around every anchor they may add
        # (anchors lie within idle_step of a found hand, so max_age around them covers their tracks).
        need = dense.copy()
        if self.cfg.propagate and (has.any() or dense.any()):
            need |= needed_frames(has | dense, self.cfg.max_age_frames)
        if need.any():
            fi = np.asarray(frames["frame_idx"], np.int64)
            if not np.array_equal(fi, np.arange(n)):
                raise ValueError(f"{path}: the hand pass needs the clip's frames in order from 0 (got frame_idx "
                                 f"{fi[:3].tolist()}...); this is a bug in the runner")
            if read_grey is not None:
                if dense.any():
                    raise ValueError("read_grey gives grey frames, and the dense hand looks need colour: leave it "
                                     "unset (the pass re-decodes the clip) or set pose.idle_fps=null")
                grey_in = read_grey

                def reader(m: npt.NDArray[np.bool_]) -> Iterator[tuple[int, Any, Grey]]:
                    return ((i, None, g) for i, g in grey_in(m))
            else:
                import cv2

                def reader(m: npt.NDArray[np.bool_]) -> Iterator[tuple[int, Any, Grey]]:
                    for i, rgb in sampled_frames(path, m, self.sample_fps, self.width, self.chunk_frames, backend):
                        yield i, rgb, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)

            result = self._pass(frames, hands.copy(), dense, looked, need, reader, int(frame_size[0]),
                                int(frame_size[1]), result)
        out.update(result)
        h, w = frame_size
        out["hand_motion"] = compensated_hand_motion(out["hand_landmarks"], frames, float(h) / float(w), self.sample_fps)
        return out

    def _pass(self, frames: Batch, hands: npt.NDArray[np.float32], dense: npt.NDArray[np.bool_],
              looked: npt.NDArray[np.bool_], need: npt.NDArray[np.bool_],
              reader: Callable[[npt.NDArray[np.bool_]], Iterable[tuple[int, Any, Grey]]], h: int, w: int,
              result: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        # Runs of consecutive needed frames are independent (no look window and no track crosses a
        # frame nobody needs): each run's dense looks are made as its frames arrive, then its anchors
        # are propagated, so only one run's grey pixels are held.
        n = len(hands)
        starts = np.flatnonzero(need & ~np.r_[False, need[:-1]])
        ends = np.flatnonzero(need & ~np.r_[need[1:], False]) + 1
        run = 0
        buf: list[Grey] = []
        for fi, rgb, grey in reader(need):
            if run >= len(starts):
                break
            if grey.shape != (h, w):
                raise ValueError(f"re-decoded frame {fi} is {grey.shape}, the first pass gave {(h, w)}")
            if dense[fi]:
                hands[fi] = self.hand_model()([rgb])[0]
            buf.append(grey)
            if fi == ends[run] - 1:
                a, b = int(starts[run]), int(ends[run])
                if len(buf) != b - a:
                    raise ValueError(f"re-decoding gave {len(buf)} frames for frames {a}..{b - 1}")
                if dense[a:b].any():  # the run's anchors again, with the dense looks' hands
                    part = {k: v[a:b] if isinstance(v, np.ndarray) and len(v) == n else v for k, v in frames.items()}
                    part["hand_landmarks"] = hands[a:b]
                    rows = merge_anchor_rows([src(part) for src in self.anchor_sources], self.cfg.max_hands)
                    found = np.array([len(_hands_in(r)) > 0 for r in rows])
                    result["hand_landmarks"][a:b] = rows
                    result["hand_source"][a:b] = np.where(found, DETECTED, NO_HAND)
                    result["hand_age"][a:b] = _detected_ages(rows, self.cfg.max_hands)
                    looked[a:b] |= dense[a:b]
                if self.cfg.propagate and (result["hand_source"][a:b] == DETECTED).any():
                    tracked = propagate_hands(np.stack(buf), result["hand_landmarks"][a:b].copy(), self.cfg, looked[a:b])
                    for k, v in tracked.items():
                        result[k][a:b] = v
                buf, run = [], run + 1
        if run < len(starts):
            log.warning("hand pass: re-decoding ended before frame %d; later hands not looked for or propagated",
                        int(starts[run]))
        return result


def _detected_ages(rows: npt.NDArray[np.float32], max_hands: int) -> npt.NDArray[np.float32]:
    slots = rows.reshape(len(rows), -1, HAND_SLOT)
    return np.where(np.nan_to_num(slots[:, :max_hands, 0]) > 0, 0.0, np.nan).astype(np.float32)


def hand_coverage(frames: Batch, pose_fps: float, sample_fps: float, idle_every: int | None = None) -> dict[str, Any]:
    """A clip's hand coverage for its status record: looked-at frames, and the share of them with a
    detected hand (before propagation) and with any hand (after). Looks are denser around hands
    (``pose.idle_fps``), so these shares are of the frames looked at, not of the clip; ``idle_looks``
    counts the looks on the idle grid (every ``idle_every``-th frame) and ``idle_coverage`` the share
    of those with a detected hand, an even sample of the clip."""
    src = np.asarray(frames.get("hand_source", np.zeros(0, np.int8)))
    hands = np.asarray(frames.get("hand_landmarks", np.zeros((0, 0))), np.float32)
    if not len(src) or hands.ndim != 2 or not hands.shape[1]:
        return {}
    looked = ~np.isnan(hands[:, 0])
    n = int(looked.sum())
    det = int((src[looked] == DETECTED).sum())
    prop = int((src[looked] == PROPAGATED).sum())
    every = idle_every or frame_step(pose_fps, sample_fps)
    idle = looked & (np.arange(len(looked)) % every == 0)
    n_idle = int(idle.sum())
    return {"looked": n, "detected": det, "propagated": prop, "coverage_before": det / n if n else 0.0,
            "coverage_after": (det + prop) / n if n else 0.0, "every_nth_frame": frame_step(pose_fps, sample_fps),
            "idle_every_nth_frame": every, "idle_looks": n_idle,
            "idle_coverage": int((src[idle] == DETECTED).sum()) / n_idle if n_idle else 0.0}


def coverage_by(groups: npt.NDArray[Any], looked: npt.NDArray[np.integer], detected: npt.NDArray[np.integer],
                propagated: npt.NDArray[np.integer]) -> dict[Any, dict[str, float | int]]:
    """Hand coverage per group (clip, activity) from per-segment counts ``(n_segments,)``:
    ``coverage_before`` (share of looked-at frames with a detected hand), ``coverage_after`` (with
    any hand, detected or propagated) and ``propagated_share`` (of the frames with a hand, those
    with only propagated hands). Noise (group -1) is left out."""
    groups = np.asarray(groups)
    out: dict[Any, dict[str, float | int]] = {}
    for g in dict.fromkeys(groups.tolist()):
        if isinstance(g, int | np.integer) and g < 0:
            continue
        m = groups == g
        n, d, p = int(np.sum(looked[m])), int(np.sum(detected[m])), int(np.sum(propagated[m]))
        out[g.item() if isinstance(g, np.generic) else g] = {
            "looked": n, "coverage_before": round(d / n, 4) if n else 0.0, "coverage_after": round((d + p) / n, 4) if n else 0.0,
            "propagated_share": round(p / (d + p), 4) if d + p else 0.0}
    return out
