"""DINOv2 scene embedding per frame: the learned alternative to the histogram scene descriptor.

Writes the same ``scene_embedding`` column the histogram stage writes, so segmentation (appearance
novelty) and segment description (``desc_scene``) use it unchanged. The vector is the CLS token
and the mean of the patch tokens of the last layer, each L2-normalised, concatenated and scaled to
unit length (``scene.pooling`` keeps one of the two): the CLS token summarises the image the way
DINOv2 was trained to, the patch mean keeps the layout-free "stuff" (mortar, brick, gravel) that
a cluttered site is mostly made of.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from handclust.config import SceneConfig
from handclust.modalities.encoders.device import dtype_name, gpu_share, resolve_device, resolve_dtype
from handclust.modalities.encoders.loading import check_checkpoint, load_model, processor_settings
from handclust.modalities.features.scene import embed_every, scene_step
from handclust.stages import Batch, Resources

KEY = "scene.model"
EXAMPLE_ID = "facebook/dinov2-small"
MODEL_TYPES = ("dinov2", "dinov2_with_registers")
# BitImageProcessor's defaults, for a checkpoint whose processor config leaves a key out.
PROCESSOR_DEFAULTS: dict[str, Any] = {"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224},
                                      "do_center_crop": True, "resample": 3}


class DinoFrameEncoder:
    """Batch in: ``frame`` ``(n, H, W, 3)`` uint8, ``frame_idx``. Batch out: adds ``scene_embedding`` ``(n, D)``
    float32 (NaN rows between the ones embedded when ``scene.fps`` is set).

    ``D`` is ``2 x hidden_size`` for ``pooling="cls+mean"`` (768 for dinov2-small), else ``hidden_size``.
    """

    name = "scene"

    def __init__(self, cfg: SceneConfig, sample_fps: float | None = None):
        self.cfg = cfg
        self.step = scene_step(cfg, "dinov2", sample_fps)  # 1 unless scene.fps is set
        self.resources = Resources(num_cpus=1, num_gpus=gpu_share(cfg.device, cfg.num_gpus), batch_size=max(cfg.batch_size, 1))
        self.model: Any = None
        self.device = ""
        self.dtype: Any = None

    def check(self) -> dict[str, Any]:
        """Cheap driver-side check that the checkpoint loads; returns what the run records."""
        rec = check_checkpoint(self.cfg.model, self.cfg.revision, KEY, EXAMPLE_ID, MODEL_TYPES, "image")
        return {"encoder": "dinov2", **rec, "pooling": self.cfg.pooling}

    def setup(self) -> None:
        if self.model is not None:
            return
        from transformers import AutoModel

        c = self.cfg
        self.device = resolve_device(c.device, "scene.device")
        self.dtype = resolve_dtype(c.dtype, self.device, "scene.dtype")
        self.transform = _transform(processor_settings(c.model, c.revision, KEY, EXAMPLE_ID, "image"))
        self.model = load_model(AutoModel, c.model, c.revision, KEY, EXAMPLE_ID, self.device, self.dtype)
        self.n_register = int(getattr(self.model.config, "num_register_tokens", 0) or 0)
        hidden = int(self.model.config.hidden_size)
        self.dim = 2 * hidden if c.pooling == "cls+mean" else hidden

    def info(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": dtype_name(self.dtype), "dim": self.dim, "batch_size": self.cfg.batch_size}

    def __call__(self, batch: Batch) -> Batch:
        self.setup()
        frames = batch["frame"]
        out = dict(batch)
        out["scene_embedding"] = embed_every(frames, batch.get("frame_idx", np.arange(len(frames))), self.step, self.dim, self.embed)
        return out

    def embed(self, frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """``(n, H, W, 3)`` uint8 RGB -> ``(n, D)`` unit vectors, ``scene.batch_size`` frames per forward pass."""
        self.setup()
        from handclust.modalities.encoders.preprocess import batches_by_shape

        out = np.zeros((len(frames), self.dim), np.float32)
        for rows, batch in batches_by_shape(frames, self.cfg.batch_size):
            out[rows] = self._forward(batch)
        return out

    def _forward(self, frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            x = self.transform(torch.from_numpy(frames).to(self.device, non_blocking=True)).to(self.dtype)
            if self.device == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)  # the patch-embedding conv prefers NHWC
            tokens = self.model(pixel_values=x).last_hidden_state.float()
            cls = F.normalize(tokens[:, 0], dim=-1)
            mean = F.normalize(tokens[:, 1 + self.n_register :].mean(dim=1), dim=-1)
            if self.cfg.pooling == "cls":
                v = cls
            elif self.cfg.pooling == "mean":
                v = mean
            else:
                v = torch.cat([cls, mean], dim=-1) / np.sqrt(2.0)
            return v.cpu().numpy().astype(np.float32)


def _transform(settings: dict[str, Any]) -> Any:
    from handclust.modalities.encoders.preprocess import Transform

    return Transform.from_processor(settings, PROCESSOR_DEFAULTS)
