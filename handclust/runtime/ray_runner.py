"""The Ray runner: the same stages as :class:`~handclust.pipeline.LocalRunner`, as a Ray Data pipeline.

Just over 500 lines on purpose: the decode tasks, actor pools, streaming commit, Ray-death watch
and failure accounting share one set of Ray conventions and are only correct together; what both
runners share (status record, decode checks, error policy, commit) is in handclust/runtime/clip_job.py.

All clips go through one streaming Ray Data pipeline (or waves of ``ray.clips_per_wave``, one
pipeline each)::

    clips (from_items, one block per clip)
      -> decode: CPU tasks, one clip each (a :class:`~handclust.runtime.clip_job.ClipJob`), yielding chunk
         batches whose rows carry prev_grey; the last chunk carries the job's record
      -> per-frame stages: one map_batches actor pool each (stage.resources -> num_cpus/num_gpus/batch_size)
      -> the driver streams the pixel-free feature rows out and, as soon as a clip has all of
         them, starts a write_clip task: ClipJob.finish (hand pass, segments, V-JEPA-2) and
         ClipJob.commit (frames/, segments/, then status/ ok|partial), as the local runner does

There is no barrier: each clip is committed while the others still stream, the driver holds only
the feature rows of clips in flight (pixels never outlive the last frame stage), and a run killed
at any point keeps every clip committed before, which a rerun skips.

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
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import ray

from handclust.config import ConfigError, RunConfig
from handclust.errors import RunnerError
from handclust.io.footage import Clip
from handclust.io.sources import ClipSource
from handclust.io.storage import OutputStore
from handclust.modalities import registry as modalities
from handclust.progress import Progress
from handclust.runtime.clip_job import RUN_ERRORS, ClipJob, Ledger, is_committed, status_rel
from handclust.runtime.executor import RayExecutor
from handclust.runtime.plan import (
    PIXEL_COLUMNS,
    SegmentDescriber,
    concat_batches,
    feature_fingerprint,
    frame_stages,
    hand_tracks,
    segment_stages,
)
from handclust.stages import Batch, limit_threads

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


def _died_message(path: str, failures: int) -> str:
    return (f"{path}: the worker processing it died ({failures} failed attempt(s)); the clip may crash the decoder: "
            "re-encode it, or remove it from the input")


def decode_clips(batch: Batch, cfg: RunConfig, out: str, fingerprint: str, run_id: str = "",
                 video_source: ClipSource | None = None) -> Iterator[Batch]:
    """Ray Data UDF: clip records in, frame batches out (``(n, H, W, 3)`` frames + prev_grey).

    Each clip is a :class:`~handclust.runtime.clip_job.ClipJob`: the attempt is recorded before decoding,
    and a clip that cannot be read gets its error status here and yields no rows. The last chunk
    is held back until decoding ends, so its rows can carry the job's record (how the clip decoded,
    how many frames: :data:`INFO_COLUMN`). ``video_source`` opens the clips (default: ``open_video``).
    """
    store = OutputStore(out)
    limit_threads(cfg.ray.decode_num_cpus)
    for raw in batch["clip"]:
        rec = json.loads(str(raw))
        clip = Clip(rec["clip_id"], rec["path"], int(rec["size_bytes"]), rec["phase"])
        attempts, failures = int(rec["attempts"]), int(rec.get("failures", 0))
        rel = status_rel(clip.clip_id)
        on_disk = store.read_json_or(rel, {})  # one request, not exists + read
        if run_id and on_disk.get("run_id") == run_id and on_disk.get("status") == "running":
            # Ray is retrying this task: the worker of the previous attempt in this run died with this clip.
            attempts, failures = int(on_disk.get("attempts", attempts)), int(on_disk.get("failures", failures)) + 1
        job = ClipJob.start(clip, fingerprint, attempts, failures, run_id)
        if failures >= cfg.ray.max_attempts:
            job.status.update(attempts=attempts, status="error", error=_died_message(clip.path, failures), n_frames=0, n_segments=0)
            log.warning("skipping %s", job.status["error"])
            store.write_json(rel, job.status)
            continue
        job.begin(store)
        pending: Batch | None = None
        try:
            for chunk in job.decode(cfg, video_source):
                if pending is not None:
                    yield pending
                pending = {**chunk, INFO_COLUMN: np.full(len(chunk["t"]), "", dtype=object)}
        except Exception as exc:  # the error policy (clip_job): this clip's error, or the run's
            job.fail(store, exc, "decoding")
            continue
        assert pending is not None  # job.decode raises on fewer than 2 frames
        pending[INFO_COLUMN] = np.full(len(pending["t"]), job.record(), dtype=object)
        yield pending


class StageActor:
    """Ray Data callable class around one stage: ``setup()`` once per actor, then ``__call__`` per batch.

    A stage that raises on a batch gets the local runner's error policy (:meth:`ClipJob.fail`): the
    clip whose rows it fails on is recorded as ``computing frame features failed (...)``, once, and
    its rows leave the stream; the other clips of the batch go on. (Raising here instead dropped the
    whole block, and the clip was settled as "the worker processing it died".) The run's errors
    (:data:`RUN_ERRORS`) still raise.
    """

    def __init__(self, stage: Any, drop: tuple[str, ...] = (), threads: float | None = None, out: str | None = None):
        limit_threads(threads)  # before setup(): libraries loaded there start with the limit
        self.stage = stage
        self.drop = drop
        self.out = out
        self.stage.setup()

    def __call__(self, batch: Batch) -> Batch:
        try:
            out = self.stage(batch)
        except RUN_ERRORS:
            raise
        except Exception as exc:
            out = self._per_clip(batch, exc)
        return {k: v for k, v in out.items() if k not in self.drop}

    def _per_clip(self, batch: Batch, exc: Exception) -> Batch:
        """The batch again one clip at a time: the clips the stage fails on are recorded as errors."""
        ids = np.asarray(batch["clip_id"]).astype(str)
        clip_ids = list(dict.fromkeys(ids.tolist()))
        done: list[Batch] = []
        if len(clip_ids) == 1:
            self._fail(clip_ids[0], exc)
        else:
            for clip_id in clip_ids:
                try:
                    done.append(self.stage({k: np.asarray(v)[ids == clip_id] for k, v in batch.items()}))
                except RUN_ERRORS:
                    raise
                except Exception as clip_exc:
                    self._fail(clip_id, clip_exc)
        if done:
            return concat_batches(done)
        return {k: np.asarray(v)[:0] for k, v in batch.items()}  # no rows left: the failed clips' are dropped

    def _fail(self, clip_id: str, exc: Exception) -> None:
        if self.out is None:
            raise exc
        store = OutputStore(self.out)
        rel = status_rel(clip_id)
        status = store.read_json(rel) if store.exists(rel) else {}
        if status.get("status") == "running":  # once per attempt: later batches of the clip find it failed
            ClipJob(status).fail(store, exc, "computing frame features")


def _pool(size: int | tuple[int, int]) -> Any:
    from ray.data import ActorPoolStrategy

    return ActorPoolStrategy(min_size=size[0], max_size=size[1]) if isinstance(size, tuple) else ActorPoolStrategy(size=size)


def _retry_args(max_restarts: int, max_task_retries: int) -> dict[str, int]:
    # Ray 2.60 still takes these as plain remote args (it warns they move to named parameters).
    import warnings

    warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=Warning)
    return {"max_restarts": max_restarts, "max_task_retries": max_task_retries}


def decode_task_options(cfg: RunConfig) -> dict[str, Any]:
    """Ray options of the decode tasks. With ``decode.hwaccel=cuda`` they see their node's GPUs:
    Ray hides GPUs from a task that asks for none (``CUDA_VISIBLE_DEVICES=""``), and asking for a
    share would count the video engine, which is separate from the compute the encoders' shares
    divide, against them (and leave decode tasks no place on CPU nodes). A decode task on a node
    without a GPU falls back to CPU decoding (:class:`handclust.io.video.NvdecSource`)."""
    if cfg.decode.hwaccel != "cuda":
        return {}
    return {"runtime_env": {"env_vars": {"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}}}


def write_clip(frames: Batch, record: str, describer: SegmentDescriber, out: str,
               segment_stages: list[Any] | tuple[Any, ...] = (), hands: Any = None, threads: float | None = None) -> dict[str, Any]:
    """Ray task: one clip's feature rows (all of them, ``frame_idx`` order) in, the clip finished and
    committed (:meth:`ClipJob.finish`, :meth:`ClipJob.commit`); returns its status record.

    ``hands`` (the per-clip hand pass) re-decodes around anchors; ``segment_stages`` (registered
    modalities' stages on segment rows) get the clip's path. An error of the clip's own is recorded as its error
    (:meth:`ClipJob.fail`); the run's errors (outputs not writable, a model that cannot load) raise.
    """
    limit_threads(threads)
    job = ClipJob.from_record(record)
    store = OutputStore(out)
    describer.setup()
    for stage in [*segment_stages, *([hands] if hands is not None else [])]:
        stage.setup()
    try:
        frames, segments = job.finish(frames, describer, segment_stages, hands)
    except Exception as exc:
        return job.fail(store, exc, "segmenting")
    return job.commit(store, frames, segments)


STUCK_GRACE_S = 15.0  # how long the main thread gets to take the interrupt before the watch ends the run


class WriteSlots:
    """How many clip write tasks may wait at once: one per ``decode_num_cpus`` CPUs the cluster has
    now, at least 2. Read again every ``refresh_s``: an autoscaling cluster starts the stream with
    its head alone (0 CPUs: heads take no work) and grows to its workers, and a count read once at
    the start kept every run at 2 writes (so at most 2 GPUs ran V-JEPA-2) however many workers came."""

    def __init__(self, decode_num_cpus: float, resources: Callable[[], dict[str, float]] = lambda: ray.cluster_resources(),
                 refresh_s: float = 15.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._per, self._resources, self._refresh_s, self._clock = max(decode_num_cpus, 1e-3), resources, refresh_s, clock
        self._at = -float("inf")
        self._slots = 2

    def __call__(self) -> int:
        now = self._clock()
        if now - self._at >= self._refresh_s:
            self._at = now
            try:
                cpus = float(self._resources().get("CPU", 0.0))
            except Exception as exc:  # a GCS hiccup keeps the last count; the watch reports a dead cluster
                log.debug("ray: cluster resources not read (%s); keeping %d write slots", exc, self._slots)
                return self._slots
            self._slots = max(2, int(cpus // self._per))
        return self._slots


class RayWatch:
    """Watches the GCS and raylet of the local Ray instance this process started.

    When one of them dies, Ray's core worker would end the driver after its GCS reconnect timeout
    (60 s) with a C++ log line and no record of the run. Instead ``died`` says which daemon died,
    and the main thread is interrupted at once so the run can record the clips it was processing
    and end with one line.
    """

    def __init__(self, poll_s: float = 0.2, on_stuck: Callable[[str], None] | None = None, grace_s: float = STUCK_GRACE_S):
        import threading

        from ray._private import worker

        node = worker._global_node
        self.daemons = [(kind, info.process) for kind in ("gcs_server", "raylet")
                        for info in (node.all_processes.get(kind, []) if node is not None else [])]
        self.died: str | None = None
        self._stop = threading.Event()
        self._poll_s = poll_s
        self._on_stuck = on_stuck
        self._grace_s = grace_s
        threading.Thread(target=self._watch, name="handclust-ray-watch", daemon=True).start()

    def _watch(self) -> None:
        import _thread

        while not self._stop.wait(self._poll_s):
            for kind, process in self.daemons:
                if process.poll() is not None and not self._stop.is_set():
                    self.died = f"its {kind} process {process.pid} exited with code {process.returncode}"
                    _thread.interrupt_main()
                    # The interrupt lands between bytecodes; a main thread blocked in Ray's own clean-up
                    # (a streaming dataset shutting down against the dead raylet, seen under load) never
                    # takes it, and Ray's core worker ends the process after 60 s with no word of ours.
                    # Then this thread records the run's end itself and leaves.
                    if not self._stop.wait(self._grace_s) and self._on_stuck is not None:
                        self._on_stuck(self.died)
                        os._exit(1)
                    return

    def stop(self) -> None:
        self._stop.set()


class RayRunner:
    """Runs the stages as Ray Data pipelines over the clips to do, one per wave of clips.

    Ray is reached through ``executor`` (the run's :class:`~handclust.runtime.executor.RayExecutor`,
    which joins ``ray.address`` / ``RAY_ADDRESS`` or an already initialised Ray, else starts a local
    instance sized by ``ray.num_cpus`` / ``ray.object_store_memory_mb``, and shuts down only an instance
    it started when the run closes it). Without one, the runner opens its own for each
    :meth:`process_clips` and closes it after. ``stages`` replaces the per-frame stages (default:
    :func:`frame_stages`); ``video_source`` opens the clips in the decode tasks (it is pickled to them).
    """

    def __init__(self, cfg: RunConfig, store: OutputStore, progress: Progress, stages: list[Any] | None = None,
                 executor: RayExecutor | None = None, video_source: ClipSource | None = None):
        self.cfg = cfg
        self.executor = executor
        self.video_source = video_source
        self.store = store
        self.progress = progress
        self.fingerprint = feature_fingerprint(cfg)
        self.stages = stages if stages is not None else frame_stages(cfg)
        # A typo would otherwise leave that stage at one actor for the whole cluster. Names of
        # modalities switched off in this run (a shared job config with pose off) are fine.
        known = {s.name for s in self.stages} | {m.name for m in modalities.registered()}
        unknown = sorted(set(cfg.ray.concurrency) - known)
        if unknown:
            raise ConfigError(f"ray.concurrency names {', '.join(map(repr, unknown))}, which is no stage; the stages of "
                              f"this run are {', '.join(s.name for s in self.stages)} (decode: ray.decode_concurrency)")
        self.describer = SegmentDescriber(cfg.segment, cfg.descriptor, cfg.decode.sample_fps)
        self.segment_stages = segment_stages(cfg)
        self.hands = hand_tracks(cfg)
        self.quarantined: list[dict[str, Any]] = []
        self.cluster: str | None = None  # which Ray cluster the run used, in words (run.json)
        self.resources: dict[str, float] | None = None  # its CPUs, GPUs and nodes (run.json's cost)

    # ------------------------------------------------------------------ resume / quarantine

    def _status(self, clip: Clip) -> dict[str, Any]:
        rel = status_rel(clip.clip_id)
        return self.store.read_json(rel) if self.store.exists(rel) else {}

    def is_done(self, clip: Clip, ledger: Ledger | None = None) -> bool:
        """Finished with this feature config, or quarantined (a bad file stays bad). ``ledger``: the
        statuses and tables read in bulk (:class:`~handclust.runtime.clip_job.Ledger`)."""
        st = ledger.status(clip.clip_id) if ledger is not None else self._status(clip)
        if st.get("status") == "quarantined":
            return True
        return is_committed(self.store, clip, self.fingerprint, ledger)

    @staticmethod
    def _failures(st: dict[str, Any]) -> int:
        # Status records written before ``failures`` existed counted every attempt of a failed clip.
        if "failures" in st:
            return int(st["failures"])
        return int(st.get("attempts", 0)) if st.get("status") == "error" else 0

    def _quarantine(self, st: dict[str, Any]) -> None:
        st["status"] = "quarantined"
        self.store.write_json(status_rel(st["clip_id"]), st)
        self.quarantined.append({"path": st.get("path"), "error": st.get("error"), "attempts": st.get("attempts")})
        log.warning("quarantined after %s failed attempts (delete %s to try it again): %s", self._failures(st),
                    self.store.uri_of(status_rel(st["clip_id"])), st.get("error"))

    # ------------------------------------------------------------------ run

    def process_clip(self, clip: Clip) -> dict[str, Any]:
        return self.process_clips([clip])[0]

    def process_clips(self, clips: list[Clip], ledger: Ledger | None = None) -> list[dict[str, Any]]:
        """Process ``clips`` (those not done) in one Ray Data pipeline; returns their status records.
        ``ledger``: their statuses as read in bulk before (else read here, in bulk).

        Raises :class:`~handclust.result.RunnerError` when Ray cannot start or fails mid-run; clips
        it was processing are then recorded as errors that do not count against them.
        """
        import uuid

        max_attempts = self.cfg.ray.max_attempts
        run_id = uuid.uuid4().hex[:12]
        items = []
        ledger = ledger or Ledger.read(self.store, [c.clip_id for c in clips])
        for clip in clips:
            st = dict(ledger.status(clip.clip_id))
            same = st.get("fingerprint") == self.fingerprint
            attempts = int(st.get("attempts", 0)) if same else 0
            failures = self._failures(st) if same else 0
            if st.get("status") in ("error", "running") and failures >= max_attempts:
                self._quarantine(st)  # failed max_attempts times already
                continue
            items.append({"clip": json.dumps({"clip_id": clip.clip_id, "path": clip.path, "size_bytes": clip.size_bytes,
                                              "phase": clip.phase, "attempts": attempts, "failures": failures})})
        if items:
            # The run's executor (one connection for the whole run), else one for these clips alone.
            executor = self.executor or RayExecutor(self.cfg.ray, log_to_driver=self.progress.enabled)
            executor.connect()
            self.cluster = executor.cluster
            self.progress.say(f"ray: using {self.cluster}")
            # Ray's core worker ends this process (after 60 s, with no word of ours) when the GCS of its
            # instance dies: watch the daemons of an instance this run started and stop first.
            watch = (RayWatch(on_stuck=lambda cause: self._end_stuck(clips, run_id, cause))
                     if executor.started and not executor.remote else None)
            try:
                self._run_waves(items, run_id)
            except (*RUN_ERRORS, OSError):
                raise  # the run's own errors (clip_job): a bad config, a model, outputs not writable
            except (KeyboardInterrupt, Exception) as exc:
                if watch is not None:
                    watch.stop()  # the main thread took it: the watch's last resort must not run too
                died = watch.died if watch is not None else None
                if isinstance(exc, KeyboardInterrupt) and died is None:
                    raise  # the user's Ctrl-C: clips left running are simply processed again next time
                # Ray itself failed (raylet or GCS died): not these clips' fault.
                cause = died or f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
                raise RunnerError(self._interrupt(clips, run_id, cause)) from None
            finally:
                if watch is not None:
                    watch.stop()
                    if watch.died is not None:
                        executor.abandon()  # its GCS or raylet is gone: nothing left to shut down
                if executor is not self.executor:
                    executor.close()
        todo = {json.loads(it["clip"])["clip_id"] for it in items}
        now = Ledger.read(self.store, [c.clip_id for c in clips])  # one bulk read, not two requests per clip
        return [self._settle(clip, run_id, clip.clip_id in todo, now.status(clip.clip_id)) for clip in clips]

    def _interrupt(self, clips: list[Clip], run_id: str, cause: str) -> str:
        """Ray itself failed (raylet or GCS died): the clips this run was processing are recorded as
        interrupted, which does not count against them. Returns the one-line message."""
        message = (f"Ray failed mid-run ({cause}); the clips it was processing are recorded as interrupted, "
                   "which does not count against them: rerun the same command to resume")
        now = Ledger.read(self.store, [c.clip_id for c in clips])
        for clip in clips:
            st = dict(now.status(clip.clip_id))
            if st.get("status") == "running" and st.get("run_id") == run_id:
                st.update(status="interrupted", error=f"{clip.path}: {message}", n_frames=0, n_segments=0)
                self.store.write_json(status_rel(clip.clip_id), st)
        return message

    def _end_stuck(self, clips: list[Clip], run_id: str, cause: str) -> None:
        """The watch's last resort (the main thread is stuck in Ray's clean-up): what the CLI does with
        a RunnerError (clips interrupted, run.json failed, one ``error:`` line), from the watch's thread."""
        import sys

        from handclust.io.run_record import update_run

        message = self._interrupt(clips, run_id, cause)
        try:
            update_run(self.store, status="failed", error=f"RunnerError: {message}")
            where = f" (recorded in {self.store.uri}/run.json)"
        except OSError:
            where = ""
        sys.stderr.write(f"error: {message}{where}\n")
        sys.stderr.flush()

    def _settle(self, clip: Clip, run_id: str, todo: bool, st: dict[str, Any] | None = None) -> dict[str, Any]:
        """The clip's final status after its wave (or the run) ended normally: a clip this run was to
        do but did not finish is recorded as an error (its worker died past Ray's retries); quarantines
        a clip that failed ``ray.max_attempts`` times. Settling a clip twice changes nothing. ``st``:
        its status record as just read in bulk (else read here)."""
        st = dict(st) if st is not None else self._status(clip)
        if todo and (st.get("run_id") != run_id or st.get("status") == "running"):
            # The run ended normally without this clip (it may have died before recording itself):
            # its worker died past Ray's retries.
            st = {"clip_id": clip.clip_id, "path": clip.path, "size_bytes": clip.size_bytes, "phase": clip.phase,
                  "attempts": int(st.get("attempts", 0)), "fingerprint": self.fingerprint, "run_id": run_id,
                  **{k: v for k, v in st.items() if k in ("attempts", "failures")}}
            failures = self._failures(st) + 1
            st.update(status="error", error=_died_message(clip.path, failures), n_frames=0, n_segments=0, failures=failures)
            self.store.write_json(status_rel(clip.clip_id), st)
        if st.get("status") == "error" and self._failures(st) >= self.cfg.ray.max_attempts:
            self._quarantine(st)
        return st

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

    def wave_size(self, n_items: int) -> int:
        """Clips per pipeline: ``ray.clips_per_wave``, else all of them (one stream; each clip still commits on its own)."""
        return self.cfg.ray.clips_per_wave or max(n_items, 1)

    def _run_waves(self, items: list[dict[str, str]], run_id: str = "") -> None:
        """Process ``items`` in one streaming Ray Data pipeline (or waves of ``ray.clips_per_wave``).

        Each clip is committed (frames, segments, status ``ok``/``partial``) by a task of its own as
        soon as all its rows are through the frame stages (:meth:`_run`), while the others still
        stream: a run killed mid-way keeps every clip committed before.
        """
        self._check_fit()
        res = ray.cluster_resources()
        # What the run held (run.json's measured cost): the cluster's CPUs / GPUs and its live nodes.
        self.resources = {"CPU": float(res.get("CPU", 0)), "GPU": float(res.get("GPU", 0)),
                          "nodes": float(sum(1 for n in ray.nodes() if n.get("Alive")))}
        size = self.wave_size(len(items))
        self.progress.say(f"ray: {len(items)} clips on {res.get('CPU', 0):.0f} CPUs, {res.get('GPU', 0):.0f} GPUs"
                          + (f", in waves of {size} clips" if size < len(items) else ", streaming"))
        self._counts: dict[str, int] = {}
        self._said: set[str] = set()
        self._total = len(items)
        done, w, t0 = 0, 0, time.time()
        while done < len(items):
            wave = items[done:done + size]
            w += 1
            if size < len(items):
                self.progress.say(f"ray: wave {w}: clips {done + 1}-{done + len(wave)} of {len(items)}")
            self._run(wave, run_id)
            recs = [json.loads(item["clip"]) for item in wave]
            now = Ledger.read(self.store, [r["clip_id"] for r in recs])  # the wave's statuses in one bulk read
            for rec in recs:  # the clips that did not reach a commit: decode errors, dead workers
                clip = Clip(rec["clip_id"], rec["path"], int(rec["size_bytes"]), rec["phase"])
                self._say_clip(self._settle(clip, run_id, True, now.status(clip.clip_id)))
            done += len(wave)
            self.progress.say(f"ray: {f'wave {w} ' if size < len(items) else ''}committed: {done}/{len(items)} clips "
                              f"({', '.join(f'{v} {k}' for k, v in sorted(self._counts.items()))}) in {time.time() - t0:.0f} s")

    def _say_clip(self, st: dict[str, Any]) -> None:
        if st["clip_id"] in self._said:
            return
        self._said.add(st["clip_id"])
        state = str(st.get("status"))
        self._counts[state] = self._counts.get(state, 0) + 1
        self.progress.say(f"ray: [{len(self._said)}/{self._total}] {state}: {st.get('path')}")

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
        if rc.data_memory_mb is not None:
            from ray.data import ExecutionResources

            ctx.execution_options.resource_limits = ExecutionResources.for_limits(object_store_memory=rc.data_memory_mb * 2**20)
        out = self.store.uri if "://" in self.store.uri else self.store.root
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(decode_clips, batch_size=1, batch_format="numpy", num_cpus=rc.decode_num_cpus,
                            compute=TaskPoolStrategy(size=rc.decode_concurrency), **decode_task_options(self.cfg),
                            # Bounded: Ray Data's default retries a task lost with its worker forever.
                            max_retries=rc.max_task_retries,
                            fn_kwargs={"cfg": self.cfg, "out": out, "fingerprint": self.fingerprint, "run_id": run_id,
                                       "video_source": self.video_source})
        for i, stage in enumerate(self.stages):
            last = i == len(self.stages) - 1
            cpus = self._actor_cpus(stage)
            ds = ds.map_batches(
                StageActor, fn_constructor_kwargs={"stage": stage, "drop": PIXEL_COLUMNS if last else (), "threads": cpus,
                                                   "out": out},
                batch_size=stage.resources.batch_size, batch_format="numpy",
                compute=_pool(rc.concurrency.get(stage.name, 1)),
                num_cpus=cpus, num_gpus=stage.resources.num_gpus or None,
                # Bounded, unlike Ray Data's default (-1), so a batch that always kills its actor ends.
                **_retry_args(rc.max_restarts, rc.max_task_retries))
        if not self.stages:
            # video_px exists only with V-JEPA-2 on, which is a stage: never here.
            ds = ds.drop_columns([c for c in PIXEL_COLUMNS if c != "video_px"])
        self._commit_as_clips_complete(ds, out)

    def _commit_as_clips_complete(self, ds: Any, out: str) -> None:
        """Stream the pixel-free feature rows out of the last frame stage; as soon as a clip has
        all its rows (the count its decode record names), send them to a :func:`write_clip` task,
        which finishes and commits that clip. No barrier: the driver holds only the rows of clips
        still in flight, and at most a few write tasks wait at once (backpressure on the stream)."""
        rc = self.cfg.ray
        num_gpus = max((s.resources.num_gpus for s in self.segment_stages), default=0.0) or None
        write = ray.remote(write_clip).options(num_cpus=rc.decode_num_cpus, num_gpus=num_gpus, max_retries=rc.max_task_retries)
        shared = [ray.put(self.describer), out, ray.put(self.segment_stages), ray.put(self.hands)]
        max_writes = WriteSlots(rc.decode_num_cpus)
        parts: dict[str, list[Batch]] = {}
        seen: dict[str, set[int]] = {}
        records: dict[str, str] = {}
        writing: dict[Any, str] = {}

        def collect(most: int) -> None:
            """Report the write tasks that are done, waiting until at most ``most`` are left."""
            while writing:
                ready, _ = ray.wait(list(writing), num_returns=1, timeout=None if len(writing) > most else 0)
                if not ready:
                    return
                clip_id = writing.pop(ready[0])
                try:
                    self._say_clip(ray.get(ready[0]))
                except ray.exceptions.RayTaskError as exc:
                    if isinstance(exc.cause, RUN_ERRORS + (OSError,)):
                        raise exc.cause from None  # the run's error (disk full, a model that cannot load)
                    log.warning("ray: writing clip %s failed: %s", clip_id, exc)  # left running: settled as its worker's death
                except ray.exceptions.RayError as exc:  # its worker died past Ray's retries
                    log.warning("ray: writing clip %s failed: %s", clip_id, exc)

        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            if not len(batch.get("clip_id", ())):
                continue
            ids = np.asarray(batch["clip_id"]).astype(str)
            for clip_id in np.unique(ids):
                m = ids == clip_id
                part = {k: np.asarray(v)[m] for k, v in batch.items()}
                parts.setdefault(clip_id, []).append(part)
                seen.setdefault(clip_id, set()).update(int(i) for i in part["frame_idx"])
                info = [str(x) for x in part[INFO_COLUMN] if x]
                if info:
                    records[clip_id] = info[0]
                if clip_id in records and len(seen[clip_id]) >= int(json.loads(records[clip_id])["n_frames"]):
                    frames = concat_batches(parts.pop(clip_id))
                    seen.pop(clip_id)
                    # In frame order, each frame once (a retried decode task may have sent some rows twice).
                    _, first = np.unique(frames["frame_idx"], return_index=True)
                    frames = {k: v[first] for k, v in frames.items() if k != INFO_COLUMN}
                    writing[write.remote(frames, records.pop(clip_id), *shared, rc.decode_num_cpus)] = clip_id
            collect(most=max_writes() - 1)
        collect(most=0)
        # Rows of a clip whose decoder gave up after some chunks: it wrote its error status itself.
        for clip_id in parts:
            log.info("ray: clip %s: decoding stopped before its last chunk; its status says why", clip_id)
