"""The local runner: the stages in this process, one clip at a time (the :class:`~handclust.runtime.executor.LocalExecutor`'s
clip runner; :class:`~handclust.runtime.ray_runner.RayRunner` is the Ray executor's and gives the same tables)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from handclust.config import RunConfig
from handclust.io.footage import Clip
from handclust.io.sources import ClipSource
from handclust.io.storage import OutputStore
from handclust.progress import Progress
from handclust.runtime.clip_job import ClipJob, Ledger, is_committed, status_rel
from handclust.runtime.plan import (
    PIXEL_COLUMNS,
    SegmentDescriber,
    concat_batches,
    feature_fingerprint,
    frame_stages,
    hand_tracks,
    segment_stages,
)
from handclust.stages import Batch


class LocalRunner:
    """Runs the stages in this process, one clip at a time. ``video_source`` opens the clips
    (:class:`~handclust.io.sources.ClipSource`; default: :func:`~handclust.io.video.open_video`)."""

    def __init__(self, cfg: RunConfig, store: OutputStore, progress: Progress, video_source: ClipSource | None = None):
        self.cfg = cfg
        self.store = store
        self.progress = progress
        self.video_source = video_source
        self.fingerprint = feature_fingerprint(cfg)
        self.stages = frame_stages(cfg)
        self.describer = SegmentDescriber(cfg.segment, cfg.descriptor, cfg.decode.sample_fps)
        self.segment_stages = segment_stages(cfg)
        self.hands = hand_tracks(cfg)
        self._ready = False

    def _setup(self) -> None:
        if not self._ready:
            for stage in [*self.stages, *self.segment_stages, *([self.hands] if self.hands else [])]:
                stage.setup()
            self.describer.setup()
            self._ready = True

    def is_done(self, clip: Clip, ledger: Ledger | None = None) -> bool:
        return is_committed(self.store, clip, self.fingerprint, ledger)

    def process_clips(self, clips: list[Clip], ledger: Ledger | None = None) -> list[dict[str, Any]]:
        """:meth:`process_clip` on each of ``clips`` in turn (a progress line each); their status records."""
        out = []
        for i, clip in enumerate(clips, 1):
            self.progress.say(f"[{i}/{len(clips)}] {clip.path}")
            out.append(self.process_clip(clip))
        return out

    def process_clip(self, clip: Clip) -> dict[str, Any]:
        """Decode, featurise, segment, describe and commit one clip (:class:`~handclust.runtime.clip_job.ClipJob`);
        returns its status record."""
        self._setup()
        rel = status_rel(clip.clip_id)
        previous = self.store.read_json(rel) if self.store.exists(rel) else {}
        job = ClipJob.start(clip, self.fingerprint, attempts=int(previous.get("attempts", 0)),
                            failures=int(previous.get("failures", 0)) if previous.get("fingerprint") == self.fingerprint else 0)
        job.begin(self.store)
        what = "decoding"
        try:
            bar = None
            parts: list[Batch] = []
            for batch in job.decode(self.cfg, self.video_source):
                if bar is None:
                    bar = self.progress.bar(total=round(job.source.info.duration_s, 1), desc=Path(clip.path).name[:32], unit="s")
                what = "computing frame features"
                for stage in self.stages:
                    batch = stage(batch)
                parts.append({k: v for k, v in batch.items() if k not in PIXEL_COLUMNS})
                bar.update(len(batch["t"]) / self.cfg.decode.sample_fps)
                what = "decoding"
            if bar is not None:
                bar.close()
            what = "segmenting"
            frames, segments = job.finish(concat_batches(parts), self.describer, self.segment_stages, self.hands)
        except Exception as exc:  # the error policy (clip_job): the clip's error, or re-raised as the run's
            return job.fail(self.store, exc, what)
        return job.commit(self.store, frames, segments)
