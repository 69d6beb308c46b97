"""V-JEPA-2 video embedding, on the frames the run already decodes (no second decode).

When ``video.enabled``, decoding (:func:`handclust.io.video.open_video` with ``model_input``) also
gives every sampled frame at the model's input size (short side = the processor's resize, long
side cut to what its centre crop can reach), decoded from the source frame: the ``video_px`` row
column, dropped once this stage has used it. This frame stage cuts each clip's rows into
consecutive windows of ``video.frames_per_window`` frames (every ``round(sample_fps / video.fps)``-th
sampled frame; windows are fixed on the clip's sample grid, so they do not depend on batching
except where a batch boundary cuts one: each part is then embedded on its own, padded by repeating
its last frame), embeds windows of all the batch's clips in shared forward passes (encoder only,
tokens mean-pooled, L2-normalised) and gives every row its window's vector (``video_emb``, not
stored). A segment's ``desc_video`` is the normalised mean over its rows
(:func:`handclust.modalities.descriptors.describe_video`): windows weighted by how much of them the segment holds.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from handclust.config import VideoConfig
from handclust.modalities.encoders.base import HFEncoderStage
from handclust.modalities.encoders.loading import processor_settings
from handclust.stages import Batch

KEY = "video.model"
EXAMPLE_ID = "facebook/vjepa2-vitl-fpc64-256"
MODEL_TYPES = ("vjepa2",)
# VJEPA2VideoProcessor's behaviour: shortest edge = crop x 256/224, centre crop, bilinear, ImageNet mean/std.
PROCESSOR_DEFAULTS: dict[str, Any] = {"crop_size": 256, "do_center_crop": True, "resample": 2}


def window_stride(cfg: VideoConfig, sample_fps: float) -> int:
    """Sampled frames per window frame: ``video.fps`` (None: every sampled frame) is at most ``sample_fps``."""
    return max(1, round(sample_fps / cfg.fps)) if cfg.fps else 1


def window_seconds(cfg: VideoConfig, sample_fps: float) -> float:
    """Footage one window covers."""
    return cfg.frames_per_window * window_stride(cfg, sample_fps) / sample_fps


@functools.lru_cache(maxsize=8)
def model_input(cfg: VideoConfig) -> tuple[int, int]:
    """``(short side, long side kept)`` of the frames decoding gives this stage (:func:`handclust.io.video.open_video`):
    the processor's resize of the short side, and a long side cut to no less than that (so the
    processor's resize stays a no-op) and no less than its centre crop."""
    t = video_transform(processor_settings(cfg.model, cfg.revision, KEY, EXAMPLE_ID, "video"))
    crop = t.crop or (256, 256)
    short = int(t.shortest_edge or max(crop))
    return short, max(short, *crop)


def video_transform(settings: dict[str, Any]) -> Any:
    from handclust.modalities.encoders.preprocess import Transform

    d = {**PROCESSOR_DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    crop = d["crop_size"]
    crop_hw = (int(crop), int(crop)) if isinstance(crop, int) else (int(crop["height"]), int(crop["width"]))
    # VJEPA2VideoProcessor always derives the resize from the crop, whatever "size" says.
    d["size"] = {"shortest_edge": int(crop_hw[0] * 256 / 224)}
    d["crop_size"] = {"height": crop_hw[0], "width": crop_hw[1]}
    return Transform.from_processor(d)


class VJEPAWindowEncoder(HFEncoderStage):
    """Frame stage. Batch in: ``clip_id``, ``frame_idx``, ``video_px`` ``(n, h, w, 3)`` uint8 (from
    decoding). Batch out: ``video_px`` dropped, ``video_emb`` ``(n, hidden_size)`` float32, each row
    its window's unit vector (1024 for ViT-L)."""

    name = "video"
    section = "video"
    key, example_id, model_types, kind = KEY, EXAMPLE_ID, MODEL_TYPES, "video"

    def __init__(self, cfg: VideoConfig, sample_fps: float):
        self.sample_fps = sample_fps
        self.stride = window_stride(cfg, sample_fps)
        self.span = cfg.frames_per_window * self.stride  # sampled frames per window
        super().__init__(cfg, max(cfg.batch_size, 1) * self.span)

    def check(self) -> dict[str, Any]:
        return {"encoder": "vjepa2", **self.checkpoint_record(), **self._windows()}

    def _windows(self) -> dict[str, Any]:
        c = self.cfg
        return {"frames_per_window": c.frames_per_window, "frames_per_s": self.sample_fps / self.stride,
                "window_s": window_seconds(c, self.sample_fps),
                "input": "the run's own decode: each sampled frame also decoded at the model's input size (no second decode)"}

    def load(self) -> Any:
        from transformers import VJEPA2Model

        self.transform = video_transform(self.processor())
        model = self.load_checkpoint(VJEPA2Model)
        self.dim = int(model.config.hidden_size)
        return model

    def info_extra(self) -> dict[str, Any]:
        return self._windows()

    def __call__(self, batch: Batch) -> Batch:
        self.setup()
        out = dict(batch)
        px = out.pop("video_px", None)
        if px is None:
            raise ValueError("the video stage got rows without video_px: decoding was not opened for V-JEPA-2 "
                             "(ClipJob.decode does so when video.enabled)")
        n = len(px)
        fi = np.asarray(batch["frame_idx"], np.int64)
        clips = np.asarray(batch["clip_id"]).astype(str)
        groups: dict[tuple[str, int], list[int]] = {}
        for r in np.argsort(fi, kind="stable"):
            groups.setdefault((clips[r], int(fi[r]) // self.span), []).append(int(r))
        F = self.cfg.frames_per_window
        windows: list[npt.NDArray[np.uint8]] = []
        row_window = np.zeros(n, np.int64)
        for w, rows in enumerate(groups.values()):
            picked = [r for r in rows if (int(fi[r]) % self.span) % self.stride == 0] or rows[:1]
            picked = (picked + [picked[-1]] * F)[:F]  # a cut window: pad by repeating its last frame
            windows.append(px[picked])
            row_window[rows] = w
        vecs = self.embed_window_list(windows)
        out["video_emb"] = vecs[row_window] if n else np.zeros((0, self.dim), np.float32)
        return out

    def embed_window_list(self, windows: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        """Windows of any frame sizes -> ``(n, D)`` unit vectors; windows of one size share forward passes."""
        self.setup()
        out = np.zeros((len(windows), self.dim), np.float32)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, w in enumerate(windows):
            by_shape.setdefault(w.shape, []).append(i)
        for idx in by_shape.values():
            out[idx] = self.embed_windows(np.stack([windows[i] for i in idx]))
        return out

    def embed_windows(self, windows: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """``(n, frames, H, W, 3)`` uint8 windows -> ``(n, D)`` unit vectors (mean of encoder tokens)."""
        self.setup()
        out = np.zeros((len(windows), self.dim), np.float32)
        bs = self.cfg.batch_size
        for lo in range(0, len(windows), bs):
            out[lo : lo + bs] = self._forward(np.ascontiguousarray(windows[lo : lo + bs]))
        return out

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
