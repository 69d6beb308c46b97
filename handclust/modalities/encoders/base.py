"""What every learned encoder stage shares, written once.

An encoder stage is built on the driver from its config section (cheap: no model, no torch), checked
there (:meth:`check`), and set up where it runs: :meth:`EncoderStage.setup` resolves the device and
dtype from ``<section>.device`` / ``<section>.dtype`` and loads the model once per process
(:meth:`load`); frames go through the model in batches of one frame size (:meth:`run_batches`,
``forward_batch`` frames per pass); :meth:`info` is what run.json records about it.
:class:`HFEncoderStage` adds a Hugging Face checkpoint (a Hub id or a local directory:
``<section>.model`` and ``<section>.revision``). DINOv2, OWLv2 and V-JEPA-2 are Hugging Face stages;
EfficientNet-Lite0 loads its weights from a pip package.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from handclust.modalities.encoders.device import dtype_name, gpu_share, resolve_device, resolve_dtype
from handclust.modalities.encoders.loading import check_checkpoint, load_model, load_tokenizer, processor_settings
from handclust.stages import Resources


class EncoderStage:
    """A frame stage around one learned model. Subclasses set ``name`` (the stage), ``section`` (the
    config section: ``scene``, ``tools``, ``video``) and implement :meth:`load` and :meth:`forward`."""

    name = ""
    section = ""

    def __init__(self, cfg: Any, batch_rows: int):
        self.cfg = cfg
        self.resources = Resources(num_cpus=1, num_gpus=gpu_share(cfg.device, cfg.num_gpus), batch_size=max(batch_rows, 1))
        self.model: Any = None
        self.device = ""
        self.dtype: Any = None
        self.dim = 0
        self.forward_batch = max(int(cfg.batch_size), 1)

    def setup(self) -> None:
        """Device, dtype and model, once per process (on the worker that runs the stage)."""
        if self.model is not None:
            return
        self.device = resolve_device(self.cfg.device, f"{self.section}.device")
        self.dtype = resolve_dtype(self.cfg.dtype, self.device, f"{self.section}.dtype")
        self.model = self.load()

    def load(self) -> Any:
        """The model on ``self.device`` in ``self.dtype`` (and whatever else the forward pass needs)."""
        raise NotImplementedError

    def forward(self, frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """One pass over ``(k, H, W, 3)`` uint8 frames of one size -> ``(k, width)`` float32."""
        raise NotImplementedError

    def run_batches(self, frames: npt.NDArray[np.uint8], width: int) -> npt.NDArray[np.float32]:
        """``(n, H, W, 3)`` frames (or a ragged array of several sizes) -> ``(n, width)``, ``forward_batch``
        frames of one size per pass, rows in input order."""
        self.setup()
        from handclust.modalities.encoders.preprocess import batches_by_shape

        out = np.zeros((len(frames), width), np.float32)
        for rows, batch in batches_by_shape(frames, self.forward_batch):
            out[rows] = self.forward(batch)
        return out

    def check(self) -> dict[str, Any]:
        """The cheap driver-side check before any clip (no weights loaded): what run.json records about the model."""
        return {"encoder": self.name, "dim": self.dim}

    def record(self, resolve_devices: bool = True) -> dict[str, Any]:
        """:meth:`check` with the device, dtype and batch size asked for; with ``resolve_devices`` the device
        and dtype are resolved here (local runs: where the model runs), else on each Ray worker.
        Raises ModelLoadError / DeviceError naming the ``<section>.*`` key to set."""
        rec = self.check()
        rec.update(device_requested=self.cfg.device, dtype_requested=self.cfg.dtype, batch_size=self.cfg.batch_size)
        if resolve_devices:
            device = resolve_device(self.cfg.device, f"{self.section}.device")
            rec.update(device=device, dtype=dtype_name(resolve_dtype(self.cfg.dtype, device, f"{self.section}.dtype")))
        else:
            rec.update(device=f"{self.cfg.device} (resolved on each Ray worker)", dtype=f"{self.cfg.dtype} (resolved on each Ray worker)")
        return rec

    def info(self) -> dict[str, Any]:
        """What run.json records about the stage as it ran."""
        return {"device": self.device, "dtype": dtype_name(self.dtype), "dim": self.dim, "batch_size": self.forward_batch,
                **self.info_extra()}

    def info_extra(self) -> dict[str, Any]:
        return {}


class HFEncoderStage(EncoderStage):
    """An encoder stage whose model is a Hugging Face checkpoint: ``key`` (its config key, for
    messages), ``example_id`` (a Hub id that works), ``model_types`` (the architectures it accepts)
    and ``kind`` (``image`` or ``video`` processor)."""

    key = ""
    example_id = ""
    model_types: tuple[str, ...] = ()
    kind = "image"

    def checkpoint_record(self, **kwargs: Any) -> dict[str, Any]:
        """The cheap driver-side check that the checkpoint is there and of an accepted type; what the run records."""
        return check_checkpoint(self.cfg.model, self.cfg.revision, self.key, self.example_id, self.model_types, self.kind, **kwargs)

    def processor(self) -> dict[str, Any]:
        """The checkpoint's preprocessing settings (resize, crop, mean, std)."""
        return processor_settings(self.cfg.model, self.cfg.revision, self.key, self.example_id, self.kind)

    def load_checkpoint(self, model_class: Any) -> Any:
        return load_model(model_class, self.cfg.model, self.cfg.revision, self.key, self.example_id, self.device, self.dtype)

    def load_tokenizer(self) -> Any:
        return load_tokenizer(self.cfg.model, self.cfg.revision, self.key, self.example_id)
