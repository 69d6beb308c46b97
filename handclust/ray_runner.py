"""The Ray runner: the same stages as :class:`~handclust.pipeline.LocalRunner`, as a Ray Data pipeline.

Over 500 lines on purpose: the decode tasks, actor pools, clip writer, wave loop, Ray-death watch
and the failure accounting share one set of Ray conventions and are only correct together; split
them when the clip job shared with the local runner (issue 11) takes the writer out of here.

Clips go in waves of ``ray.clips_per_wave`` (default: 2 per clip that can decode at once), one
pipeline per wave::

    clips of one wave (from_items, one block per clip)
      -> decode: CPU tasks, one clip each, yielding chunk batches whose rows carry prev_frame
      -> per-frame stages: one map_batches actor pool each (stage.resources -> num_cpus/num_gpus/batch_size)
      -> groupby("clip_id").map_groups: SegmentDescriber, then frames/, segments/, status/ written
         through OutputStore exactly as the local runner writes them

Each clip is committed (frames and segments parts, then its status ``ok``/``partial``) as soon as
its group is written, and a wave ends only when all its clips are: the object store holds at most
one wave's feature rows (pixels never outlive the last frame stage), whatever the corpus size, and a
run killed at any point keeps every clip committed before, which a rerun skips.

Outputs, schemas and resume are the local runner's, so either runner can resume the other's run
and everything downstream (:func:`handclust.activities.build_activities`) is unchanged.

Failures never stop the run for the other clips: a clip that cannot be decoded gets a status
record with ``status="error"``. Each decode attempt is recorded before decoding starts
(``status="running"`` with the run's ``run_id``). Only a clip's own failures count against it
(``failures``): an error while decoding or segmenting it, or its decode worker dying (found when
Ray retries the task and sees the clip still ``running`` in the same run, or when the run ends with
the clip unfinished). A clip left ``running`` by an earlier run that was interrupted (Ctrl-C, the
driver killed) is not counted. Ray retries a decode task lost with its worker at most
``ray.max_task_retries`` times; after ``ray.max_attempts`` failures a clip is ``quarantined`` and
later runs skip it (delete its ``status/<clip_id>.json`` to try it again). When Ray itself dies
mid-run (:class:`RayWatch` sees the GCS or raylet of the instance the run started exit, or Ray
raises), the clips in flight become ``status="interrupted"``, not counted against them, and the run
ends with :class:`~handclust.result.RunnerError`; a rerun processes them again. Crashed stage actors are
Ray's to restart (``ray.max_restarts`` / ``ray.max_task_retries``); ids are content-derived, so a
retried batch writes the same rows.

This module imports ray at the top: import it only where the Ray runner is used.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray

from handclust import schema
from handclust.config import ConfigError, RunConfig
from handclust.descriptors import SegmentDescriber
from handclust.encoders import segment_stages
from handclust.footage import Clip
from handclust.plan import (
    PIXEL_COLUMNS,
    apply_hand_tracks,
    apply_segment_stages,
    feature_fingerprint,
    frame_batches,
    frame_stages,
    hand_tracks,
    partial_message,
    source_rate,
)
from handclust.progress import Progress
from handclust.ray_connect import connect
from handclust.result import RunnerError
from handclust.stages import Batch, limit_threads
from handclust.storage import OutputStore
from handclust.video import VideoError, open_video

log = logging.getLogger(__name__)


class _HandledBlockErrors(logging.Filter):
    """Ray Data logs a dropped block at ERROR; here that is a clip whose worker died, handled and
    recorded in its status (``max_errored_blocks``), so it is a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and "Ignoring this exception" in record.getMessage():
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("ray.data._internal.execution.streaming_executor_state").addFilter(_HandledBlockErrors())

# Rows of a clip's last chunk carry the clip's status so far (JSON); every other row carries "".
INFO_COLUMN = "clip_info"
DONE_STATES = ("ok", "partial")


def _status_rel(clip_id: str) -> str:
    return f"status/{clip_id}.json"


def _died_message(path: str, failures: int) -> str:
    return (f"{path}: the worker processing it died ({failures} failed attempt(s)); the clip may crash the decoder: "
            "re-encode it, or remove it from the input")


def decode_clips(batch: Batch, cfg: RunConfig, out: str, fingerprint: str, run_id: str = "") -> Iterator[Batch]:
    """Ray Data UDF: clip records in, frame batches out (``(n, H, W, 3)`` frames + prev_frame).

    The attempt is recorded before decoding. A clip that cannot be read is written as an error
    status here and yields no rows. The last chunk is held back until decoding ends, so its rows
    can carry the clip's final decode state (duration decoded, truncation).
    """
    store = OutputStore(out)
    d = cfg.decode
    limit_threads(cfg.ray.decode_num_cpus)
    for raw in batch["clip"]:
        rec = json.loads(str(raw))
        clip = Clip(rec["clip_id"], rec["path"], int(rec["size_bytes"]), rec["phase"])
        attempts, failures = int(rec["attempts"]), int(rec.get("failures", 0))
        rel = _status_rel(clip.clip_id)
        on_disk = store.read_json(rel) if store.exists(rel) else {}
        if run_id and on_disk.get("run_id") == run_id and on_disk.get("status") == "running":
            # Ray is retrying this task: the worker of the previous attempt in this run died with this clip.
            attempts, failures = int(on_disk.get("attempts", attempts)), int(on_disk.get("failures", failures)) + 1
        status: dict[str, Any] = {
            "clip_id": clip.clip_id, "path": clip.path, "size_bytes": clip.size_bytes, "phase": clip.phase,
            "attempts": attempts + 1, "failures": failures, "fingerprint": fingerprint, "status": "running", "run_id": run_id,
        }
        if failures >= cfg.ray.max_attempts:
            status.update(attempts=attempts, status="error", error=_died_message(clip.path, failures), n_frames=0, n_segments=0)
            log.warning("skipping %s", status["error"])
            store.write_json(rel, status)
            continue
        store.write_json(rel, status)
        t0 = time.time()
        pending: Batch | None = None
        n_frames = 0
        try:
            source = open_video(clip.path, d.sample_fps, d.width, d.chunk_frames, d.backend)
            status.update(duration_s=source.info.duration_s, source_fps=source.info.source_fps,
                          width=source.info.width, height=source.info.height, backend=source.backend)
            for chunk in frame_batches(clip, cfg, source):
                if pending is not None:
                    yield pending
                n_frames += len(chunk["t"])
                status.setdefault("frame_size", list(chunk["frame"].shape[1:3]))
                pending = {**chunk, INFO_COLUMN: np.full(len(chunk["t"]), "", dtype=object)}
            if pending is None or n_frames < 2:
                raise VideoError(clip.path, "decoded fewer than 2 frames", "the clip is too short or unreadable; re-encode or remove it")
        except Exception as exc:  # one bad clip must not stop the others
            message = str(exc) if isinstance(exc, VideoError) else f"{clip.path}: {type(exc).__name__}: {exc}"
            log.warning("skipping %s", message)
            status.update(status="error", error=message, n_frames=0, n_segments=0, failures=failures + 1)
            store.write_json(_status_rel(clip.clip_id), status)
            continue
        status.update(backend=source.backend, backend_reason=getattr(source, "why", None))
        status["duration_s"] = max(source.decoded_s, 0.0) or source.info.duration_s
        if source.truncated_at is not None:
            status["truncated_at"] = source.truncated_at
            status["full_duration_s"] = source.info.duration_s
            status["gap"] = source.gap
        status["t_decode_start"] = t0
        pending[INFO_COLUMN] = np.full(len(pending["t"]), json.dumps(status), dtype=object)
        yield pending


class StageActor:
    """Ray Data callable class around one stage: ``setup()`` once per actor, then ``__call__`` per batch."""

    def __init__(self, stage: Any, drop: tuple[str, ...] = (), threads: float | None = None):
        limit_threads(threads)  # before setup(): libraries loaded there start with the limit
        self.stage = stage
        self.drop = drop
        self.stage.setup()

    def __call__(self, batch: Batch) -> Batch:
        out = self.stage(batch)
        return {k: v for k, v in out.items() if k not in self.drop}


class ClipWriter:
    """Ray Data callable class for ``map_groups``: one clip's frame rows in, its tables written.

    Writes ``frames/<clip_id>.parquet``, ``segments/<clip_id>.parquet`` and the final
    ``status/<clip_id>.json`` exactly as the local runner does; returns one summary row.
    """

    def __init__(self, describer: SegmentDescriber, out: str, segment_stages: list[Any] | tuple[Any, ...] = (),
                 hands: Any = None):
        self.describer = describer
        self.describer.setup()
        self.hands = hands  # the per-clip hand pass (pipeline.hand_tracks); re-decodes around anchors
        if hands is not None:
            hands.setup()
        self.segment_stages = list(segment_stages)  # V-JEPA-2: weights cached per worker process
        for stage in self.segment_stages:
            stage.setup()
        self.out = out

    def __call__(self, frames: Batch) -> Batch:
        store = OutputStore(self.out)
        clip_id = str(frames["clip_id"][0])
        infos = [str(s) for s in frames[INFO_COLUMN] if s]
        if not infos:
            # The decoder gave up on this clip after some chunks and wrote its error status itself.
            return {"clip_id": np.array([clip_id], object), "status": np.array(["error"], object)}
        status: dict[str, Any] = json.loads(infos[0])
        order = np.argsort(frames["frame_idx"], kind="stable")
        frames = {k: np.asarray(v)[order] for k, v in frames.items() if k != INFO_COLUMN}
        try:
            frames = apply_hand_tracks(self.hands, frames, status)
            segments = apply_segment_stages(self.segment_stages, self.describer(frames), status["path"])
            status.update(source_rate(frames, segments, self.describer.fps, status["path"]))
        except Exception as exc:  # one bad clip must not stop the others
            message = f"{status['path']}: segmenting failed: {type(exc).__name__}: {exc}"
            log.warning("skipping %s", message)
            status.pop("t_decode_start", None)
            status.update(status="error", error=message, n_frames=0, n_segments=0, failures=int(status.get("failures", 0)) + 1)
            store.write_json(_status_rel(clip_id), status)
            return {"clip_id": np.array([clip_id], object), "status": np.array(["error"], object)}
        store.write_table(f"frames/{clip_id}.parquet", schema.table(frames, schema.FRAMES))
        store.write_table(f"segments/{clip_id}.parquet", schema.table(segments, schema.SEGMENTS))
        t0 = status.pop("t_decode_start", time.time())
        truncated_at = status.pop("truncated_at", None)
        full = status.pop("full_duration_s", status.get("duration_s"))
        gap = status.pop("gap", None)
        status.update(status="ok", error=None, n_frames=int(len(frames["t"])), n_segments=int(len(segments["segment_id"])),
                      seconds=time.time() - t0)
        if truncated_at is not None:
            status.update(status="partial", error=partial_message(status["path"], truncated_at, full, gap))
            log.warning(status["error"])
        store.write_json(_status_rel(clip_id), status)
        return {"clip_id": np.array([clip_id], object), "status": np.array([status["status"]], object)}


def _pool(size: int | tuple[int, int]) -> Any:
    from ray.data import ActorPoolStrategy

    return ActorPoolStrategy(min_size=size[0], max_size=size[1]) if isinstance(size, tuple) else ActorPoolStrategy(size=size)


def _retry_args(max_restarts: int, max_task_retries: int) -> dict[str, int]:
    # Ray 2.60 still takes these as plain remote args (it warns they move to named parameters).
    import warnings

    warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=Warning)
    return {"max_restarts": max_restarts, "max_task_retries": max_task_retries}


def write_clip(frames: Batch, describer: SegmentDescriber, out: str, segment_stages: list[Any] | tuple[Any, ...] = (),
               hands: Any = None, threads: float | None = None) -> Batch:
    """``map_groups`` UDF: :class:`ClipWriter` as a task (the describer's setup is cheap)."""
    limit_threads(threads)
    return ClipWriter(describer, out, segment_stages, hands)(frames)


class RayWatch:
    """Watches the GCS and raylet of the local Ray instance this process started.

    When one of them dies, Ray's core worker would end the driver after its GCS reconnect timeout
    (60 s) with a C++ log line and no record of the run. Instead ``died`` says which daemon died,
    and the main thread is interrupted at once so the run can record the clips it was processing
    and end with one line.
    """

    def __init__(self, poll_s: float = 0.2):
        import threading

        from ray._private import worker

        node = worker._global_node
        self.daemons = [(kind, info.process) for kind in ("gcs_server", "raylet")
                        for info in (node.all_processes.get(kind, []) if node is not None else [])]
        self.died: str | None = None
        self._stop = threading.Event()
        self._poll_s = poll_s
        threading.Thread(target=self._watch, name="handclust-ray-watch", daemon=True).start()

    def _watch(self) -> None:
        import _thread

        while not self._stop.wait(self._poll_s):
            for kind, process in self.daemons:
                if process.poll() is not None and not self._stop.is_set():
                    self.died = f"its {kind} process {process.pid} exited with code {process.returncode}"
                    _thread.interrupt_main()
                    return

    def stop(self) -> None:
        self._stop.set()


class RayRunner:
    """Runs the stages as Ray Data pipelines over the clips to do, one per wave of clips.

    Joins ``ray.address`` (or ``RAY_ADDRESS``) or an already initialised Ray; otherwise starts a
    local instance sized by ``ray.num_cpus`` / ``ray.object_store_memory_mb`` and shuts it down
    after the run. ``stages`` replaces the per-frame stages (default: :func:`frame_stages`).
    """

    def __init__(self, cfg: RunConfig, store: OutputStore, progress: Progress, stages: list[Any] | None = None):
        self.cfg = cfg
        self.store = store
        self.progress = progress
        self.fingerprint = feature_fingerprint(cfg)
        self.stages = stages if stages is not None else frame_stages(cfg)
        self.describer = SegmentDescriber(cfg.segment, cfg.descriptor, cfg.decode.sample_fps)
        self.segment_stages = segment_stages(cfg)
        self.hands = hand_tracks(cfg)
        self.quarantined: list[dict[str, Any]] = []
        self.cluster: str | None = None  # which Ray cluster the run used, in words (run.json)
        self.resources: dict[str, float] | None = None  # its CPUs, GPUs and nodes (run.json's cost)

    # ------------------------------------------------------------------ resume / quarantine

    def _status(self, clip: Clip) -> dict[str, Any]:
        rel = _status_rel(clip.clip_id)
        return self.store.read_json(rel) if self.store.exists(rel) else {}

    def is_done(self, clip: Clip) -> bool:
        """Finished with this feature config, or quarantined (a bad file stays bad)."""
        st = self._status(clip)
        if st.get("status") == "quarantined":
            return True
        return bool(st.get("status") in DONE_STATES and st.get("fingerprint") == self.fingerprint
                    and self.store.exists(f"segments/{clip.clip_id}.parquet")
                    and self.store.exists(f"frames/{clip.clip_id}.parquet"))

    @staticmethod
    def _failures(st: dict[str, Any]) -> int:
        # Status records written before ``failures`` existed counted every attempt of a failed clip.
        if "failures" in st:
            return int(st["failures"])
        return int(st.get("attempts", 0)) if st.get("status") == "error" else 0

    def _quarantine(self, st: dict[str, Any]) -> None:
        st["status"] = "quarantined"
        self.store.write_json(_status_rel(st["clip_id"]), st)
        self.quarantined.append({"path": st.get("path"), "error": st.get("error"), "attempts": st.get("attempts")})
        log.warning("quarantined after %s failed attempts (delete %s to try it again): %s", self._failures(st),
                    self.store.uri_of(_status_rel(st["clip_id"])), st.get("error"))

    # ------------------------------------------------------------------ run

    def process_clip(self, clip: Clip) -> dict[str, Any]:
        return self.process_clips([clip])[0]

    def process_clips(self, clips: list[Clip]) -> list[dict[str, Any]]:
        """Process ``clips`` (those not done) in one Ray Data pipeline; returns their status records.

        Raises :class:`~handclust.result.RunnerError` when Ray cannot start or fails mid-run; clips
        it was processing are then recorded as errors that do not count against them.
        """
        import uuid

        max_attempts = self.cfg.ray.max_attempts
        run_id = uuid.uuid4().hex[:12]
        items = []
        for clip in clips:
            st = self._status(clip)
            same = st.get("fingerprint") == self.fingerprint
            attempts = int(st.get("attempts", 0)) if same else 0
            failures = self._failures(st) if same else 0
            if st.get("status") in ("error", "running") and failures >= max_attempts:
                self._quarantine(st)  # failed max_attempts times already
                continue
            items.append({"clip": json.dumps({"clip_id": clip.clip_id, "path": clip.path, "size_bytes": clip.size_bytes,
                                              "phase": clip.phase, "attempts": attempts, "failures": failures})})
        if items:
            started = self._connect()
            # Ray's core worker ends this process (after 60 s, with no word of ours) when the GCS of its
            # instance dies: watch the daemons of an instance this run started and stop first.
            watch = RayWatch() if started and not (self.cfg.ray.address or os.environ.get("RAY_ADDRESS")) else None
            try:
                self._run_waves(items, run_id)
            except ConfigError:
                raise
            except (KeyboardInterrupt, Exception) as exc:
                died = watch.died if watch is not None else None
                if isinstance(exc, KeyboardInterrupt) and died is None:
                    raise  # the user's Ctrl-C: clips left running are simply processed again next time
                # Ray itself failed (raylet or GCS died): not these clips' fault.
                cause = died or f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
                message = (f"Ray failed mid-run ({cause}); the clips it was processing are recorded as interrupted, "
                           "which does not count against them: rerun the same command to resume")
                for clip in clips:
                    st = self._status(clip)
                    if st.get("status") == "running" and st.get("run_id") == run_id:
                        st.update(status="interrupted", error=f"{clip.path}: {message}", n_frames=0, n_segments=0)
                        self.store.write_json(_status_rel(clip.clip_id), st)
                raise RunnerError(message) from None
            finally:
                if watch is not None:
                    watch.stop()
                if started and (watch is None or watch.died is None):
                    ray.shutdown()
        todo = {json.loads(it["clip"])["clip_id"] for it in items}
        return [self._settle(clip, run_id, clip.clip_id in todo) for clip in clips]

    def _settle(self, clip: Clip, run_id: str, todo: bool) -> dict[str, Any]:
        """The clip's final status after its wave (or the run) ended normally: a clip this run was to
        do but did not finish is recorded as an error (its worker died past Ray's retries); quarantines
        a clip that failed ``ray.max_attempts`` times. Settling a clip twice changes nothing."""
        st = self._status(clip)
        if todo and (st.get("run_id") != run_id or st.get("status") == "running"):
            # The run ended normally without this clip (it may have died before recording itself):
            # its worker died past Ray's retries.
            st = {"clip_id": clip.clip_id, "path": clip.path, "size_bytes": clip.size_bytes, "phase": clip.phase,
                  "attempts": int(st.get("attempts", 0)), "fingerprint": self.fingerprint, "run_id": run_id,
                  **{k: v for k, v in st.items() if k in ("attempts", "failures")}}
            failures = self._failures(st) + 1
            st.update(status="error", error=_died_message(clip.path, failures), n_frames=0, n_segments=0, failures=failures)
            self.store.write_json(_status_rel(clip.clip_id), st)
        if st.get("status") == "error" and self._failures(st) >= self.cfg.ray.max_attempts:
            self._quarantine(st)
        return st

    def _connect(self) -> bool:
        started, self.cluster = connect(self.cfg.ray, log_to_driver=self.progress.enabled)
        log.info("ray: using %s", self.cluster)
        self.progress.say(f"ray: using {self.cluster}")
        return started

    def _min_actors(self, name: str) -> int:
        size = self.cfg.ray.concurrency.get(name, 1)
        return size[0] if isinstance(size, tuple) else size

    def _actor_cpus(self, stage: Any) -> float:
        """CPUs per actor of ``stage``: its own ask, capped so the smallest pools leave a CPU to decode.

        Actor pools hold their CPUs for the whole run; on a small instance (a laptop, a test)
        pools asking for every CPU would leave decode tasks waiting forever.
        """
        rc = self.cfg.ray
        if rc.actor_num_cpus is not None:
            return rc.actor_num_cpus
        want = float(stage.resources.num_cpus)
        total = float(ray.cluster_resources().get("CPU", 0.0))
        held = sum(float(s.resources.num_cpus) * self._min_actors(s.name) for s in self.stages)
        if total > 0 and held + rc.decode_num_cpus > total:
            want *= max(total - rc.decode_num_cpus, 0.1 * held) / held
            log.info("stage %s: %.2f CPUs per actor so that decoding fits on %.0f CPUs", stage.name, want, total)
        return want

    def _check_fit(self) -> None:
        """Stop, instead of waiting forever, when the actor pools leave no room for one decode task.

        On a cluster that autoscales more nodes may come, so there it is only a warning.
        """
        rc = self.cfg.ray
        total = float(ray.cluster_resources().get("CPU", 0.0))
        held = {s.name: self._actor_cpus(s) * self._min_actors(s.name) for s in self.stages}
        need = sum(held.values()) + rc.decode_num_cpus
        if total <= 0 or need <= total + 1e-9:
            return
        msg = (f"the stage actors hold {sum(held.values()):g} CPUs ({', '.join(f'{k} {v:g}' for k, v in held.items())}) and a decode "
               f"task needs ray.decode_num_cpus={rc.decode_num_cpus:g}: {need:g} CPUs, more than the {total:g} this Ray cluster has, "
               "so no clip could ever be decoded. Lower ray.actor_num_cpus or ray.decode_num_cpus, or leave ray.actor_num_cpus "
               "unset (actors are then sized to fit)")
        if rc.address or os.environ.get("RAY_ADDRESS"):
            log.warning("%s; waiting for the autoscaler to add nodes", msg)
        else:
            raise ConfigError(msg)

    def wave_size(self) -> int:
        """Clips per wave: ``ray.clips_per_wave``, else 2 per clip that can decode at once (at least 8)."""
        rc = self.cfg.ray
        if rc.clips_per_wave:
            return rc.clips_per_wave
        slots = rc.decode_concurrency or int(float(ray.cluster_resources().get("CPU", 0.0)) // rc.decode_num_cpus)
        return max(8, 2 * slots)

    def _run_waves(self, items: list[dict[str, str]], run_id: str = "") -> None:
        """Process ``items`` in waves of :meth:`wave_size` clips, one Ray Data pipeline each.

        A wave's clips are written and committed (frames, segments, status ``ok``/``partial``) by its
        pipeline before the next wave starts: the object store never holds more than one wave's
        feature rows, and a run killed mid-way keeps every clip of the waves before.
        """
        self._check_fit()
        res = ray.cluster_resources()
        # What the run held (run.json's measured cost): the cluster's CPUs / GPUs and its live nodes.
        self.resources = {"CPU": float(res.get("CPU", 0)), "GPU": float(res.get("GPU", 0)),
                          "nodes": float(sum(1 for n in ray.nodes() if n.get("Alive")))}
        self.progress.say(f"ray: {len(items)} clips on {res.get('CPU', 0):.0f} CPUs, {res.get('GPU', 0):.0f} GPUs, "
                          f"in waves of up to {self.wave_size()} clips")
        counts: dict[str, int] = {}
        done, w, t0 = 0, 0, time.time()
        while done < len(items):
            # Sized again for every wave: an autoscaling cluster that grew gets bigger waves.
            wave = items[done:done + self.wave_size()]
            w += 1
            self.progress.say(f"ray: wave {w}: clips {done + 1}-{done + len(wave)} of {len(items)}")
            self._run(wave, run_id)
            for item in wave:
                rec = json.loads(item["clip"])
                clip = Clip(rec["clip_id"], rec["path"], int(rec["size_bytes"]), rec["phase"])
                state = str(self._settle(clip, run_id, True).get("status"))
                counts[state] = counts.get(state, 0) + 1
                done += 1
                self.progress.say(f"ray: [{done}/{len(items)}] {state}: {rec['path']}")
            self.progress.say(f"ray: wave {w} committed: {done}/{len(items)} clips "
                              f"({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}) in {time.time() - t0:.0f} s")

    def _run(self, items: list[dict[str, str]], run_id: str = "") -> None:
        """One wave: ``items`` through one Ray Data pipeline, each clip's outputs and status written."""
        from ray.data import DataContext, TaskPoolStrategy

        rc = self.cfg.ray
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = self.progress.enabled
        # An actor that dies while loading its model (GPU OOM, preempted node) is replaced, as often
        # as a crashed one is restarted, instead of failing the whole run at once.
        ctx.max_consecutive_actor_init_deaths = rc.max_restarts
        # A clip whose decode task died past its retries loses only its own rows; its status says why.
        ctx.max_errored_blocks = -1
        out = self.store.uri if "://" in self.store.uri else self.store.root
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(decode_clips, batch_size=1, batch_format="numpy", num_cpus=rc.decode_num_cpus,
                            compute=TaskPoolStrategy(size=rc.decode_concurrency),
                            # Bounded: Ray Data's default retries a task lost with its worker forever.
                            max_retries=rc.max_task_retries,
                            fn_kwargs={"cfg": self.cfg, "out": out, "fingerprint": self.fingerprint, "run_id": run_id})
        for i, stage in enumerate(self.stages):
            last = i == len(self.stages) - 1
            cpus = self._actor_cpus(stage)
            ds = ds.map_batches(
                StageActor, fn_constructor_kwargs={"stage": stage, "drop": PIXEL_COLUMNS if last else (), "threads": cpus},
                batch_size=stage.resources.batch_size, batch_format="numpy",
                compute=_pool(rc.concurrency.get(stage.name, 1)),
                num_cpus=cpus, num_gpus=stage.resources.num_gpus or None,
                # Bounded, unlike Ray Data's default (-1), so a batch that always kills its actor ends.
                **_retry_args(rc.max_restarts, rc.max_task_retries))
        if not self.stages:
            ds = ds.drop_columns(list(PIXEL_COLUMNS))
        # The shuffle cannot start before every frame row exists anyway; materialising the
        # pixel-free feature rows first lets a run whose clips all failed to decode end here
        # (Ray Data's hash shuffle fails on an empty input).
        ds = ds.materialize()
        if ds.count() == 0:
            self.progress.say("ray: no clip could be decoded")
            return
        # A clip that could not be decoded leaves an empty, schema-less block; Ray Data's hash
        # shuffle fails concatenating it with real ones, so only blocks with rows go on.
        ds = ray.data.from_arrow_refs([ref for bundle in ds.iter_internal_ref_bundles()
                                       for ref, meta in zip(bundle.block_refs, bundle.metadata) if meta.num_rows])
        # Tasks, not an actor pool: an idle pool would hold CPUs while the stages upstream still run.
        ds = ds.groupby("clip_id", num_partitions=min(len(items), 200)).map_groups(
            write_clip, fn_kwargs={"describer": self.describer, "out": out, "segment_stages": self.segment_stages,
                                   "hands": self.hands, "threads": rc.decode_num_cpus},
            batch_format="numpy", num_cpus=rc.decode_num_cpus,
            num_gpus=max((s.resources.num_gpus for s in self.segment_stages), default=0.0) or None)
        ds.take_all()
