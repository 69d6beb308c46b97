"""Which optional install a config needs, checked before any clip is decoded.

The base install holds what every run uses; the rest comes with extras (pyproject.toml):
``[cpu]`` or ``[gpu]`` (faiss, one of the two), ``[hands]`` (+ mediapipe with ``--no-deps``),
``[encoders]`` (torch, transformers), ``[labels]`` (google-genai). A run whose config needs a
missing one stops at once with the command that fixes it, never half-way through the clips.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from handclust.config import ConfigError

if TYPE_CHECKING:
    from handclust.config import RunConfig

FAISS_HINT = ("pip install 'handclust[cpu]' (or 'handclust[gpu]' on a CUDA machine: one of the two, both install the "
              "`faiss` module)")


class MissingExtraError(ConfigError):
    """The config needs an optional dependency this install lacks; the message names the extra."""


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
    bundled models by :func:`handclust.features.keypoints.check_mediapipe`.
    """
    require(("faiss",), "clustering (the kNN graph over segments)", FAISS_HINT)
    learned = [f"{k}={v}" for k, v, on in (("scene.encoder", cfg.scene.encoder, cfg.scene.encoder != "histogram"),
                                           ("video.enabled", "true", cfg.video.enabled),
                                           ("tools.enabled", "true", cfg.tools.enabled)) if on]
    if learned:
        require(("torch", "transformers"), " and ".join(learned),
                "pip install 'handclust[encoders]' (on a laptop or CI, install torch==2.13.0 first: the CPU build, as `make` does)")
    if cfg.cluster.backend == "gpu":
        require(("cuml", "cupy"), "cluster.backend=gpu", "pip install 'handclust[gpu]' on a CUDA machine, or set cluster.backend=cpu")
    if cfg.labels.enabled and labels_key:
        require(("google.genai",), "labels.enabled with an API key set", "pip install 'handclust[labels]', or set labels.enabled=false")
