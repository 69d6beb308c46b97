"""Joining or starting Ray: :func:`connect`, called only by the run's
:class:`~handclust.runtime.executor.RayExecutor`, which the Ray runner, the clustering task, labelling
and the report's excerpts share (tests/test_executor.py keeps it so).

This module imports ray at the top: import it only where Ray is used.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ray

from handclust.config import RayConfig
from handclust.errors import RayStartError as RayStartError  # defined with every error in handclust/errors.py

log = logging.getLogger(__name__)


def connect(rc: RayConfig, log_to_driver: bool = False) -> tuple[bool, str]:
    """Initialise Ray unless it is: join ``ray.address`` / ``RAY_ADDRESS``, or start a private local
    instance sized by ``rc``. Returns whether this call connected (and the caller must
    ``ray.shutdown()``) and which cluster is used, in words.

    Without an address the instance is always a new local one (``address="local"``): a bare
    ``ray.init()`` would join whatever cluster the machine's last ``ray start`` left in Ray's
    pointer file, another user's cluster or a dead one (where it waits for its GCS forever).
    """
    if ray.is_initialized():
        return False, f"the Ray instance this process already joined ({ray.get_runtime_context().gcs_address})"
    address = rc.address or os.environ.get("RAY_ADDRESS")
    source = "ray.address" if rc.address else "RAY_ADDRESS"
    try:
        if address:
            log.info("ray: joining the cluster at %s (%s)", address, source)
            ray.init(address=address)
            return True, f"the cluster at {address} ({source})"
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": log_to_driver}
        if rc.num_cpus:
            kwargs["num_cpus"] = rc.num_cpus
        if rc.object_store_memory_mb:
            kwargs["object_store_memory"] = rc.object_store_memory_mb * 1024 * 1024
        ray.init(address="local", **kwargs)
    except Exception as exc:  # any start-up failure becomes one line for the user
        where = f"join the Ray cluster at {address} ({source})" if address else "start a local Ray instance"
        fix = (f"check that the cluster is up, or unset {source} to run on a local instance" if address
               else "check free memory and that RAY_TMPDIR (default /tmp) is writable with a short path, or use --set runner=local")
        raise RayStartError(f"could not {where}: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}; "
                            f"{fix}") from exc
    return True, "a new local Ray instance (set ray.address or RAY_ADDRESS to join a cluster)"
