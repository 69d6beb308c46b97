"""Finding and loading pretrained checkpoints, with one kind of error that says how to fix it.

A model is named by a hub id (``facebook/dinov2-small``) or a local directory holding what
``save_pretrained`` / ``hf download`` wrote. Anything that stops a checkpoint from loading (no
network, a wrong id, a missing directory, no weights in it, the wrong architecture) becomes a
:class:`ModelLoadError` naming the config key and how to pre-download the weights.

Loaded models are kept per process (:func:`cached`), so a Ray worker that runs the same stage
for many tasks loads the weights once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from handclust.errors import ModelLoadError as ModelLoadError  # defined with every error in handclust/errors.py

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")

_LOADED: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()


def looks_local(model: str) -> bool:
    """A path (exists, or written like one), as opposed to a hub id such as ``org/name``."""
    return Path(model).expanduser().exists() or model.startswith(("/", ".", "~")) or model.count("/") > 1


def fix_hint(model: str, key: str, example_id: str) -> str:
    hub = example_id if looks_local(model) else model
    return (f"pre-download the weights on a machine with network access with `hf download {hub} --local-dir DIR` "
            f"(older clients: `huggingface-cli download {hub} --local-dir DIR`), copy DIR to this machine if needed, "
            f"and set {key}=DIR")


def load_error(model: str, key: str, example_id: str, problem: str) -> ModelLoadError:
    return ModelLoadError(f"{key}={model!r}: {problem}. To fix: {fix_hint(model, key, example_id)}")


def _local_dir(model: str) -> Path | None:
    return Path(model).expanduser() if looks_local(model) else None


def _call(fn: Callable[[], Any], model: str, key: str, example_id: str, what: str) -> Any:
    try:
        return fn()
    except ModelLoadError:
        raise
    except Exception as exc:  # OSError (no network, no such repo), ValueError (bad files), ...
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise load_error(model, key, example_id, f"cannot load its {what} ({type(exc).__name__}: {cause[:300]})") from exc


def check_checkpoint(model: str, revision: str | None, key: str, example_id: str, model_types: tuple[str, ...],
                     processor: str, tokenizer: bool = False) -> dict[str, Any]:
    """Cheap check that ``model`` will load: config, processor settings, tokenizer and a weights file.

    Downloads what is missing from the hub cache (the weights, too, when online). ``processor``
    is ``"image"`` or ``"video"``. Returns what the run records: model, revision, resolved commit.
    """
    from transformers import AutoConfig

    local = _local_dir(model)
    if local is not None and not local.is_dir():
        raise load_error(model, key, example_id, f"directory {local} does not exist")
    cfg = _call(lambda: AutoConfig.from_pretrained(model, revision=revision), model, key, example_id, "config (config.json)")
    if cfg.model_type not in model_types:
        raise load_error(model, key, example_id,
                         f"is a {cfg.model_type!r} checkpoint; this encoder needs one of {list(model_types)}")
    processor_settings(model, revision, key, example_id, processor)
    if tokenizer:
        load_tokenizer(model, revision, key, example_id)
    if local is not None:
        if not any((local / f).is_file() for f in WEIGHT_FILES):
            raise load_error(model, key, example_id, f"directory {local} holds no weights (none of {', '.join(WEIGHT_FILES)})")
    else:
        from transformers.utils import cached_file

        def find_weights() -> str:
            for name in WEIGHT_FILES:
                path = cached_file(model, name, revision=revision, _raise_exceptions_for_missing_entries=False)
                if path:
                    return str(path)
            raise FileNotFoundError(f"no weights file ({', '.join(WEIGHT_FILES)}) in the repository")

        _call(find_weights, model, key, example_id, "weights")
    return {"model": model, "revision": revision, "commit": getattr(cfg, "_commit_hash", None), "model_type": cfg.model_type}


def processor_settings(model: str, revision: str | None, key: str, example_id: str, kind: str) -> dict[str, Any]:
    """The checkpoint's own preprocessing settings (``preprocessor_config.json`` and friends) as a dict.

    Read as data, not through the processor classes: several of those need torchvision, which
    this project does not install.
    """
    if kind == "video":
        from transformers.video_processing_utils import BaseVideoProcessor

        fn: Callable[[], Any] = lambda: BaseVideoProcessor.get_video_processor_dict(model, revision=revision)[0]  # noqa: E731
        what = "video processor settings (video_preprocessor_config.json or preprocessor_config.json)"
    else:
        from transformers.image_processing_base import ImageProcessingMixin

        fn = lambda: ImageProcessingMixin.get_image_processor_dict(model, revision=revision)[0]  # noqa: E731
        what = "image processor settings (preprocessor_config.json)"
    return dict(_call(fn, model, key, example_id, what))


def load_tokenizer(model: str, revision: str | None, key: str, example_id: str) -> Any:
    from transformers import AutoTokenizer

    return _call(lambda: AutoTokenizer.from_pretrained(model, revision=revision), model, key, example_id, "tokenizer")


def load_model(cls: Any, model: str, revision: str | None, key: str, example_id: str, device: str, dtype: Any) -> Any:
    """``cls.from_pretrained`` on ``device`` in ``dtype``, eval mode, cached per process."""

    def load() -> Any:
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bars in run logs
        try:
            m = cls.from_pretrained(model, revision=revision, dtype=dtype)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        return m.to(device).eval()

    return cached((cls.__name__, model, revision, device, str(dtype)), lambda: _call(load, model, key, example_id, "weights"))


def cached(cache_key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    with _LOCK:
        if cache_key not in _LOADED:
            _LOADED[cache_key] = make()
        return _LOADED[cache_key]
