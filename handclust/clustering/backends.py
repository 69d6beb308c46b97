"""Which library clusters, lays out and searches: cuML / FAISS-GPU when asked for or found, CPU otherwise."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class BackendError(RuntimeError):
    pass


def gpu_available() -> bool:
    try:
        import cuml  # noqa: F401
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:
        return False


def resolve_backend(backend: str) -> str:
    if backend == "cpu":
        return "cpu"
    have = gpu_available()
    if backend == "gpu" and not have:
        raise BackendError("cluster.backend=gpu but cuML/CuPy or a CUDA device is missing; "
                           "install the [gpu] extra on a GPU machine or set cluster.backend=cpu")
    return "gpu" if have else "cpu"
