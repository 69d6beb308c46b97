"""Model-free scene descriptor: the offline default until a learned encoder is configured.

Per cell of a spatial pyramid: a hue x saturation histogram of the grey-world normalised image
(so a camera's white balance and exposure mostly cancel out) and a magnitude-weighted histogram
of gradient orientations plus edge density (structure: brick courses, a round tub, gravel).
Hellinger-mapped (square root) and L2-normalised, so cosine similarity is meaningful.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from handclust.config import SceneConfig
from handclust.stages import Batch, Resources

_SAT_BINS = 3


def scene_dim(cfg: SceneConfig) -> int:
    cells = sum(4**level for level in range(cfg.pyramid_levels))
    return cells * (cfg.color_bins * _SAT_BINS + cfg.orientation_bins + 1)


class HistogramSceneEncoder:
    """Batch in: ``frame`` ``(n, H, W, 3)`` uint8. Batch out: adds ``scene_embedding`` ``(n, D)``."""

    name = "scene"
    resources = Resources(num_cpus=1, batch_size=64)

    def __init__(self, cfg: SceneConfig):
        self.cfg = cfg
        self.dim = scene_dim(cfg)
        self._cell_cache: tuple[tuple[int, int], tuple[npt.NDArray[np.int64], int, npt.NDArray[np.float64]]] | None = None

    def setup(self) -> None:
        import cv2

        cv2.setNumThreads(1)

    def __call__(self, batch: Batch) -> Batch:
        frames = batch["frame"]
        emb = np.stack([self.encode(f) for f in frames]) if len(frames) else np.zeros((0, self.dim), np.float32)
        out = dict(batch)
        out["scene_embedding"] = emb.astype(np.float32)
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
