"""Learned encoders: DINOv2 scene embedding per frame, V-JEPA-2 embedding per segment, OWLv2 tool
presence per frame. Each is a stage (cheap ``__init__(cfg)``, ``setup()`` loads the weights,
``__call__(batch) -> batch``); torch and transformers are imported inside, never at import time.

:func:`check_models` runs on the driver before any clip is touched: a model that cannot be loaded
stops the run there, with the config key and the ``hf download`` command that fixes it.
"""

from __future__ import annotations

from typing import Any

from handclust.config import RunConfig
from handclust.modalities.encoders.device import DeviceError
from handclust.modalities.encoders.loading import ModelLoadError
from handclust.modalities.features.scene import SceneChoice, scene_encoder

__all__ = ["DeviceError", "ModelLoadError", "SceneChoice", "check_models", "encoder_stages", "fingerprint_sections", "scene_encoder"]

# Keys that change how fast, not what: left out of the resume fingerprint.
RUNTIME_KEYS = ("batch_size", "num_gpus")
HISTOGRAM_KEYS = ("pyramid_levels", "color_bins", "orientation_bins")


def encoder_stages(cfg: RunConfig) -> dict[str, Any]:
    """The learned-encoder stages this config enables, by modality name (not yet set up): the registered
    modalities' frame stages built on :class:`~handclust.modalities.encoders.base.EncoderStage`."""
    from handclust.modalities import registry
    from handclust.modalities.encoders.base import EncoderStage

    stages = {m.name: m.frame_stage(cfg) for m in registry.computed(cfg) if m.frame_stage is not None}
    return {name: stage for name, stage in stages.items() if isinstance(stage, EncoderStage)}


def check_models(cfg: RunConfig, resolve_devices: bool = True) -> dict[str, Any]:
    """Check the installs and every computed modality's model (and device) before clip work; return what the run records.

    Each registered modality's ``check`` runs, in registry order (:func:`handclust.modalities.registry.model_checks`).
    Raises :class:`ModelLoadError` (or :class:`DeviceError`) with the key to set and how. With
    ``resolve_devices`` the device and dtype are resolved here (local runs: where the models run);
    the Ray runner resolves them on each worker instead.
    """
    from handclust.extras import api_key, check_install
    from handclust.modalities import registry

    check_install(cfg, labels_key=bool(api_key(cfg.labels)))
    return registry.model_checks(cfg, resolve_devices)


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
