"""Learned encoders: DINOv2 scene embedding per frame, V-JEPA-2 embedding per segment, OWLv2 tool
presence per frame. Each is a stage (cheap ``__init__(cfg)``, ``setup()`` loads the weights,
``__call__(batch) -> batch``); torch and transformers are imported inside, never at import time.

:func:`check_models` runs on the driver before any clip is touched: a model that cannot be loaded
stops the run there, with the config key and the ``hf download`` command that fixes it.
"""

from __future__ import annotations

import logging
from typing import Any

from handclust.config import RunConfig
from handclust.modalities.encoders.device import DeviceError
from handclust.modalities.encoders.loading import ModelLoadError
from handclust.modalities.features.scene import SceneChoice, scene_encoder

__all__ = ["DeviceError", "ModelLoadError", "SceneChoice", "check_models", "encoder_stages", "fingerprint_sections", "scene_encoder"]

log = logging.getLogger(__name__)

# Keys that change how fast, not what: left out of the resume fingerprint.
RUNTIME_KEYS = ("batch_size", "num_gpus")
HISTOGRAM_KEYS = ("pyramid_levels", "color_bins", "orientation_bins")


def encoder_stages(cfg: RunConfig) -> dict[str, Any]:
    """The learned-encoder stages this config enables, by section name (not yet set up)."""
    out: dict[str, Any] = {}
    scene = scene_encoder(cfg.scene).encoder
    if scene == "dinov2":
        from handclust.modalities.encoders.dinov2 import DinoFrameEncoder

        out["scene"] = DinoFrameEncoder(cfg.scene, cfg.decode.sample_fps)
    elif scene == "efficientnet":
        from handclust.modalities.encoders.efficientnet import EfficientNetFrameEncoder

        out["scene"] = EfficientNetFrameEncoder(cfg.scene, cfg.decode.sample_fps)
    if cfg.video.enabled:
        from handclust.modalities.encoders.vjepa2 import VJEPAWindowEncoder

        out["video"] = VJEPAWindowEncoder(cfg.video, cfg.decode.sample_fps)
    if cfg.tools.enabled:
        from handclust.modalities.encoders.owlv2 import OwlToolPresence

        out["tools"] = OwlToolPresence(cfg.tools, cfg.decode.sample_fps)
    return out


def check_models(cfg: RunConfig, resolve_devices: bool = True) -> dict[str, Any]:
    """Check every enabled encoder's checkpoint (and device) before clip work; return what the run records.

    Raises :class:`ModelLoadError` (or :class:`DeviceError`) with the key to set and how. With
    ``resolve_devices`` the device and dtype are resolved here (local runs: where the models run);
    the Ray runner resolves them on each worker instead.
    """
    from handclust.extras import api_key, check_install
    from handclust.modalities.features.scene import scene_dim

    check_install(cfg, labels_key=bool(api_key(cfg.labels)))
    records: dict[str, Any] = {}
    choice = scene_encoder(cfg.scene)
    # No silent fallback: the log and run.json (encoders.scene.chosen) say which scene encoder runs and why.
    (log.warning if choice.encoder == "histogram" and cfg.scene.encoder == "auto" else log.info)("scene encoder: %s", choice.why)
    if choice.encoder == "histogram":
        from handclust.modalities.features.scene import scene_fps, scene_step

        records["scene"] = {"encoder": "histogram", "chosen": choice.why, "dim": scene_dim(cfg.scene), "device": "cpu",
                            "fps": scene_fps(cfg.scene, "histogram"),
                            "every_nth_frame": scene_step(cfg.scene, "histogram", cfg.decode.sample_fps)}
    if cfg.pose.enabled:  # MediaPipe: bundled models, CPU only, nothing to resolve
        from handclust.modalities.features.keypoints import check_mediapipe, idle_step
        from handclust.stages import frame_step

        step = frame_step(cfg.pose.fps, cfg.decode.sample_fps)  # the rate keypoints really run at
        idle = idle_step(cfg.pose, cfg.decode.sample_fps)
        records["pose"] = {**check_mediapipe(cfg.pose), "every_nth_frame": step, "frames_per_s": cfg.decode.sample_fps / step,
                           "idle_every_nth_frame": idle, "idle_frames_per_s": cfg.decode.sample_fps / idle,
                           "looks": (f"hands and body every {idle} sampled frames; hands every {step} within {idle} frames "
                                     "of a found hand" if idle > step else f"hands and body every {step} sampled frames")}
    for name, stage in encoder_stages(cfg).items():
        rec = stage.check()
        section = getattr(cfg, name)
        rec.update(device_requested=section.device, dtype_requested=section.dtype, batch_size=section.batch_size)
        if resolve_devices:
            from handclust.modalities.encoders.device import dtype_name, resolve_device, resolve_dtype

            device = resolve_device(section.device, f"{name}.device")
            rec.update(device=device, dtype=dtype_name(resolve_dtype(section.dtype, device, f"{name}.dtype")))
        else:
            rec.update(device=f"{section.device} (resolved on each Ray worker)", dtype=f"{section.dtype} (resolved on each Ray worker)")
        if name == "scene":
            rec["chosen"] = choice.why
        records[name] = rec
    return records


def fingerprint_sections(d: dict[str, Any], switched: tuple[str, ...]) -> dict[str, Any]:
    """The scene section and the ``switched`` ones (sections that switch a modality on: video, tools,
    pose) of a config dict, reduced to what changes the outputs. ``d["scene"]`` holds the encoder that
    runs (``auto`` resolved) and the rate it runs at (``fps``, null for every frame): see
    :func:`handclust.runtime.plan.feature_fingerprint`.

    Switching an encoder, its model, revision, device or dtype changes the fingerprint (and so
    recomputes on resume); batch sizes and GPU shares do not, nor do settings of a disabled encoder.
    """
    scene = {k: v for k, v in d["scene"].items() if k not in RUNTIME_KEYS}
    if scene.get("fps") is None:  # every sampled frame, as before scene.fps existed: those runs still resume
        scene.pop("fps", None)
    encoder = scene.get("encoder", "histogram")
    if encoder == "histogram":
        scene = {k: v for k, v in scene.items() if k in ("encoder", "fps", *HISTOGRAM_KEYS)}
    elif encoder == "efficientnet":  # one fixed checkpoint: model, revision and pooling are DINOv2's
        scene = {k: v for k, v in scene.items() if k in ("encoder", "fps", "device", "dtype")}
    else:
        scene = {k: v for k, v in scene.items() if k not in HISTOGRAM_KEYS}
    out = {"scene": scene}
    for name in switched:
        section = d.get(name) or {}
        if section.get("enabled"):  # absent when off: runs from before these encoders existed still resume
            out[name] = {k: v for k, v in section.items() if k not in (*RUNTIME_KEYS, "fuse", "top_k")}
    return out
