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
from handclust.modalities.encoders.base import HFEncoderStage
from handclust.modalities.features.scene import embed_every, scene_step
from handclust.stages import Batch

KEY = "scene.model"
EXAMPLE_ID = "facebook/dinov2-small"
MODEL_TYPES = ("dinov2", "dinov2_with_registers")
# BitImageProcessor's defaults, for a checkpoint whose processor config leaves a key out.
PROCESSOR_DEFAULTS: dict[str, Any] = {"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224},
                                      "do_center_crop": True, "resample": 3}


class DinoFrameEncoder(HFEncoderStage):
    """Batch in: ``frame`` ``(n, H, W, 3)`` uint8, ``frame_idx``. Batch out: adds ``scene_embedding`` ``(n, D)``
    float32 (NaN rows between the ones embedded when ``scene.fps`` is set).

    ``D`` is ``2 x hidden_size`` for ``pooling="cls+mean"`` (768 for dinov2-small), else ``hidden_size``.
    """

    name = "scene"
    section = "scene"
    key, example_id, model_types, kind = KEY, EXAMPLE_ID, MODEL_TYPES, "image"

    def __init__(self, cfg: SceneConfig, sample_fps: float | None = None):
        super().__init__(cfg, cfg.batch_size)
        self.step = scene_step(cfg, "dinov2", sample_fps)  # 1 unless scene.fps is set

    def check(self) -> dict[str, Any]:
        """Cheap driver-side check that the checkpoint loads; returns what the run records."""
        return {"encoder": "dinov2", **self.checkpoint_record(), "pooling": self.cfg.pooling}

    def load(self) -> Any:
        from transformers import AutoModel

        self.transform = _transform(self.processor())
        model = self.load_checkpoint(AutoModel)
        self.n_register = int(getattr(model.config, "num_register_tokens", 0) or 0)
        hidden = int(model.config.hidden_size)
        self.dim = 2 * hidden if self.cfg.pooling == "cls+mean" else hidden
        return model

    def __call__(self, batch: Batch) -> Batch:
        self.setup()
        frames = batch["frame"]
        out = dict(batch)
        out["scene_embedding"] = embed_every(frames, batch.get("frame_idx", np.arange(len(frames))), self.step, self.dim, self.embed)
        return out

    def embed(self, frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """``(n, H, W, 3)`` uint8 RGB -> ``(n, D)`` unit vectors, ``scene.batch_size`` frames per forward pass."""
        self.setup()
        return self.run_batches(frames, self.dim)

    def forward(self, frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
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
