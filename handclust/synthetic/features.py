"""Synthetic precomputed features with planted truth, in the layout the action segmentation
releases ship (what ``handclust segment-features`` reads)::

    OUT/features/<task>/<video>.txt   frames x dims, one row per frame
    OUT/groundTruth/<video>.txt       one label per line, one line per frame
    OUT/mapping/mapping.txt           "<id> <label>" per line, background first

Hard in the ways the real sets are hard:

- **a script with variations**: one task whose actions follow a typical order; each video skips
  some (3-6 actions per video) and now and then swaps two neighbours;
- **action lengths that vary widely**: each action has its own typical length (3 s to 40 s by
  default) and each instance varies around it (log-normal);
- **per-video style** (person, camera, lighting): an additive offset, a scale, and a random
  rotation of part of the feature space, strong enough that clustering the raw features groups
  frames by video rather than by action;
- **slow drift** within each action and over the whole video, and temporally correlated frame noise;
- **look-alike actions**: pouring milk shares most of its features with pouring coffee;
- **background** at the start and end of every video;
- optionally, **people who do each action their own way** (``person_sd``);
- optionally, **features given as principal components** (``principal_components``), the form
  of the literature's reduced features, whose dims carry very unequal variance.

``make_features`` returns the set in memory (for benchmarks and tests), ``make_feature_set``
writes it to disk; both are deterministic from ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from handclust.segment_features import FeatureVideo

# A coffee-making script in its typical order, with each action's typical length in seconds.
SCRIPT: tuple[str, ...] = ("take_cup", "pour_coffee", "pour_milk", "add_sugar", "stir_coffee", "drink_coffee")
TYPICAL_S: tuple[float, ...] = (4.0, 25.0, 8.0, 3.0, 12.0, 40.0)
BACKGROUND = "background"


@dataclass(frozen=True)
class FeatureSet:
    """A synthetic feature set and what was planted in it."""

    videos: list[FeatureVideo]  # features (n_frames, dim), truth one label per frame, task
    task: str
    script: tuple[str, ...]  # the actions in their typical order
    background: str  # the label of the frames before the first and after the last action
    fps: float
    sequences: list[tuple[str, ...]]  # each video's actions in the order performed (no background)
    video_offsets: npt.NDArray[np.float64]  # (n_videos, dim): the planted per-video additive offset
    video_scales: npt.NDArray[np.float64]  # (n_videos,): the planted per-video scale
    style_dims: int  # the first style_dims feature dims are rotated per video

    def stacked(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.object_], npt.NDArray[np.object_]]:
        """All frames: features ``(n_frames, dim)``, true label per frame, video name per frame."""
        x = np.concatenate([v.features for v in self.videos])
        labels = np.concatenate([np.asarray(v.truth, dtype=object) for v in self.videos])
        video = np.concatenate([np.full(len(v.features), v.name, dtype=object) for v in self.videos])
        return x, labels, video


def _sequence(rng: np.random.Generator, n: int, skip_prob: float, swap_prob: float,
              min_actions: int) -> list[int]:
    """Indices into the script: skips keep the order, an occasional swap exchanges two neighbours."""
    keep = rng.random(n) >= skip_prob
    while keep.sum() < min(min_actions, n):
        keep[rng.choice(np.flatnonzero(~keep))] = True
    seq = np.flatnonzero(keep).tolist()
    i = 0
    while i < len(seq) - 1:
        if rng.random() < swap_prob:
            seq[i], seq[i + 1] = seq[i + 1], seq[i]
            i += 1  # one swap per pair: an action moves by at most one place
        i += 1
    return seq


def _rotation(rng: np.random.Generator, d: int, strength: float) -> npt.NDArray[np.float64]:
    """A random orthogonal ``(d, d)`` matrix, further from the identity as ``strength`` grows."""
    q, r = np.linalg.qr(np.eye(d) + strength * rng.normal(0, 1, (d, d)))
    return q * np.sign(np.diag(r))


def _ar1(rng: np.random.Generator, n: int, dim: int, sd: float, rho: float = 0.7) -> npt.NDArray[np.float64]:
    """Frame noise correlated over neighbouring frames, stationary standard deviation ``sd``."""
    e = rng.normal(0, sd * np.sqrt(1 - rho**2), (n, dim))
    out = np.empty_like(e)
    out[0] = rng.normal(0, sd, dim)
    for t in range(1, n):
        out[t] = rho * out[t - 1] + e[t]
    return out


def make_features(n_videos: int = 5, seed: int = 0, fps: float = 15.0, dim: int = 64, task: str = "coffee",
                  script: tuple[str, ...] = SCRIPT, typical_s: tuple[float, ...] = TYPICAL_S,
                  duration_scale: float = 1.0, length_spread: float = 0.35, background_s: tuple[float, float] = (1.0, 5.0),
                  skip_prob: float = 0.25, swap_prob: float = 0.1, min_actions: int = 3,
                  action_sd: float = 1.0, confusable: tuple[tuple[str, str], ...] = (("pour_coffee", "pour_milk"),),
                  confusable_mix: float = 0.6, style_strength: float = 1.0, style_dims: int = 16,
                  drift: float = 0.4, noise: float = 0.8, person_sd: float = 0.0,
                  principal_components: bool = False) -> FeatureSet:
    """A feature set of one scripted task, in memory.

    Per frame: ``scale_v * R_v(action_prototype + drift) + offset_v + noise``, where the action
    prototypes are ``N(0, action_sd)`` per dim (for each ``confusable`` pair (a, b), b's is
    ``confusable_mix * a's + sqrt(1 - mix^2) * its own``, so the two are hard to tell apart), ``offset_v`` is ``N(0, 1.5 * style_strength)`` per
    dim, ``scale_v = exp(N(0, 0.25 * style_strength))`` and ``R_v`` rotates the first ``style_dims``
    dims at random (orthogonal, further from the identity as ``style_strength`` grows). Drift: a
    per-instance linear trend (``N(0, drift)`` per dim from start to end) plus a slow sinusoid over
    the video. Noise: AR(1) with standard deviation ``noise`` per dim.

    Each action's length is ``typical_s[a] * duration_scale * lognormal(0, length_spread)`` seconds
    (at least 2 frames); background lasts ``background_s`` seconds (uniform) at each end.
    ``style_strength=0`` removes every per-video effect. ``person_sd`` > 0: each person does each
    action their own way, a ``N(0, person_sd)`` per-dim deviation of every prototype per video, which
    no per-video transform removes (the real sets' people differ in how, not only in camera and light).

    ``principal_components``: every frame is expressed in the principal axes of the whole set
    (centred, not whitened), as the literature's reduced Fisher vectors are (PCA to 64 dims): the
    same geometry, with the variance falling from the first dim to the last.
    """
    if len(typical_s) != len(script):
        raise ValueError(f"typical_s has {len(typical_s)} lengths for {len(script)} actions")
    if not 0 < style_dims <= dim:
        raise ValueError(f"style_dims must be in 1..{dim}, got {style_dims}")
    rng = np.random.default_rng(seed)
    protos = rng.normal(0, action_sd, (len(script) + 1, dim))  # row 0: background
    names = [BACKGROUND, *script]
    for a, b in confusable:  # b looks partly like a, as pouring milk looks like pouring coffee
        if a in names and b in names:
            ia, ib = names.index(a), names.index(b)
            protos[ib] = confusable_mix * protos[ia] + np.sqrt(1 - confusable_mix**2) * protos[ib]
    videos: list[FeatureVideo] = []
    sequences: list[tuple[str, ...]] = []
    offsets = np.zeros((n_videos, dim))
    scales = np.ones(n_videos)
    for vi in range(n_videos):
        seq = _sequence(rng, len(script), skip_prob, swap_prob, min_actions)
        parts = [(0, rng.uniform(*background_s))]
        parts += [(a + 1, typical_s[a] * duration_scale * float(np.exp(rng.normal(0, length_spread)))) for a in seq]
        parts.append((0, rng.uniform(*background_s)))
        clean, labels = [], []
        # How this person does each action: a deviation no per-video transform removes. Drawn
        # from its own stream, so person_sd=0 leaves every other draw (and older sets) unchanged.
        mine = protos + np.random.default_rng([seed, vi, 7]).normal(0, person_sd, protos.shape) if person_sd > 0 else protos
        for label, seconds in parts:
            n = max(int(round(seconds * fps)), 2)
            u = np.linspace(-1.0, 1.0, n)[:, None]
            clean.append(mine[label] + u * rng.normal(0, drift, dim))
            labels += [names[label]] * n
        x = np.concatenate(clean)
        t = np.arange(len(x)) / fps
        x += 0.5 * drift * np.sin(2 * np.pi * t[:, None] / 60.0 + rng.uniform(0, 2 * np.pi, dim)[None, :])
        offsets[vi] = rng.normal(0, 1.5 * style_strength, dim)
        scales[vi] = float(np.exp(rng.normal(0, 0.25 * style_strength)))
        if style_strength > 0:
            x[:, :style_dims] = x[:, :style_dims] @ _rotation(rng, style_dims, style_strength)
        x = scales[vi] * x + offsets[vi] + _ar1(rng, len(x), dim, noise)
        videos.append(FeatureVideo(f"P{vi + 1:02d}_{task}", x.astype(np.float32), labels, task))
        sequences.append(tuple(script[a] for a in seq))
    if principal_components:
        x = np.vstack([v.features for v in videos]).astype(np.float64)
        mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        for v in videos:
            v.features = ((v.features - mean) @ vt.T).astype(np.float32)
    return FeatureSet(videos, task, tuple(script), BACKGROUND, fps, sequences, offsets, scales, style_dims)


def write_feature_set(fs: FeatureSet, out_dir: str | Path) -> Path:
    """Write ``fs`` in the nested release layout under ``out_dir``; returns ``out_dir``."""
    out = Path(out_dir)
    (out / "features" / fs.task).mkdir(parents=True, exist_ok=True)
    (out / "groundTruth").mkdir(parents=True, exist_ok=True)
    (out / "mapping").mkdir(parents=True, exist_ok=True)
    for v in fs.videos:
        np.savetxt(out / "features" / fs.task / f"{v.name}.txt", v.features, fmt="%.5f")
        (out / "groundTruth" / f"{v.name}.txt").write_text("\n".join(v.truth or []) + "\n")
    labels = [fs.background, *fs.script]
    (out / "mapping" / "mapping.txt").write_text("".join(f"{i} {a}\n" for i, a in enumerate(labels)))
    return out


def make_feature_set(out_dir: str | Path, n_videos: int = 5, seed: int = 0, fps: float = 15.0, dim: int = 64,
                     **kwargs: object) -> Path:
    """``make_features(...)`` written to ``out_dir`` (see the module docstring for the layout)."""
    return write_feature_set(make_features(n_videos=n_videos, seed=seed, fps=fps, dim=dim, **kwargs), out_dir)  # type: ignore[arg-type]
