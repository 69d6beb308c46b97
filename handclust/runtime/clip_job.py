"""One clip's job, shared by both runners: its status record, decode checks, error policy and commit.

A clip goes through four steps, wherever they run::

    job = ClipJob.start(clip, fingerprint, previous)   # the status record (attempts, failures)
    for batch in job.decode(cfg):                       # frame batches; the decode checks
        ...per-frame stages...
    frames, segments = job.finish(frames, describer, segment_stages, hands)   # hand pass, segments
    job.commit(store, frames, segments)                 # frames/, segments/, then status/ ok|partial

The local runner (:class:`handclust.pipeline.LocalRunner`) calls them in one loop. The Ray runner
(:mod:`handclust.runtime.ray_runner`) decodes in a task, runs the frame stages in actor pools, and
finishes and commits each clip in a task of its own as soon as all its rows are through, carrying
the status record between them as JSON (:meth:`ClipJob.from_record`).

**Error policy** (:meth:`ClipJob.fail`). What one clip does wrong stays with that clip: any
``Exception`` while decoding or finishing a clip becomes ``status="error"`` with a one-line
message naming the file and the fix (a :class:`~handclust.io.video.VideoError` carries its own).
Two kinds stop the run instead: errors that would hit every clip alike (:data:`RUN_ERRORS`:
a bad config, a model or device that cannot load) and the outputs not being writable (an
``OSError`` from :meth:`commit`, which is outside the clip's ``try``); ``KeyboardInterrupt`` is
never caught. The status is committed last, after its frames and segments, each written under a
temporary name and renamed, so a status ``ok``/``partial`` always has complete tables beside it.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from handclust import schema
from handclust.config import ConfigError, RunConfig
from handclust.io import layout
from handclust.io.footage import Clip
from handclust.io.storage import OutputStore, clips_with_table, read_part_index
from handclust.io.video import REENCODE_HINT, VideoError, open_video
from handclust.modalities.encoders import DeviceError, ModelLoadError
from handclust.runtime.plan import apply_hand_tracks, apply_segment_stages, frame_batches, partial_message, source_rate, video_model_input
from handclust.stages import Batch

if TYPE_CHECKING:
    from handclust.io.sources import ClipSource

log = logging.getLogger(__name__)

DONE_STATES = ("ok", "partial")
# Errors that are not the clip's: they would fail every clip the same way, so the run stops.
RUN_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ModelLoadError, DeviceError)
# Decode state carried in the record between decode and commit, dropped from the committed status.
_IN_FLIGHT = ("truncated_at", "full_duration_s", "gap", "t_decode_start")


def status_rel(clip_id: str) -> str:
    return layout.status(clip_id)


def is_committed(store: OutputStore, clip: Clip, fingerprint: str, ledger: Ledger | None = None) -> bool:
    """Committed with this feature config: status ok/partial, and both tables there (resume trusts this).
    ``ledger``: the run's statuses and tables read in bulk (:class:`Ledger`), instead of four requests."""
    if ledger is not None:
        return ledger.committed(clip.clip_id, fingerprint)
    rel = status_rel(clip.clip_id)
    if not store.exists(rel):
        return False
    st = store.read_json(rel)
    tables = all(store.exists(f"{d}/{clip.clip_id}.parquet") or any(clip.clip_id in ids for ids in read_part_index(store, d).values())
                 for d in ("segments", "frames"))
    return bool(st.get("status") in DONE_STATES and st.get("fingerprint") == fingerprint and tables)


class Ledger:
    """Every clip's status record and which clips have their frames and segments, read in bulk: one
    listing of ``status/``, ``segments/`` and ``frames/`` each, the compaction indexes, and the status
    records in parallel (:meth:`OutputStore.read_json_many`). On an object store the per-clip checks
    (exists, read, exists, exists) were four sequential round trips per clip before the first decode."""

    def __init__(self, statuses: dict[str, dict[str, Any]], tables: set[str]):
        self.statuses = statuses
        self.tables = tables  # clip ids with rows in both segments/ and frames/

    @classmethod
    def read(cls, store: OutputStore, clip_ids: list[str] | None = None) -> Ledger:
        """The statuses of ``clip_ids`` (default: every status record there)."""
        have = {n[: -len(".json")] for n in store.list("status", ".json")}
        want = sorted(have if clip_ids is None else have.intersection(clip_ids))
        recs = store.read_json_many([status_rel(c) for c in want])
        return cls({c: recs[status_rel(c)] for c in want}, clips_with_table(store, "segments") & clips_with_table(store, "frames"))

    def status(self, clip_id: str) -> dict[str, Any]:
        return self.statuses.get(clip_id, {})

    def committed(self, clip_id: str, fingerprint: str) -> bool:
        st = self.status(clip_id)
        return bool(st.get("status") in DONE_STATES and st.get("fingerprint") == fingerprint and clip_id in self.tables)


def clip_error_message(path: str, what: str, exc: BaseException) -> str:
    """The one-line message of a clip that failed with ``exc`` while ``what`` (``decoding``, ``segmenting``)."""
    if isinstance(exc, VideoError):
        return str(exc)
    detail = (str(exc).strip().splitlines() or [""])[0][:300]
    return (f"{path}: {what} failed ({type(exc).__name__}: {detail}); {REENCODE_HINT}; if the re-encoded clip fails the "
            "same way, report it with this line")


def too_short(path: str, n_frames: int, sample_fps: float, duration_s: float) -> VideoError:
    """The error of a clip that gave fewer than the 2 sampled frames a clip needs (segmentation and
    flow need a pair), saying what length works and how to use shorter clips."""
    shortest = 2.0 / sample_fps
    if n_frames == 0 and duration_s <= 0:
        return VideoError(path, "decoded no frames (the file holds no readable video frames)")
    return VideoError(path, f"too short: {n_frames} sampled frame{'s' if n_frames != 1 else ''} ({duration_s:.2f} s at "
                      f"decode.sample_fps={sample_fps:g})",
                      f"a clip needs at least 2 sampled frames ({shortest:.2f} s at this rate); join it to the clip "
                      f"before it, or raise decode.sample_fps (e.g. decode.sample_fps={sample_fps * 2:g}) to use shorter clips")


class ClipJob:
    """One clip's status record and the steps that fill it (see the module docstring)."""

    def __init__(self, status: dict[str, Any]):
        self.status = status
        self.source: Any = None
        self.segments_schema: pa.Schema | None = None
        self.frames_schema: pa.Schema | None = None

    @classmethod
    def start(cls, clip: Clip, fingerprint: str, attempts: int = 0, failures: int = 0, run_id: str = "") -> ClipJob:
        """A new attempt at ``clip``: ``attempts`` / ``failures`` are those of the earlier ones."""
        return cls({"clip_id": clip.clip_id, "path": clip.path, "size_bytes": clip.size_bytes, "phase": clip.phase,
                    "attempts": attempts + 1, "failures": failures, "fingerprint": fingerprint, "status": "running",
                    **({"run_id": run_id} if run_id else {})})

    @classmethod
    def from_record(cls, record: str) -> ClipJob:
        """The job as :meth:`record` carried it to another process."""
        return cls(json.loads(record))

    def record(self) -> str:
        return json.dumps(self.status)

    @property
    def path(self) -> str:
        return str(self.status["path"])

    @property
    def clip_id(self) -> str:
        return str(self.status["clip_id"])

    # ------------------------------------------------------------------ decode

    def decode(self, cfg: RunConfig, clips: ClipSource | None = None) -> Iterator[Batch]:
        """Open the clip and yield its frame batches (:func:`handclust.runtime.plan.frame_batches`).

        With ``decode.prefetch_chunks`` > 0 a thread decodes ahead into a queue of that many
        chunks, so decoding overlaps the frame stages that consume the batches (PyAV, decord and
        OpenCV release the GIL while they work). After the last batch the record holds how the
        clip decoded (backend, duration decoded, truncation); fewer than 2 frames is a
        :class:`~handclust.io.video.VideoError`. ``clips``: what opens the clip
        (:class:`~handclust.io.sources.ClipSource`; default: :func:`~handclust.io.video.open_video`).
        """
        d = cfg.decode
        self.status["t_decode_start"] = time.time()
        self.source = source = (clips.open if clips is not None else open_video)(self.path, d.sample_fps, d.width, d.chunk_frames, d.backend,
                                          video_model_input(cfg), d.hwaccel)
        self.status.update(duration_s=source.info.duration_s, source_fps=source.info.source_fps,
                           width=source.info.width, height=source.info.height, backend=source.backend)
        clip = Clip(self.clip_id, self.path, int(self.status["size_bytes"]), self.status.get("phase"))
        batches = frame_batches(clip, cfg, source)
        n = 0
        for batch in _prefetched(batches, d.prefetch_chunks) if d.prefetch_chunks > 0 else batches:
            self.status.setdefault("frame_size", list(batch["frame"].shape[1:3]))
            n += len(batch["t"])
            yield batch
        self.status.update(backend=source.backend, backend_reason=getattr(source, "why", None), n_frames=n)
        self.status["duration_s"] = max(source.decoded_s, 0.0) or source.info.duration_s
        if n < 2:
            raise too_short(self.path, n, d.sample_fps, float(self.status.get("duration_s") or 0.0))
        if source.truncated_at is not None:
            self.status.update(truncated_at=source.truncated_at, full_duration_s=source.info.duration_s, gap=source.gap)

    # ------------------------------------------------------------------ finish, commit, fail

    def finish(self, frames: Batch, describer: Any, segment_stages: list[Any] | tuple[Any, ...] = (),
               hands: Any = None) -> tuple[Batch, Batch]:
        """The per-clip steps after the frame stages: held scene vectors, hand pass, segments and their descriptors,
        source rate. ``frames``: the clip's feature rows in ``frame_idx`` order."""
        from handclust.modalities.features.scene import hold_scene_embedding

        frames = hold_scene_embedding(frames)  # rows the scene encoder skipped (scene.fps) hold the last vector
        frames = apply_hand_tracks(hands, frames, self.status)
        segments = apply_segment_stages(list(segment_stages), describer(frames), self.path)
        self.status.update(source_rate(frames, segments, describer.fps, self.path))
        # The segments and frames schemas of the registry the describer was made with (on the driver), so a
        # Ray worker writes the columns of modalities registered there.
        self.segments_schema = describer.schema
        self.frames_schema = getattr(describer, "frames_schema", None)
        return frames, segments

    def begin(self, store: OutputStore) -> None:
        """Record the attempt before decoding (``status="running"``): a worker that dies with the
        clip leaves this behind, which the Ray runner counts against the clip."""
        self.status["started_at"] = time.time()
        store.write_json(status_rel(self.clip_id), self._public())
        # Tables of an earlier attempt (another feature config) must not outlive this one: a status
        # that is not ok/partial never has tables beside it, so globs agree with clips.parquet.
        for rel in (layout.frames(self.clip_id), layout.segments(self.clip_id)):
            store.delete(rel)

    def commit(self, store: OutputStore, frames: Batch, segments: Batch) -> dict[str, Any]:
        """Write the clip's frames and segments, then its status ``ok`` (or ``partial``): the clip is done.

        An ``OSError`` here (disk full, folder read-only) is the run's, not the clip's: it propagates.
        """
        store.write_table(layout.frames(self.clip_id), schema.table(frames, self.frames_schema or schema.FRAMES))
        store.write_table(layout.segments(self.clip_id), schema.table(segments, self.segments_schema or schema.SEGMENTS))
        st = self.status
        t0 = st.get("t_decode_start") or time.time()
        st.update(status="ok", error=None, n_frames=int(len(frames["t"])), n_segments=int(len(segments["segment_id"])),
                  seconds=time.time() - t0, committed_at=time.time())
        if st.get("truncated_at") is not None:
            st.update(status="partial", error=partial_message(self.path, st["truncated_at"], st.get("full_duration_s")
                                                              or st.get("duration_s") or 0.0, st.get("gap")))
            log.warning(st["error"])
        store.write_json(status_rel(self.clip_id), self._public())
        return self._public()

    def fail(self, store: OutputStore, exc: Exception, what: str) -> dict[str, Any]:
        """The error policy: record ``exc`` as this clip's error (one line naming the file and the fix)
        and return the status, or re-raise it when it is the run's (:data:`RUN_ERRORS`)."""
        if isinstance(exc, RUN_ERRORS):
            raise exc
        message = clip_error_message(self.path, what, exc)
        log.warning("skipping %s", message)
        self.status.update(status="error", error=message, n_frames=0, n_segments=0,
                           failures=int(self.status.get("failures", 0)) + 1, committed_at=time.time())
        store.write_json(status_rel(self.clip_id), self._public())
        return self._public()

    def _public(self) -> dict[str, Any]:
        return {k: v for k, v in self.status.items() if k not in _IN_FLIGHT}


_END = object()


def _prefetched(batches: Iterator[Batch], depth: int) -> Iterator[Batch]:
    """``batches`` produced by a thread up to ``depth`` ahead of the consumer; its exception re-raised here."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the consumer stopped early

    def produce() -> None:
        try:
            for b in batches:
                if not put(b):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it as its own
            put(exc)

    t = threading.Thread(target=produce, name="handclust-decode", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join(timeout=5)
