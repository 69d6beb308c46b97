"""Image and video preprocessing in torch, driven by a checkpoint's own processor settings.

transformers' processors for these models want torchvision (not installed here: its wheel does not
match this torch) or work one PIL image at a time. The same steps in torch run batched and on the
GPU: resize (shortest edge, or to a fixed size), centre crop, rescale, normalise, plus OWLv2's
pad-to-square and Gaussian anti-aliasing. Sizes, interpolation, mean and std come from the
processor dict, so a checkpoint with other settings is preprocessed as its authors intended.

Frames go in as ``(n, H, W, 3)`` uint8 tensors, out as ``(n, 3, h, w)`` float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# PIL resample codes as they appear in processor configs -> torch interpolate modes. LANCZOS,
# BOX and HAMMING have no torch kernel; they map to the nearest smooth one.
_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bilinear"}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _hw(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size, size
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    return None


@dataclass(frozen=True)
class Transform:
    """One checkpoint's preprocessing. Build it with :meth:`from_processor`."""

    shortest_edge: int | None  # resize so the short side is this long, keeping aspect
    size: tuple[int, int] | None  # or resize to exactly (h, w)
    crop: tuple[int, int] | None  # centre crop (h, w) after resizing
    mode: str
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pad_square: bool = False  # OWLv2: pad bottom/right to a square before resizing
    rescale_first: bool = False  # OWLv2: rescale to [0, 1] before padding and resizing
    gaussian_antialias: bool = False  # OWLv2: blur before downsampling, then resize without antialias
    round_resized: bool = True  # processors that resize uint8 images round back to integers

    @classmethod
    def from_processor(cls, d: dict[str, Any], defaults: dict[str, Any] | None = None, owlv2: bool = False) -> Transform:
        """From a processor settings dict (``preprocessor_config.json``); ``defaults`` fill keys it lacks.

        ``owlv2``: the OWLv2 image processor's order (rescale, pad to square, blur, resize; no rounding).
        """
        d = {**(defaults or {}), **{k: v for k, v in d.items() if v is not None}}
        size = d.get("size") if d.get("do_resize", True) else None
        shortest = int(size["shortest_edge"]) if isinstance(size, dict) and "shortest_edge" in size else None
        crop = _hw(d.get("crop_size")) if d.get("do_center_crop", False) else None
        normalise = d.get("do_normalize", True)
        resample = d.get("resample")
        return cls(
            shortest_edge=shortest,
            size=None if shortest else _hw(size),
            crop=crop,
            mode=_RESAMPLE.get(int(resample), "bilinear") if resample is not None else "bilinear",
            rescale=float(d.get("rescale_factor", 1 / 255)) if d.get("do_rescale", True) else 1.0,
            mean=tuple(d.get("image_mean", IMAGENET_MEAN)) if normalise else (0.0, 0.0, 0.0),  # type: ignore[arg-type]
            std=tuple(d.get("image_std", IMAGENET_STD)) if normalise else (1.0, 1.0, 1.0),  # type: ignore[arg-type]
            pad_square=owlv2 and bool(d.get("do_pad", True)),
            rescale_first=owlv2,
            gaussian_antialias=owlv2,
            round_resized=not owlv2,
        )

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        if self.crop is not None:
            return self.crop
        if self.size is not None:
            return self.size
        if self.shortest_edge is not None:
            return self._shortest_edge_size(h, w)
        return h, w

    def _shortest_edge_size(self, h: int, w: int) -> tuple[int, int]:
        # As transformers' get_resize_output_image_size(default_to_square=False): the long side is floored.
        s = self.shortest_edge or min(h, w)
        return (s, int(s * w / h)) if h <= w else (int(s * h / w), s)

    def __call__(self, frames: Any) -> Any:
        """``(n, H, W, 3)`` uint8 tensor -> ``(n, 3, h, w)`` float32 tensor on the same device."""
        import torch

        x = frames.permute(0, 3, 1, 2).float()
        if self.rescale_first:
            x = x * self.rescale
        if self.pad_square:
            h, w = x.shape[-2:]
            s = max(h, w)
            x = torch.nn.functional.pad(x, (0, s - w, 0, s - h), value=0.0)
        h, w = x.shape[-2:]
        target = self._shortest_edge_size(h, w) if self.shortest_edge is not None else self.size
        if target is not None and tuple(target) != (h, w):
            x = self._resize(x, target)
        if self.crop is not None:
            ch, cw = self.crop
            h, w = x.shape[-2:]
            if ch > h or cw > w:
                x = torch.nn.functional.pad(x, (0, max(cw - w, 0), 0, max(ch - h, 0)))
                h, w = x.shape[-2:]
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top : top + ch, left : left + cw]
        if not self.rescale_first:
            x = x * self.rescale
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()

    def _resize(self, x: Any, target: tuple[int, int]) -> Any:
        import torch.nn.functional as F

        if self.gaussian_antialias:
            x = _gaussian_antialias(x, target)
            out = F.interpolate(x, size=target, mode=self.mode, align_corners=False if self.mode != "nearest" else None)
        elif self.mode == "nearest":
            out = F.interpolate(x, size=target, mode="nearest")
        else:
            # antialias=True uses PIL's kernels (bicubic a=-0.5), up- and downsampling alike.
            out = F.interpolate(x, size=target, mode=self.mode, align_corners=False, antialias=True)
        if self.round_resized and not self.rescale_first:
            out = out.clamp(0, 255).round()
        return out


def _gaussian_antialias(x: Any, target: tuple[int, int]) -> Any:
    """skimage-style anti-aliasing before a downscale, as OWLv2's processor does: sigma = (factor - 1) / 2."""
    import torch
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    for axis, (n_in, n_out) in enumerate(((h, target[0]), (w, target[1]))):
        sigma = max((n_in / n_out - 1.0) / 2.0, 0.0)
        if sigma <= 0:
            continue
        radius = int(math.ceil(3 * sigma))
        radius = min(radius, n_in - 1)
        t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = k / k.sum()
        c = x.shape[1]
        if axis == 0:
            weight = k.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
            x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), weight, groups=c)
        else:
            weight = k.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
            x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), weight, groups=c)
    return x


def batches_by_shape(frames: Any, batch_size: int) -> list[tuple[Any, Any]]:
    """``(rows, (k, H, W, 3) uint8 array)`` batches of at most ``batch_size`` same-sized frames.

    A runner batch can hold frames of clips with different sizes (a ragged object array); each
    forward pass needs one size. Rows keep the input order within each size.
    """
    import numpy as np

    n = len(frames)
    if isinstance(frames, np.ndarray) and frames.dtype != object and frames.ndim == 4:
        groups = {frames.shape[1:]: np.arange(n)}
    else:
        shapes = [np.asarray(f).shape for f in frames]
        groups = {s: np.array([i for i in range(n) if shapes[i] == s]) for s in dict.fromkeys(shapes)}
    out = []
    for rows in groups.values():
        for lo in range(0, len(rows), max(batch_size, 1)):
            sel = rows[lo : lo + batch_size]
            out.append((sel, np.ascontiguousarray(np.stack([np.asarray(frames[i], np.uint8) for i in sel]))))
    return out
