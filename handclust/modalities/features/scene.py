"""Model-free scene descriptor (the fallback when no learned scene encoder is installed), and what every
scene encoder shares: which one runs (``scene.encoder=auto`` resolved, and why), the rate it runs at
(``scene.fps``) and holding its vector between the frames it embeds.

Per cell of a spatial pyramid: a hue x saturation histogram of the grey-world normalised image
(so a camera's white balance and exposure mostly cancel out) and a magnitude-weighted histogram
of gradient orientations plus edge density (structure: brick courses, a round tub, gravel).
Hellinger-mapped (square root) and L2-normalised, so cosine similarity is meaningful.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from handclust.config import SceneConfig
from handclust.stages import Batch, Resources, frame_step

_SAT_BINS = 3
# Frames per second an encoder embeds when scene.fps is null; absent: every sampled frame. EfficientNet-Lite0
# costs ~23 ms a frame on one core (benchmarks/results/efficientnet_cpu.json): at 1 fps 1.4 CPU s per minute
# of footage, a fifth of what decoding and the other CPU features cost together; at every sampled frame (5 fps)
# about as much as all of them.
DEFAULT_FPS: dict[str, float] = {"efficientnet": 1.0}


def scene_dim(cfg: SceneConfig) -> int:
    """Width of the histogram descriptor."""
    cells = sum(4**level for level in range(cfg.pyramid_levels))
    return cells * (cfg.color_bins * _SAT_BINS + cfg.orientation_bins + 1)


def scene_fps(cfg: SceneConfig, encoder: str) -> float | None:
    """Frames per second ``encoder`` embeds under ``cfg`` (None: every sampled frame)."""
    return cfg.fps if cfg.fps is not None else DEFAULT_FPS.get(encoder)


def scene_step(cfg: SceneConfig, encoder: str, sample_fps: float | None) -> int:
    """The encoder embeds rows with ``frame_idx % step == 0`` (which rows never depends on batching)."""
    fps = scene_fps(cfg, encoder)
    return 1 if fps is None or sample_fps is None else frame_step(fps, sample_fps)


def embed_every(frames: npt.NDArray[np.generic], frame_idx: npt.NDArray[np.integer], step: int, dim: int,
                embed: Callable[[npt.NDArray[np.generic]], npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    """``(n, dim)``: ``embed`` of the rows with ``frame_idx % step == 0``, NaN on the others
    (:func:`hold_scene_embedding` fills those once the clip's rows are together and in order)."""
    rows = np.asarray(frame_idx) % step == 0
    out = np.full((len(frames), dim), np.nan, np.float32)
    if rows.all():
        return embed(frames).astype(np.float32) if len(frames) else out
    if rows.any():
        out[rows] = embed(frames[rows])
    return out


def hold_scene_embedding(frames: Batch) -> Batch:
    """One clip's rows (``frame_idx`` order) with each row the scene encoder skipped holding the vector
    of the last row it embedded (rows before the first embedded one take that one's).

    Segmentation's appearance detector and ``desc_scene`` then read a vector on every frame, as
    when the encoder runs on each; the novelty curve steps at embedded frames only, so appearance
    boundaries fall on them (1 s apart at ``scene.fps`` 1, against segments of 4-8 s).
    """
    if "scene_embedding" not in frames:
        return frames
    emb = np.asarray(frames["scene_embedding"])
    if emb.dtype == object:
        emb = np.stack(list(emb)) if len(emb) else np.zeros((0, 0), np.float32)
    if emb.ndim != 2 or not emb.shape[1] or not len(emb):
        return frames
    skipped = np.isnan(emb[:, 0])
    if not skipped.any():
        return frames
    if skipped.all():
        raise ValueError("no frame of the clip has a scene embedding (the scene encoder embedded none of its rows)")
    n = len(emb)
    last = np.maximum.accumulate(np.where(skipped, -1, np.arange(n)))
    last[last < 0] = int(np.argmax(~skipped))
    out = dict(frames)
    out["scene_embedding"] = emb[last].astype(np.float32)
    return out


@dataclass(frozen=True)
class SceneChoice:
    """The scene encoder a config runs (``scene.encoder`` with ``auto`` resolved) and why, as run.json says it."""

    encoder: str  # histogram | efficientnet | dinov2
    why: str


def scene_encoder(cfg: SceneConfig) -> SceneChoice:
    """``scene.encoder`` resolved: ``auto`` is EfficientNet-Lite0 when torch and its two packages are
    installed, else the histogram, and :attr:`SceneChoice.why` names what is missing and the install that adds it.

    Judged from what is installed (no import), on the machine that builds the stages (the driver).
    """
    if cfg.encoder != "auto":
        names = {"histogram": "histogram", "efficientnet": "efficientnet-lite0", "dinov2": f"dinov2 ({cfg.model})"}
        return SceneChoice(cfg.encoder, f"{names[cfg.encoder]} (scene.encoder={cfg.encoder})")
    from handclust.extras import EFFICIENTNET_INSTALL, efficientnet_missing

    missing = efficientnet_missing()
    if not missing:
        return SceneChoice("efficientnet", "efficientnet-lite0 (installed; scene.encoder=auto)")
    return SceneChoice("histogram", f"histogram (efficientnet packages not installed: {', '.join(missing)}; "
                                    f"{EFFICIENTNET_INSTALL}; scene.encoder=auto)")


class HistogramSceneEncoder:
    """Batch in: ``frame`` ``(n, H, W, 3)`` uint8, ``frame_idx``. Batch out: adds ``scene_embedding``
    ``(n, D)`` float32 (NaN rows between the ones embedded when ``scene.fps`` is set)."""

    name = "scene"
    resources = Resources(num_cpus=1, batch_size=64)

    def __init__(self, cfg: SceneConfig, sample_fps: float | None = None):
        self.cfg = cfg
        self.dim = scene_dim(cfg)
        self.step = scene_step(cfg, "histogram", sample_fps)
        self._cell_cache: tuple[tuple[int, int], tuple[npt.NDArray[np.int64], int, npt.NDArray[np.float64]]] | None = None

    def setup(self) -> None:
        import cv2

        cv2.setNumThreads(1)

    def __call__(self, batch: Batch) -> Batch:
        frames = batch["frame"]
        idx = batch.get("frame_idx", np.arange(len(frames)))
        out = dict(batch)
        out["scene_embedding"] = embed_every(frames, idx, self.step, self.dim,
                                             lambda f: np.stack([self.encode(x) for x in f]))
        return out

    def encode(self, frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """One frame's vector. Same arithmetic as the plain per-cell version kept in the tests
        (tests/test_frame_features.py::reference_scene_vector), in fewer passes over the image: the grey
        world scale as a per-channel lookup table, colour and orientation codes as tables, and one
        bincount per histogram over the finest pyramid cells, summed up for the coarser ones."""
        import cv2

        frame = np.ascontiguousarray(frame)
        c = self.cfg
        means = np.asarray(cv2.mean(frame)[:3], np.float32)
        scale = np.float32(means.mean()) / np.maximum(means, np.float32(1.0))  # grey world
        lut = np.clip(np.arange(256, dtype=np.float32)[:, None] * scale[None, :], 0, 255).astype(np.uint8)
        img8 = cv2.LUT(frame, lut.reshape(256, 1, 3))
        hue, sat, _ = cv2.split(cv2.cvtColor(img8, cv2.COLOR_RGB2HSV))
        hue_lut, sat_lut = self._colour_luts
        colour_code = cv2.LUT(hue, hue_lut).astype(np.int64) + cv2.LUT(sat, sat_lut)
        grey = cv2.cvtColor(img8, cv2.COLOR_RGB2GRAY).astype(np.float32)
        gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
        mag = np.sqrt(gx * gx + gy * gy)
        ang = np.arctan2(gy, gx)  # [-pi, pi] -> [0, pi), as ``ang % pi`` computes it
        pi = np.float32(np.pi)
        ang = np.where(ang < 0, ang + pi, ang)
        ang = np.where(ang >= pi, ang - pi, ang)
        ori = (ang / np.pi * c.orientation_bins).astype(np.int32).clip(0, c.orientation_bins - 1)
        n_colour, n_ori = c.color_bins * _SAT_BINS, c.orientation_bins
        cell, k, sizes = self._cells(grey.shape)
        n_cells = k * k
        ch = np.bincount((cell * n_colour + colour_code).ravel(), minlength=n_cells * n_colour).reshape(k, k, n_colour)
        oh = np.bincount((cell * n_ori + ori).ravel(), weights=mag.ravel(), minlength=n_cells * n_ori).reshape(k, k, n_ori)
        edges = np.bincount((cell * 2 + (mag > 40)).ravel(), minlength=n_cells * 2)[1::2].reshape(k, k).astype(np.float64)
        parts = []
        for level in range(c.pyramid_levels):
            m = 2**level
            f = k // m  # finest cells per side of one cell at this level

            def pooled(x: npt.NDArray[np.float64], m: int = m, f: int = f) -> npt.NDArray[np.float64]:
                return x.reshape(m, f, m, f, *x.shape[2:]).sum(axis=(1, 3)) if f > 1 else x

            chl, ohl, el, sl = pooled(ch), pooled(oh), pooled(edges), pooled(sizes)
            for r in range(m):
                for col in range(m):
                    h = chl[r, col].astype(np.float32)
                    o = ohl[r, col]
                    parts += [h / max(h.sum(), 1.0), o / max(o.sum(), 1e-6),
                              np.array([el[r, col] / max(sl[r, col], 1.0)])]
        v = np.sqrt(np.concatenate(parts).astype(np.float32))
        return v / max(float(np.linalg.norm(v)), 1e-6)

    @functools.cached_property
    def _colour_luts(self) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """OpenCV hue (0-179) -> hue bin x saturation bins, saturation (0-255) -> saturation bin:
        their sum is the colour bin."""
        hue = (np.arange(256, dtype=np.int32) * self.cfg.color_bins // 180).clip(0, self.cfg.color_bins - 1)
        sat = (np.arange(256, dtype=np.int32) * _SAT_BINS // 256).clip(0, _SAT_BINS - 1)
        return (hue * _SAT_BINS).astype(np.uint8), sat.astype(np.uint8)

    def _cells(self, shape: tuple[int, ...]) -> tuple[npt.NDArray[np.int64], int, npt.NDArray[np.float64]]:
        """Finest pyramid cell of every pixel (``r * k + c``, borders at ``r * h // k`` as the coarser
        levels' borders are), cells per side ``k``, and pixels per cell ``(k, k)``."""
        h, w = int(shape[0]), int(shape[1])
        if self._cell_cache is None or self._cell_cache[0] != (h, w):
            k = 2 ** (self.cfg.pyramid_levels - 1)
            rows = np.searchsorted(np.arange(1, k) * h // k, np.arange(h), side="right")
            cols = np.searchsorted(np.arange(1, k) * w // k, np.arange(w), side="right")
            cell = (rows[:, None] * k + cols[None, :]).astype(np.int64)
            sizes = np.bincount(cell.ravel(), minlength=k * k).reshape(k, k).astype(np.float64)
            self._cell_cache = ((h, w), (cell, k, sizes))
        return self._cell_cache[1]
