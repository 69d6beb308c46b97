"""What each activity shows of one modality, for ``eval.json``: the tools OWLv2 saw most, and how
often hands and the body were in view. Each function reads the stored segments table and the
activity labels; :mod:`handclust.modalities.registry` registers them with their modalities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from handclust import schema
from handclust.config import RunConfig


def tools_profile(segments: pa.Table, labels: npt.NDArray[np.integer], cfg: RunConfig) -> dict[str, Any]:
    """``top_tools``: per activity, the ``tools.top_k`` prompts with the highest mean ``desc_tools`` score."""
    from handclust.modalities.encoders.owlv2 import top_tools

    tools = top_tools(schema.vectors(segments, "desc_tools"), np.asarray(labels), cfg.tools.prompts, cfg.tools.top_k)
    return {"top_tools": {str(c): v for c, v in tools.items()}}


def pose_profile(segments: pa.Table, labels: npt.NDArray[np.integer], cfg: RunConfig) -> dict[str, Any]:
    """``keypoints`` (share of frames with hands / body in view per activity) and ``hands`` (hand
    coverage before and after propagation, per clip and in total), when MediaPipe ran."""
    from handclust.modalities.features.hands import coverage_by
    from handclust.modalities.features.keypoints import keypoints_per_activity

    out: dict[str, Any] = {}
    labels = np.asarray(labels)
    seconds = np.asarray(segments.column("t_end").to_numpy()) - np.asarray(segments.column("t_start").to_numpy())
    kp = keypoints_per_activity(schema.vectors(segments, "desc_pose"), seconds, labels)
    counts = hand_counts(segments)
    if kp and counts is not None:
        by_activity = coverage_by(labels, *counts)
        kp = {c: {**v, **{k: by_activity[c][k] for k in ("coverage_before", "propagated_share")}}
              for c, v in kp.items() if c in by_activity}
    if kp:
        out["keypoints"] = {str(c): v for c, v in kp.items()}
    if counts is not None:
        clip_ids = np.asarray(segments.column("clip_id").to_pylist(), dtype=object)
        out["hands"] = {"per_clip": {str(c): v for c, v in coverage_by(clip_ids, *counts).items()},
                        "total": coverage_by(np.zeros(len(clip_ids), np.int64), *counts).get(0, {})}
    return out


def hand_counts(segments: pa.Table) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
    """Per segment: looked-at frames, frames with a detected hand, frames with only propagated hands
    (None for runs from before hand propagation, or with hands off)."""
    names = ("hand_looked", "hand_detected", "hand_propagated")
    if not all(n in segments.column_names for n in names):
        return None
    looked, detected, propagated = (np.asarray(segments.column(n).fill_null(0), np.int64) for n in names)
    if not looked.any():
        return None
    return looked, detected, propagated
