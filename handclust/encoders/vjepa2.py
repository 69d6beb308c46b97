"""V-JEPA-2 video embedding per segment, from frames re-decoded from the segment's time range.

Frames are never kept from the frame stage (they are sampled for flow, at the decode width):
each segment's ``[t_start, t_end)`` is decoded again with :func:`handclust.video.read_range`,
``frames_per_window`` frames per window at about ``video.fps``. A segment longer than one window
gets several consecutive windows (at most ``video.max_windows``; beyond that they spread out).
Each window's encoder tokens are mean-pooled and L2-normalised; a segment's vector is the
normalised mean of its windows. The predictor is skipped: only the encoder is run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from handclust.config import VideoConfig
from handclust.encoders.device import dtype_name, gpu_share, resolve_device, resolve_dtype
from handclust.encoders.loading import check_checkpoint, load_model, processor_settings
from handclust.stages import Batch, Resources

KEY = "video.model"
EXAMPLE_ID = "facebook/vjepa2-vitl-fpc64-256"
MODEL_TYPES = ("vjepa2",)
# VJEPA2VideoProcessor's behaviour: shortest edge = crop x 256/224, centre crop, bilinear, ImageNet mean/std.
PROCESSOR_DEFAULTS: dict[str, Any] = {"crop_size": 256, "do_center_crop": True, "resample": 2}


def n_windows(duration_s: float, cfg: VideoConfig) -> int:
    """Windows for a segment: enough to cover it at ``video.fps``, at least 1, at most ``max_windows``."""
    return int(min(max(round(duration_s * cfg.fps / cfg.frames_per_window), 1), cfg.max_windows))


def video_transform(settings: dict[str, Any]) -> Any:
    from handclust.encoders.preprocess import Transform

    d = {**PROCESSOR_DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    crop = d["crop_size"]
    crop_hw = (int(crop), int(crop)) if isinstance(crop, int) else (int(crop["height"]), int(crop["width"]))
    # VJEPA2VideoProcessor always derives the resize from the crop, whatever "size" says.
    d["size"] = {"shortest_edge": int(crop_hw[0] * 256 / 224)}
    d["crop_size"] = {"height": crop_hw[0], "width": crop_hw[1]}
    return Transform.from_processor(d)


class VJEPASegmentEncoder:
    """Segment stage. Batch in: ``path``, ``t_start``, ``t_end`` per segment. Batch out: adds
    ``desc_video`` ``(n_segments, hidden_size)`` float32 unit vectors (1024 for ViT-L).
    """

    name = "video"

    def __init__(self, cfg: VideoConfig):
        self.cfg = cfg
        self.resources = Resources(num_cpus=1, num_gpus=gpu_share(cfg.device, cfg.num_gpus), batch_size=max(cfg.batch_size, 1))
        self.model: Any = None
        self.device = ""
        self.dtype: Any = None
        self._decode_width: dict[str, int] = {}

    def check(self) -> dict[str, Any]:
        rec = check_checkpoint(self.cfg.model, self.cfg.revision, KEY, EXAMPLE_ID, MODEL_TYPES, "video")
        c = self.cfg
        return {"encoder": "vjepa2", **rec, "frames_per_window": c.frames_per_window, "fps": c.fps, "max_windows": c.max_windows}

    def setup(self) -> None:
        if self.model is not None:
            return
        from transformers import VJEPA2Model

        c = self.cfg
        self.device = resolve_device(c.device, "video.device")
        self.dtype = resolve_dtype(c.dtype, self.device, "video.dtype")
        self.transform = video_transform(processor_settings(c.model, c.revision, KEY, EXAMPLE_ID, "video"))
        self.model = load_model(VJEPA2Model, c.model, c.revision, KEY, EXAMPLE_ID, self.device, self.dtype)
        self.dim = int(self.model.config.hidden_size)

    def info(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": dtype_name(self.dtype), "dim": self.dim, "batch_size": self.cfg.batch_size}

    def __call__(self, batch: Batch) -> Batch:
        self.setup()
        out = dict(batch)
        out["desc_video"] = self.embed_segments(batch["path"], batch["t_start"], batch["t_end"])
        return out

    def embed_segments(self, paths: Any, t_start: Any, t_end: Any) -> npt.NDArray[np.float32]:
        """One unit vector per segment ``(n, D)``; windows of several segments share forward passes."""
        from handclust.video import read_range

        self.setup()
        n = len(paths)
        sums = np.zeros((n, self.dim), np.float64)
        queue: list[tuple[int, Any]] = []  # (segment row, preprocessed window)
        F = self.cfg.frames_per_window
        for i in range(n):
            path, a, b = str(paths[i]), float(t_start[i]), float(t_end[i])
            k = n_windows(b - a, self.cfg)
            frames = read_range(path, a, b, k * F, width=self._width(path))
            for w in range(k):
                queue.append((i, frames[w * F : (w + 1) * F]))
            while len(queue) >= self.cfg.batch_size:
                self._flush(queue[: self.cfg.batch_size], sums)
                queue = queue[self.cfg.batch_size :]
        if queue:
            self._flush(queue, sums)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return (sums / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    def embed_windows(self, windows: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """``(n, frames, H, W, 3)`` uint8 windows -> ``(n, D)`` unit vectors (mean of encoder tokens)."""
        self.setup()
        out = np.zeros((len(windows), self.dim), np.float32)
        bs = self.cfg.batch_size
        for lo in range(0, len(windows), bs):
            out[lo : lo + bs] = self._forward(np.ascontiguousarray(windows[lo : lo + bs]))
        return out

    def _flush(self, items: list[tuple[int, Any]], sums: npt.NDArray[np.float64]) -> None:
        shapes = {w.shape for _, w in items}
        if len(shapes) == 1:
            vecs = self._forward(np.stack([w for _, w in items]))
        else:  # windows of clips with different frame sizes
            vecs = np.concatenate([self._forward(w[None]) for _, w in items])
        for (row, _), v in zip(items, vecs, strict=True):
            sums[row] += v

    def _forward(self, windows: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        import torch
        import torch.nn.functional as F

        b, t = windows.shape[:2]
        with torch.inference_mode():
            x = torch.from_numpy(windows).to(self.device, non_blocking=True).reshape(b * t, *windows.shape[2:])
            x = self.transform(x)
            x = x.reshape(b, t, *x.shape[1:]).to(self.dtype)  # (batch, frames, 3, h, w)
            tokens = self.model(pixel_values_videos=x, skip_predictor=True).last_hidden_state.float()
            return F.normalize(tokens.mean(dim=1), dim=-1).cpu().numpy().astype(np.float32)

    def _width(self, path: str) -> int:
        """Decode width whose short side covers the model's resize (no decoding above what is used)."""
        if path not in self._decode_width:
            from handclust.video import probe

            info = probe(path)
            short = self.transform.shortest_edge or 256
            w, h = max(info.width, 1), max(info.height, 1)
            self._decode_width[path] = int(math.ceil(short * w / min(w, h) / 2) * 2)
        return self._decode_width[path]
