"""The clip runner of each executor: :class:`~handclust.runtime.local_runner.LocalRunner` in this
process, :class:`~handclust.runtime.ray_runner.RayRunner` (the streaming Ray Data pipeline) on Ray.

Apart from :mod:`handclust.runtime.executor` itself, the one place that tells the two executors
apart; it sits above the executor and both runners (each runner imports the executor, so the
executor cannot import them).
"""

from __future__ import annotations

from typing import Any, Protocol

from handclust.config import RunConfig
from handclust.io.footage import Clip
from handclust.io.sources import ClipSource
from handclust.io.storage import OutputStore
from handclust.progress import Progress
from handclust.runtime.clip_job import Ledger
from handclust.runtime.executor import Executor, RayExecutor
from handclust.runtime.local_runner import LocalRunner


class ClipRunner(Protocol):
    """What a clip runner offers the pipeline (both runners give the same tables)."""

    fingerprint: str

    def is_done(self, clip: Clip, ledger: Ledger | None = None) -> bool: ...

    def process_clips(self, clips: list[Clip], ledger: Ledger | None = None) -> list[dict[str, Any]]: ...


def clip_runner(executor: Executor, cfg: RunConfig, store: OutputStore, progress: Progress,
                video_source: ClipSource | None = None) -> ClipRunner:
    """The runner that processes the clips on ``executor`` (on Ray: through its one connection)."""
    if isinstance(executor, RayExecutor):
        from handclust.runtime.ray_runner import RayRunner  # imports ray: only when asked for

        return RayRunner(cfg, store, progress, executor=executor, video_source=video_source)
    return LocalRunner(cfg, store, progress, video_source=video_source)
