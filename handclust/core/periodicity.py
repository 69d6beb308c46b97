"""Periods in signals: flow rhythm (Welch band powers, dominant period, strength), the repetition
period of a self-similarity matrix or an autocorrelation, and whether a sampling can resolve them.
Pure numpy on arrays; used by the segment descriptors and the hand keypoint features.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from handclust.config import DescriptorConfig


def _lag_range(n: int, fps: float, cfg: DescriptorConfig) -> tuple[int, int]:
    """Lags (in samples) of the allowed periods, at most half the signal."""
    return max(1, int(np.floor(cfg.min_period_s * fps))), min(n // 2, int(np.ceil(cfg.max_period_s * fps)))


def autocorr_period(x: npt.NDArray[np.float64], fps: float, cfg: DescriptorConfig) -> float:
    """First clear autocorrelation peak in the allowed period range, in seconds (nan if none)."""
    n = len(x)
    lo, hi = _lag_range(n, fps, cfg)
    if hi <= lo + 1:
        return float("nan")
    x = x - x.mean()
    denom = float((x * x).sum())
    if denom <= 1e-12:
        return float("nan")
    ac = np.array([float((x[:-lag] * x[lag:]).sum()) / denom * n / (n - lag) for lag in range(1, hi + 2)])
    return _first_peak(ac, lo, hi, fps)


def _first_peak(ac: npt.NDArray[np.float64], lo: int, hi: int, fps: float, min_height: float = 0.2) -> float:
    # ac[k] is the value at lag k + 1.
    for lag in range(lo, hi + 1):
        k = lag - 1
        if 0 < k < len(ac) - 1 and ac[k] >= ac[k - 1] and ac[k] >= ac[k + 1] and ac[k] > min_height:
            return lag / fps
    return float("nan")


def ssm_period(emb: npt.NDArray[np.floating], fps: float, cfg: DescriptorConfig) -> float:
    """Repetition period from the scene self-similarity matrix: mean similarity per lag."""
    n = len(emb)
    lo, hi = _lag_range(n, fps, cfg)
    if hi <= lo + 1:
        return float("nan")
    e = np.asarray(emb, np.float64)
    e = e - e.mean(axis=0)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    e = e / np.where(norms > 1e-9, norms, 1.0)
    ac = np.array([float((e[:-lag] * e[lag:]).sum(axis=1).mean()) for lag in range(1, hi + 2)])
    return _first_peak(ac, lo, hi, fps, min_height=0.1)


def rhythm(signal: npt.NDArray[np.floating], fps: float, cfg: DescriptorConfig) -> tuple[npt.NDArray[np.float32], float, float]:
    """Band powers ``(bands,)``, dominant period (s) and periodicity strength in [0, 1]."""
    from scipy.signal import welch

    x = np.asarray(signal, np.float64)
    bands = np.zeros(cfg.rhythm_bands, np.float32)
    if len(x) < 8 or x.std() < 1e-9:
        return bands, float("nan"), 0.0
    nper = min(len(x), max(16, int(2 * cfg.max_period_s * fps)))
    f, p = welch(x - x.mean(), fs=fps, nperseg=nper, noverlap=nper // 2, nfft=max(256, nper), detrend="linear")
    f_lo, f_hi = 1.0 / cfg.max_period_s, min(1.0 / cfg.min_period_s, fps / 2)
    band = (f >= f_lo) & (f <= f_hi)
    if not band.any() or p[band].sum() <= 0:
        return bands, float("nan"), 0.0
    total = float(p[(f > 0)].sum())
    edges = np.geomspace(f_lo, f_hi, cfg.rhythm_bands + 1)
    for i in range(cfg.rhythm_bands):
        sel = (f >= edges[i]) & (f < edges[i + 1])
        bands[i] = p[sel].sum() / total if total > 0 else 0.0
    fb, pb = f[band], p[band]
    k = int(np.argmax(pb))
    # Strength: the peak (with its two neighbours, the window's main lobe) over all power.
    strength = float(pb[max(0, k - 1) : k + 2].sum() / total) if total > 0 else 0.0
    return bands, float(1.0 / fb[k]), min(strength, 1.0)


MAX_COARSE_SHARE = 0.25  # share of a segment's time measured only over steps too long for rhythm


def rhythm_measurable(motion_dt: npt.NDArray[np.floating], span_s: float, cfg: DescriptorConfig) -> bool:
    """Whether motion measured over steps ``motion_dt`` ``(n_measured,)`` in ``span_s`` seconds can
    resolve periods down to ``cfg.min_period_s``.

    Nyquist: at least 2 distinct frames per ``min_period_s`` on average (one frame of slack), and at
    most :data:`MAX_COARSE_SHARE` of the time covered by steps longer than ``min_period_s / 2``, so
    a long freeze inside a segment counts too. A source that holds each image for 2 s fails both:
    its rhythm would be the hold.
    """
    dt = np.asarray(motion_dt, np.float64)
    if span_s <= 0 or len(dt) + 1 < 2 * span_s / cfg.min_period_s:
        return False
    coarse = dt[dt > cfg.min_period_s / 2 + 1e-6]
    return float(coarse.sum()) <= MAX_COARSE_SHARE * span_s
