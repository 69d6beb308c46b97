"""Model-free scene descriptor: the offline default until a learned encoder is configured.

Per cell of a spatial pyramid: a hue x saturation histogram of the grey-world normalised image
(so a camera's white balance and exposure mostly cancel out) and a magnitude-weighted histogram
of gradient orientations plus edge density (structure: brick courses, a round tub, gravel).
Hellinger-mapped (square root) and L2-normalised, so cosine similarity is meaningful.
"""

from __future__ import annotations

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
        import cv2

        img = frame.astype(np.float32)
        img *= img.mean() / np.maximum(img.reshape(-1, 3).mean(axis=0), 1.0)  # grey world
        img8 = np.clip(img, 0, 255).astype(np.uint8)
        hsv = cv2.cvtColor(img8, cv2.COLOR_RGB2HSV)
        hue = (hsv[..., 0].astype(np.int32) * self.cfg.color_bins // 180).clip(0, self.cfg.color_bins - 1)
        sat = (hsv[..., 1].astype(np.int32) * _SAT_BINS // 256).clip(0, _SAT_BINS - 1)
        colour_code = hue * _SAT_BINS + sat
        grey = cv2.cvtColor(img8, cv2.COLOR_RGB2GRAY).astype(np.float32)
        gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
        mag = np.sqrt(gx * gx + gy * gy)
        ori = ((np.arctan2(gy, gx) % np.pi) / np.pi * self.cfg.orientation_bins).astype(np.int32)
        ori = ori.clip(0, self.cfg.orientation_bins - 1)
        n_colour = self.cfg.color_bins * _SAT_BINS
        parts = []
        h, w = grey.shape
        for level in range(self.cfg.pyramid_levels):
            k = 2**level
            for r in range(k):
                for c in range(k):
                    sl = (slice(r * h // k, (r + 1) * h // k), slice(c * w // k, (c + 1) * w // k))
                    ch = np.bincount(colour_code[sl].ravel(), minlength=n_colour).astype(np.float32)
                    oh = np.bincount(ori[sl].ravel(), weights=mag[sl].ravel(), minlength=self.cfg.orientation_bins)
                    edge = float((mag[sl] > 40).mean())
                    parts += [ch / max(ch.sum(), 1.0), oh / max(oh.sum(), 1e-6), np.array([edge])]
        v = np.sqrt(np.concatenate(parts).astype(np.float32))
        return v / max(float(np.linalg.norm(v)), 1e-6)
