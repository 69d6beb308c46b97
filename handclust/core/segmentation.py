"""Cut one clip into segments by fusing three change detectors.

- motion: novelty of windowed motion statistics (flow speed, head translation, residual motion);
- appearance: novelty of windowed scene embeddings;
- statistical: ruptures change points (KernelCPD, linear kernel, on PCA-reduced, smoothed,
  standardised features: linear in memory, never a dense n x n kernel).

Each detector proposes boundaries with a strength in [0, 1]. Proposals are smoothed into a vote
curve (a Gaussian bump per proposal, weighted per detector); peaks above ``vote_threshold`` at
least ``min_segment_s`` apart become boundaries, each remembering which detectors voted.
Segments longer than ``max_segment_s`` are split evenly (a timeline needs a resolution).
Everything here is pure numpy on one clip's arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.ndimage import uniform_filter1d
from scipy.signal import find_peaks

from handclust.config import SegmentConfig

DETECTORS = ("motion", "appearance", "statistical")
NOVELTY_FLOOR = 0.5  # window-mean shift, in pooled standard deviations, worth proposing
NOVELTY_FULL = 1.5  # shift at which a proposal has full strength


@dataclass(frozen=True)
class Segmentation:
    """Segments as half-open frame ranges ``[start, end)`` plus per-boundary provenance."""

    starts: npt.NDArray[np.int64]  # (n_segments,)
    ends: npt.NDArray[np.int64]
    detectors: list[str]  # for each segment: detectors that voted for its start ("" for the first/splits)
    scores: npt.NDArray[np.float32]  # vote at each start
    vote: npt.NDArray[np.float32]  # (n_frames,) fused vote curve
    proposals: dict[str, npt.NDArray[np.int64]]


def standardise(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    x = np.asarray(x, np.float64)
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 1e-9, sd, 1.0)


def pca_reduce(x: npt.NDArray[np.floating], dims: int) -> npt.NDArray[np.float64]:
    """Project onto the top ``dims`` principal components (``(n, d) -> (n, min(dims, d, n))``)."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(axis=0)
    if x.shape[1] <= dims:
        return x
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:dims].T


def window_novelty(x: npt.NDArray[np.floating], half: int) -> npt.NDArray[np.float64]:
    """Distance between the means of the ``half`` frames before and after each frame, / sqrt(dim)."""
    n = len(x)
    out = np.zeros(n)
    if n < 2 * half or half < 1:
        return out
    c = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    i = np.arange(half, n - half + 1)
    before = (c[i] - c[i - half]) / half
    after = (c[i + half] - c[i]) / half
    out[i] = np.linalg.norm(after - before, axis=1) / np.sqrt(x.shape[1])
    return out


def novelty_proposals(novelty: npt.NDArray[np.float64], min_gap: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    peaks, _ = find_peaks(novelty, height=NOVELTY_FLOOR, distance=max(1, min_gap))
    strength = np.clip((novelty[peaks] - NOVELTY_FLOOR) / (NOVELTY_FULL - NOVELTY_FLOOR), 0.2, 1.0)
    return peaks.astype(np.int64), strength


def cpd_proposals(x: npt.NDArray[np.float64], min_size: int, penalty: float) -> npt.NDArray[np.int64]:
    import ruptures as rpt

    n, d = x.shape
    if n < 2 * min_size + 1:
        return np.zeros(0, np.int64)
    algo = rpt.KernelCPD(kernel="linear", min_size=max(2, min_size), jump=1).fit(x)
    bkps = algo.predict(pen=penalty * d * np.log(n))
    return np.asarray([b for b in bkps if 0 < b < n], np.int64)


def segment_clip(
    motion: npt.NDArray[np.floating],
    scene: npt.NDArray[np.floating],
    fps: float,
    cfg: SegmentConfig,
) -> Segmentation:
    """Segment one clip.

    motion: ``(n_frames, d_m)`` motion signals; scene: ``(n_frames, d_s)`` scene embeddings;
    fps: sampling rate of the frames.
    """
    n = len(motion)
    min_len = max(1, int(round(cfg.min_segment_s * fps)))
    if n == 0:
        z = np.zeros(0, np.int64)
        return Segmentation(z, z, [], np.zeros(0, np.float32), np.zeros(0, np.float32), {})
    half = max(1, int(round(cfg.window_s * fps)))
    # The motion signal is pre-smoothed over the detector's own half-window (window_s), not smooth_s:
    # smooth_s is the width of the vote kernel around each proposal (below), a different job.
    smooth = half
    m = standardise(motion)
    s = standardise(pca_reduce(scene, cfg.cpd_dims)) if scene.shape[1] else np.zeros((n, 0))
    proposals: dict[str, npt.NDArray[np.int64]] = {}
    strengths: dict[str, npt.NDArray[np.float64]] = {}
    proposals["motion"], strengths["motion"] = novelty_proposals(window_novelty(uniform_filter1d(m, smooth, axis=0), half), min_len)
    if s.shape[1]:
        proposals["appearance"], strengths["appearance"] = novelty_proposals(window_novelty(s, half), min_len)
    else:
        proposals["appearance"], strengths["appearance"] = np.zeros(0, np.int64), np.zeros(0)
    both = np.hstack([pca_reduce(m, cfg.cpd_dims), s])
    both = standardise(uniform_filter1d(both, smooth, axis=0))
    proposals["statistical"] = cpd_proposals(both, min_len, cfg.cpd_penalty)
    strengths["statistical"] = np.ones(len(proposals["statistical"]))

    sigma = max(cfg.smooth_s * fps, 0.5)
    frames = np.arange(n)
    vote = np.zeros(n)
    for name in DETECTORS:
        w = cfg.detector_weights.get(name, 1.0)  # type: ignore[call-overload]
        for p, st in zip(proposals[name], strengths[name], strict=True):
            vote += w * st * np.exp(-0.5 * ((frames - p) / sigma) ** 2)
    peaks, _ = find_peaks(np.concatenate([[0.0], vote, [0.0]]), height=cfg.vote_threshold, distance=min_len)
    peaks = peaks - 1
    peaks = peaks[(peaks >= min_len) & (peaks <= n - min_len)]
    starts = [0]
    voters = [""]
    scores = [0.0]
    for p in peaks:
        if p - starts[-1] < min_len:
            continue
        starts.append(int(p))
        near = [d for d in DETECTORS if len(proposals[d]) and np.min(np.abs(proposals[d] - p)) <= 2 * sigma]
        voters.append("+".join(near))
        scores.append(float(vote[p]))
    # Split overlong segments evenly so timelines keep a resolution.
    max_len = max(2 * min_len, int(round(cfg.max_segment_s * fps)))
    bounds = starts + [n]
    out_s, out_d, out_v = [], [], []
    for k in range(len(starts)):
        a, b = bounds[k], bounds[k + 1]
        pieces = int(np.ceil((b - a) / max_len))
        cuts = np.linspace(a, b, pieces + 1).round().astype(int)[:-1]
        for j, c in enumerate(cuts):
            out_s.append(int(c))
            out_d.append(voters[k] if j == 0 else "split")
            out_v.append(scores[k] if j == 0 else 0.0)
    st = np.asarray(out_s, np.int64)
    en = np.append(st[1:], n).astype(np.int64)
    return Segmentation(st, en, out_d, np.asarray(out_v, np.float32), vote.astype(np.float32), proposals)


def motion_signals(frames: dict[str, npt.NDArray[np.floating]]) -> npt.NDArray[np.float64]:
    """The per-frame motion signals the motion detector watches: ``(n_frames, 5)``.

    Frames without a motion measurement (held frames of a low-rate source, NaN) take the next
    measurement, the mean motion over the interval they belong to (:func:`~handclust.core.held.fill_held`).
    """
    from handclust.core.held import fill_held

    head = np.hypot(frames["ego_tx"], frames["ego_ty"])
    return fill_held(np.stack([
        np.log1p(10 * np.asarray(frames["flow_mag_mean"], np.float64)),
        np.log1p(10 * head),
        np.log1p(10 * np.asarray(frames["ego_residual"], np.float64)),
        np.asarray(frames["ego_ratio"], np.float64),
        np.abs(np.asarray(frames["ego_rotation"], np.float64)),
    ], axis=1))
