"""Hand and body keypoints per frame (MediaPipe Hands and Pose), and their per-segment summary.

On helmet-cam footage hands are a weak hint: with gloves, a fisheye lens and hands out of view
a hand is found in 0.5-12.5 % of frames, and the body in about 15 % (the camera looks down at
the work). So the keypoints are summarised per segment as *how often* hands and body were seen
and, when they were, *where* and *how they moved*; fusion weighs the modality by how many
segments saw anything at all (:func:`handclust.core.clustering.fuse`), so footage where nothing is
found leaves the other modalities in charge instead of piling every segment into "no hands".

Frames are processed independently (MediaPipe's static-image mode): a frame's keypoints do not
depend on which frames came before it in a batch, so the local and Ray runners give the same
columns whatever the batching. Only MediaPipe 0.10.14 - 0.10.21 bundle the hand and pose models
(later wheels expect downloaded ``.task`` files), and 0.10.14 is the one that runs beside numpy 2;
the Makefile installs it without its jax / opencv-contrib dependencies (docs/user-guide.md, Hands and pose).

Column layout (``max_hands`` hand slots, ordered left to right by wrist x in the image):

- ``hand_landmarks`` ``(n, max_hands * 64)``: per slot ``[score, x0, y0, z0, ..., x20, y20, z20]``,
  x/y in [0, 1] of the frame. A looked-at frame with no hand in a slot has score 0 and NaN
  coordinates; a frame not looked at is all NaN. The frame stage looks at every ``idle_step``-th
  frame (``pose.idle_fps``, hands and body); the per-clip hand pass
  (:class:`handclust.modalities.features.hands.HandTracks`) then looks for hands at ``pose.fps`` around the
  looks that found one, so the hand model's cost follows where hands are.
- ``body_landmarks`` ``(n, 1 + 33 * 4)``: ``[found, x0, y0, z0, visibility0, ...]``, same convention.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from handclust.config import DescriptorConfig, PoseConfig
from handclust.errors import KeypointModelError as KeypointModelError  # defined with every error in handclust/errors.py
from handclust.stages import Batch, Resources, frame_step

HAND_POINTS = 21
HAND_SLOT = 1 + HAND_POINTS * 3
BODY_POINTS = 33
BODY_WIDTH = 1 + BODY_POINTS * 4
# MediaPipe landmark indices used by the summary.
WRIST, MIDDLE_MCP = 0, 9
FINGERTIPS = (4, 8, 12, 16, 20)
L_SHOULDER, R_SHOULDER, L_WRIST, R_WRIST = 11, 12, 15, 16
# desc_pose: index 0 is the share of looked-at frames where a hand or the body was found; fusion
# reads it to know which segments saw anything (schema.OBSERVED_INDEX).
POSE_DESCRIPTOR = (
    "observed_rate", "hand_rate", "two_hand_rate", "hand_x", "hand_y", "hand_x_std", "hand_y_std", "hand_speed",
    "hand_openness", "body_rate", "wrist_raise", "wrist_raise_std", "wrist_spread",
    # Ego-compensated wrist motion (features/hands.py): the hand moving in the world, not the head.
    "hand_speed_ego", "hand_path_ego", "hand_rhythm_strength", "hand_rhythm_period",
)
INSTALL_HINT = ("pip install 'handclust[hands]' && pip install --no-deps mediapipe==0.10.14 (what `make` does), "
                "or set pose.enabled=false")


def idle_step(cfg: PoseConfig, sample_fps: float) -> int:
    """Every how many sampled frames the pose stage looks (``pose.idle_fps``): a multiple of the
    ``pose.fps`` step, so the looks the hand pass adds around a hand lie on the same grid."""
    step = frame_step(cfg.fps, sample_fps)
    if cfg.idle_fps is None or cfg.idle_fps >= cfg.fps:
        return step
    return step * max(1, round(frame_step(cfg.idle_fps, sample_fps) / step))


def check_mediapipe(cfg: PoseConfig) -> dict[str, Any]:
    """What the run records about the keypoint models; raises :class:`KeypointModelError` if they cannot run."""
    try:
        import mediapipe as mp
        from mediapipe.python import solutions  # noqa: F401  (absent from wheels that ship no models)
    except Exception as exc:  # ImportError, or protobuf / numpy mismatches raising at import
        raise KeypointModelError(f"pose.enabled is true but MediaPipe cannot be imported ({exc.__class__.__name__}: {exc}). "
                                 f"Install it: {INSTALL_HINT}") from exc
    from pathlib import Path

    root = Path(mp.__file__).parent / "modules"
    needed = []
    if cfg.hands:
        needed += ["palm_detection/palm_detection_full.tflite", "hand_landmark/hand_landmark_full.tflite"]
    if cfg.body:
        needed += ["pose_detection/pose_detection.tflite", "pose_landmark/pose_landmark_full.tflite"]
    missing = [n for n in needed if not (root / n).is_file()]
    if missing:
        raise KeypointModelError(f"MediaPipe {mp.__version__} does not bundle the models pose.enabled needs ({', '.join(missing)}); "
                                 f"only 0.10.14 - 0.10.21 do. Install the bundled release: {INSTALL_HINT}")
    return {"encoder": "mediapipe", "version": mp.__version__, "hands": cfg.hands, "body": cfg.body,
            "max_hands": cfg.max_hands, "fps": cfg.fps, "device": "cpu"}


class HandPoseKeypoints:
    """Frame stage. Batch in: ``frame`` ``(n, H, W, 3)`` uint8 RGB, ``frame_idx``. Batch out: adds
    ``hand_landmarks`` ``(n, max_hands * 64)`` and ``body_landmarks`` ``(n, 133)`` float32 (layout above).
    """

    name = "pose"
    resources = Resources(num_cpus=1, batch_size=32)

    def __init__(self, cfg: PoseConfig, sample_fps: float):
        self.cfg = cfg
        self.step = frame_step(cfg.fps, sample_fps)  # pose.fps out of decode.sample_fps
        self.idle_step = idle_step(cfg, sample_fps)  # what this stage looks at; a multiple of step
        self._hands: Any = None
        self._body: Any = None
        self._ready = False

    def check(self) -> dict[str, Any]:
        return {**check_mediapipe(self.cfg), "every_nth_frame": self.step, "idle_every_nth_frame": self.idle_step}

    def setup(self) -> None:
        if self._ready:
            return
        check_mediapipe(self.cfg)
        from mediapipe.python.solutions import hands, pose

        c = self.cfg
        if c.hands:
            self._hands = hands.Hands(static_image_mode=True, max_num_hands=c.max_hands, model_complexity=1,
                                      min_detection_confidence=c.min_detection_confidence)
        if c.body:
            # model_complexity=1 is the only pose model the wheel bundles (0 and 2 are downloaded).
            self._body = pose.Pose(static_image_mode=True, model_complexity=1, min_detection_confidence=c.min_detection_confidence)
        self._ready = True

    def __call__(self, batch: Batch) -> Batch:
        self.setup()
        frames = batch["frame"]
        n = len(frames)
        hands = np.full((n, self.cfg.max_hands * HAND_SLOT if self.cfg.hands else 0), np.nan, np.float32)
        body = np.full((n, BODY_WIDTH if self.cfg.body else 0), np.nan, np.float32)
        looked = np.flatnonzero(np.asarray(batch["frame_idx"]) % self.idle_step == 0)
        imgs = [np.ascontiguousarray(frames[i]) for i in looked]

        def body_rows() -> None:
            for i, img in zip(looked, imgs, strict=True):
                body[i] = self._body_row(self._body.process(img))

        side = None
        if self._body is not None:
            if self._hands is not None and self._threads() >= 2:
                # MediaPipe releases the GIL: the body model runs beside the hand model (1.9 x on 2 free cores;
                # each model still sees its frames one by one, so the rows are the same).
                import threading

                side = threading.Thread(target=body_rows, name="handclust-pose-body", daemon=True)
                side.start()
            else:
                body_rows()
        try:
            if self._hands is not None:
                hands[looked] = self.hand_rows(imgs)
        finally:
            if side is not None:
                side.join()
        out = dict(batch)
        out["hand_landmarks"], out["body_landmarks"] = hands, body
        return out

    def hand_rows(self, imgs: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        """``(len(imgs), max_hands * HAND_SLOT)`` hand rows of RGB frames, one frame at a time."""
        self.setup()
        rows = np.full((len(imgs), self.cfg.max_hands * HAND_SLOT), np.nan, np.float32)
        for i, img in enumerate(imgs):
            rows[i] = self._hand_row(self._hands.process(np.ascontiguousarray(img)))
        return rows

    @staticmethod
    def _threads() -> int:
        """Threads this process may use: ``OMP_NUM_THREADS`` where a runner set it
        (:func:`handclust.stages.limit_threads`: a Ray actor's CPUs), else the machine's cores."""
        import os

        limit = os.environ.get("OMP_NUM_THREADS", "")
        return int(limit) if limit.isdigit() else (os.cpu_count() or 1)

    def _hand_row(self, result: Any) -> npt.NDArray[np.float32]:
        row = np.full(self.cfg.max_hands * HAND_SLOT, np.nan, np.float32)
        row[::HAND_SLOT] = 0.0
        found = []
        for k, lm in enumerate(result.multi_hand_landmarks or []):
            pts = np.array([(p.x, p.y, p.z) for p in lm.landmark], np.float32)
            score = float(result.multi_handedness[k].classification[0].score) if result.multi_handedness else 1.0
            found.append((score, pts))
        found.sort(key=lambda h: float(h[1][WRIST, 0]))  # stable slots: left to right in the image
        for slot, (score, pts) in enumerate(found[: self.cfg.max_hands]):
            row[slot * HAND_SLOT] = score
            row[slot * HAND_SLOT + 1 : (slot + 1) * HAND_SLOT] = pts.ravel()
        return row

    @staticmethod
    def _body_row(result: Any) -> npt.NDArray[np.float32]:
        row = np.full(BODY_WIDTH, np.nan, np.float32)
        row[0] = 0.0
        if result.pose_landmarks is not None:
            row[0] = 1.0
            row[1:] = np.array([(p.x, p.y, p.z, p.visibility) for p in result.pose_landmarks.landmark], np.float32).ravel()
        return row


def pose_descriptor(hand_landmarks: npt.NDArray[np.floating], body_landmarks: npt.NDArray[np.floating], a: int, b: int,
                    fps: float, min_visibility: float = 0.5, hand_motion: npt.NDArray[np.floating] | None = None,
                    desc_cfg: DescriptorConfig | None = None) -> npt.NDArray[np.float32]:
    """``desc_pose`` of frames ``[a, b)`` (names in :data:`POSE_DESCRIPTOR`).

    ``hand_landmarks`` ``(n_frames, max_hands * 64)`` and ``body_landmarks`` ``(n_frames, 133)`` are
    one clip's columns (either may have 0 columns when that part is off). Rates are over the frames
    looked at; position and movement features are 0 where nothing was seen, so "no hands" is one
    neutral point rather than a spread of made-up values. Hand x/y are centred on the frame
    (0 = centre); speed is wrist travel in frame widths per second between consecutive looked-at
    frames that both show a hand; openness is mean fingertip-to-wrist distance over palm length;
    wrist raise is how far the wrists are above the shoulders, in shoulder widths.

    ``hand_motion`` ``(n_frames, max_hands * 2)`` (the clip's ego-compensated wrist velocities,
    :func:`handclust.modalities.features.hands.compensated_hand_motion`) gives ``hand_speed_ego`` (mean speed
    over hands, frame widths / s), ``hand_path_ego`` (the hands' mean path length over the segment,
    frame widths) and the dominant period (s) and strength of the compensated wrist velocity
    (:func:`handclust.core.periodicity.rhythm` over the looked-at frames); 0 without it.
    """
    out = np.zeros(len(POSE_DESCRIPTOR), np.float32)
    h = np.asarray(hand_landmarks[a:b], np.float64)  # slice first: called once per segment of the clip
    bd = np.asarray(body_landmarks[a:b], np.float64)
    looked_h = ~np.isnan(h[:, 0]) if h.shape[1] else np.zeros(len(h), bool)
    looked_b = ~np.isnan(bd[:, 0]) if bd.shape[1] else np.zeros(len(bd), bool)
    looked = looked_h | looked_b
    if not looked.any():
        return out
    seen_any = np.zeros(len(h), bool)
    if looked_h.any():
        slots = h.reshape(len(h), -1, HAND_SLOT)
        present = np.nan_to_num(slots[:, :, 0]) > 0  # (frames, slots)
        count = present.sum(axis=1)
        seen_any |= count > 0
        out[1] = (count[looked_h] > 0).mean()
        out[2] = (count[looked_h] > 1).mean()
        pts = slots[:, :, 1:].reshape(len(h), slots.shape[1], HAND_POINTS, 3)
        if present.any():
            wrists = pts[:, :, WRIST, :2][present]  # (detections, 2)
            out[3:5] = wrists.mean(axis=0) - 0.5
            out[5:7] = wrists.std(axis=0)
            palm = np.linalg.norm(pts[:, :, MIDDLE_MCP, :2] - pts[:, :, WRIST, :2], axis=-1)[present]
            tips = np.linalg.norm(pts[:, :, list(FINGERTIPS), :2] - pts[:, :, [WRIST], :2], axis=-1).mean(axis=-1)[present]
            out[8] = float(np.mean(tips / np.maximum(palm, 1e-3)))
            # Speed of the leftmost hand between consecutive looked-at frames that both show one.
            idx = np.flatnonzero(looked_h)
            first = pts[:, 0, WRIST, :2]
            pairs = [(i, j) for i, j in zip(idx[:-1], idx[1:]) if present[i, 0] and present[j, 0]]
            if pairs:
                out[7] = float(np.mean([np.linalg.norm(first[j] - first[i]) * fps / (j - i) for i, j in pairs]))
    if looked_b.any():
        found = np.nan_to_num(bd[:, 0]) > 0
        seen_any |= found
        out[9] = found[looked_b].mean()
        if found.any():
            p = bd[found, 1:].reshape(-1, BODY_POINTS, 4)
            vis = (p[:, [L_SHOULDER, R_SHOULDER, L_WRIST, R_WRIST], 3] >= min_visibility).all(axis=1)
            if vis.any():
                q = p[vis]
                width = np.maximum(np.abs(q[:, L_SHOULDER, 0] - q[:, R_SHOULDER, 0]), 1e-3)
                shoulder_y = 0.5 * (q[:, L_SHOULDER, 1] + q[:, R_SHOULDER, 1])
                raise_ = (shoulder_y - 0.5 * (q[:, L_WRIST, 1] + q[:, R_WRIST, 1])) / width
                out[10], out[11] = raise_.mean(), raise_.std()
                out[12] = float(np.mean(np.abs(q[:, L_WRIST, 0] - q[:, R_WRIST, 0]) / width))
    out[0] = seen_any[looked].mean()
    if hand_motion is not None and np.shape(hand_motion)[-1] and looked_h.any():
        out[13:17] = _ego_motion_summary(np.asarray(hand_motion, np.float64), np.asarray(hand_landmarks, np.float64),
                                         a, b, fps, desc_cfg or DescriptorConfig())
    return out


def _ego_motion_summary(motion: npt.NDArray[np.float64], hands: npt.NDArray[np.float64], a: int, b: int, fps: float,
                        cfg: DescriptorConfig) -> npt.NDArray[np.float64]:
    """``[speed, path, rhythm strength, rhythm period]`` of the compensated wrist velocities in ``[a, b)``."""
    from handclust.core.periodicity import rhythm

    out = np.zeros(4)
    looked = np.flatnonzero(~np.isnan(hands[:, 0]))
    present = (np.nan_to_num(hands.reshape(len(hands), -1, HAND_SLOT)[:, :, 0]) > 0).any(axis=1)
    seg = looked[(looked >= a) & (looked < b)]
    v = motion[seg].reshape(len(seg), -1, 2)
    speed = np.linalg.norm(v, axis=-1)  # (looks, slots), NaN where no velocity
    valid = np.isfinite(speed).any(axis=1)
    if not valid.any():
        return out
    out[0] = float(np.nanmean(speed[valid]))
    # Time each velocity spans: back to the previous looked-at frame that showed a hand.
    shown = looked[present[looked]]
    prev = np.searchsorted(shown, seg[valid]) - 1
    span = np.where(prev >= 0, (seg[valid] - shown[np.maximum(prev, 0)]) / fps, 0.0)
    out[1] = float(np.sum(np.nanmean(speed[valid], axis=1) * span))
    if valid.mean() >= 0.5 and len(seg) >= 8:
        mean_v = np.nanmean(np.where(np.isfinite(v), v, np.nan)[valid], axis=1)  # (valid looks, 2)
        track = np.zeros((len(seg), 2))
        track[valid] = mean_v - mean_v.mean(axis=0)
        _, _, vt = np.linalg.svd(track, full_matrices=False)
        step = float(np.median(np.diff(seg))) if len(seg) > 1 else 1.0
        _, period, strength = rhythm(track @ vt[0], fps / step, cfg)
        if np.isfinite(period):
            out[2], out[3] = strength, period
    return out


def keypoints_per_activity(desc_pose: npt.NDArray[np.floating], seconds: npt.NDArray[np.floating],
                           labels: npt.NDArray[np.integer]) -> dict[int, dict[str, float]]:
    """Per cluster (label >= 0): the duration-weighted share of looked-at frames with a hand and with the body.

    ``desc_pose`` ``(n_segments, len(POSE_DESCRIPTOR))``; empty (pose off) gives ``{}``.
    """
    d = np.asarray(desc_pose, np.float64)
    if d.ndim != 2 or d.shape[1] != len(POSE_DESCRIPTOR) or not len(d):
        return {}
    hand, body = POSE_DESCRIPTOR.index("hand_rate"), POSE_DESCRIPTOR.index("body_rate")
    w = np.maximum(np.asarray(seconds, np.float64), 1e-9)
    out = {}
    for c in np.unique(labels[labels >= 0]):
        m = labels == c
        out[int(c)] = {"hand_rate": round(float(np.average(d[m, hand], weights=w[m])), 4),
                       "body_rate": round(float(np.average(d[m, body], weights=w[m])), 4)}
    return out
