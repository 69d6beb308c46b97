"""``discover(footage, out, config)``: footage in, activities and per-clip timelines out.

The stages (frame features, per-clip segmentation + description, joint clustering) are the
objects from :mod:`handclust.stages`, planned by :mod:`handclust.runtime.plan`; the run's executor
(:mod:`handclust.runtime.executor`) picks the clip runner (:class:`LocalRunner` in this process, or
the Ray runner) and runs every step that fans out. This module writes every table through
:class:`~handclust.io.storage.OutputStore` and resumes: a clip whose outputs are complete (and were
made with the same feature config) is not decoded again.
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from handclust import schema
from handclust.activities import build_activities
from handclust.config import ConfigError, RunConfig, config_to_dict, load_config, with_overrides
from handclust.core.clustering import SubModels
from handclust.io import layout, run_lock
from handclust.io.footage import Clip, FootageError
from handclust.io.run_record import read_run, update_run
from handclust.io.sources import ClipSource, FileClips
from handclust.io.storage import OutputStore
from handclust.modalities.encoders import DeviceError, ModelLoadError, check_models
from handclust.progress import Progress
from handclust.result import RunnerError, RunResult
from handclust.runtime.clip_job import Ledger, status_rel
from handclust.runtime.executor import Executor, executor_for
from handclust.runtime.local_runner import LocalRunner as LocalRunner  # its home before the executor; tests import it here
from handclust.runtime.plan import (  # noqa: F401  (frame_batches, frame_stages: imported from here by tests and benchmarks)
    PIXEL_COLUMNS,
    SegmentDescriber,
    apply_hand_tracks,
    concat_batches,
    feature_fingerprint,
    frame_batches,
    frame_stages,
    hand_tracks,
    segment_stages,
)
from handclust.runtime.runners import ClipRunner, clip_runner

if TYPE_CHECKING:
    from handclust.reporting.labelling import Labeller

log = logging.getLogger(__name__)


def clips_table(store: OutputStore, clips: list[Clip], ledger: Ledger | None = None) -> pa.Table:
    """``clips.parquet``: each clip with its status record (from ``ledger``, else read in bulk)."""
    ledger = ledger or Ledger.read(store, [c.clip_id for c in clips])
    rows: dict[str, list[Any]] = {name: [] for name in schema.CLIPS.names}
    for clip in clips:
        st = ledger.statuses.get(clip.clip_id) or {"status": "pending"}
        rec = {"clip_id": clip.clip_id, "path": clip.path, "size_bytes": clip.size_bytes, "phase": clip.phase,
               "status": st.get("status"), "error": st.get("error"), "attempts": st.get("attempts", 0),
               "duration_s": st.get("duration_s"), "source_fps": st.get("source_fps"),
               "effective_fps": st.get("effective_fps"), "width": st.get("width"),
               "height": st.get("height"), "n_frames": st.get("n_frames"), "n_segments": st.get("n_segments"),
               "backend": st.get("backend")}
        for k in rows:
            rows[k].append(rec[k])
    return schema.table(rows, schema.CLIPS)


COMPACT_FROM = 256  # per-clip files in a folder from which a run compacts it; fewer stay one file per clip


def compact_outputs(store: OutputStore, min_files: int = COMPACT_FROM) -> dict[str, int]:
    """Per-clip ``frames/`` and ``segments/`` files merged into parts of ~128 MB after the stream
    (:func:`handclust.io.storage.compact_clip_tables`) once a folder holds ``min_files`` of them;
    returns how many files each folder merged (0: left as they are)."""
    from handclust.io.storage import PART_PREFIX, compact_clip_tables

    merged = {}
    for d, tbl_schema in (("segments", schema.SEGMENTS), ("frames", schema.FRAMES)):
        singles = sum(1 for n in store.list(d, ".parquet") if not n.startswith(PART_PREFIX))
        merged[d] = compact_clip_tables(store, d, tbl_schema) if singles >= min_files else 0
    return merged


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    from importlib import metadata

    for pkg in ("handclust", "numpy", "pyarrow", "opencv-python-headless", "scikit-learn", "ruptures", "faiss-cpu",
                "umap-learn", "av", "decord", "ray", "torch", "transformers", "mediapipe", "cuml", "faiss-gpu"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def process_footage(clips: list[Clip], cfg: RunConfig, store: OutputStore, prog: Progress,
                    timings: dict[str, float], executor: Executor | None = None,
                    video_source: ClipSource | None = None) -> tuple[pa.Table, ClipRunner]:
    """Features, segments and descriptors of every clip not done yet (resume), by the clip runner of
    ``executor`` (default: :func:`~handclust.runtime.executor.executor_for` ``cfg``, closed here);
    writes and returns ``clips.parquet`` and the runner used."""
    if executor is None:
        with executor_for(cfg, log_to_driver=prog.enabled) as own:
            return process_footage(clips, cfg, store, prog, timings, own, video_source)
    runner = clip_runner(executor, cfg, store, prog, video_source)
    t0 = time.perf_counter()
    # Removed or replaced clips' files go aside (and returning ones come back) before the ledger is
    # read, so that the ledger sees the folders as this run will use them.
    keep_only_these_clips(store, clips, prog)
    # One ledger (statuses and tables read in bulk) instead of four requests per clip.
    ledger = Ledger.read(store, [c.clip_id for c in clips])
    todo = [c for c in clips if not runner.is_done(c, ledger)]
    if len(todo) < len(clips):
        prog.say(f"resuming: {len(clips) - len(todo)} of {len(clips)} clips already done")
    runner.process_clips(todo, ledger)
    timings["features_and_segments"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    clips_tbl = clips_table(store, clips)
    store.write_table(layout.CLIPS, clips_tbl)
    if todo:
        merged = compact_outputs(store, COMPACT_FROM)  # read here: a test may lower it
        if any(merged.values()):
            prog.say(f"compacted {merged['segments']} segment and {merged['frames']} frame files into parts")
    timings["clips_table_and_compaction"] = time.perf_counter() - t0
    return clips_tbl, runner


def keep_only_these_clips(store: OutputStore, clips: list[Clip], prog: Progress) -> None:
    """Per-clip files of clips that are no longer in the footage, or were replaced (a changed file has
    a new id), go to ``OUT/.removed/``; clips that are back get theirs again (:func:`set_aside_other_clips`)."""
    from handclust.io.run_tables import SET_ASIDE, restore_clips, set_aside_other_clips

    ids = [c.clip_id for c in clips]
    aside = {n.removesuffix(".json") for n in store.list(f"{SET_ASIDE}/status", ".json")}  # one listing, not a look per clip
    restored = restore_clips(store, [i for i in ids if i in aside and not store.exists(status_rel(i))])
    if restored:
        prog.say(f"{len(restored)} clip(s) are back in the footage unchanged: their earlier results restored")
    moved = set_aside_other_clips(store, set(ids))
    if moved:
        log.warning("%d clip(s) of an earlier run into %s are no longer in the footage or were replaced: their frames, "
                    "segments, status and timelines moved to %s (delete it to free the space)", len(moved), store.uri,
                    store.uri_of(SET_ASIDE))


def discover(footage: str | Path | list[str | Path], out: str | Path = "handclust_out",
             config: RunConfig | str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None,
             progress: bool | None = None, models: SubModels | None = None, labeller: Labeller | None = None,
             video_source: ClipSource | None = None) -> RunResult:
    """Run the whole pipeline on ``footage`` (folder, manifest, or list of paths) into ``out``.

    ``config`` is a :class:`RunConfig` or a YAML path; ``overrides`` are ``key=value`` strings.
    Rerunning into the same ``out`` resumes: finished clips are not processed again. Objects you may
    pass in instead of the ones the config picks:

    - ``models``: your own clusterer, 2-D reducer or neighbour index
      (:class:`handclust.core.clustering.SubModels`); the ones left ``None`` follow ``cluster.backend``.
    - ``labeller``: what names the activities (:class:`handclust.reporting.labelling.Labeller`: called
      with each activity's :class:`~handclust.reporting.labelling.ClusterExamples`, in this process);
      default: Gemini as ``labels`` configures it (no API key: no names).
    - ``video_source``: what lists the clips of ``footage`` and opens them
      (:class:`handclust.io.sources.ClipSource`); default: :class:`~handclust.io.sources.FileClips`
      (``find_clips``, and ``open_video`` as ``decode.backend`` picks).

    The work that fans out (clips, the clustering task, naming, the report's excerpts) runs on one
    executor (:func:`handclust.runtime.executor.executor_for`: in this process with ``runner=local``,
    on Ray with ``runner=ray``), opened here and closed when the run ends.
    """
    if isinstance(config, RunConfig):
        cfg = with_overrides(config, overrides) if overrides else config
    else:
        cfg = load_config(config, overrides)
    store = OutputStore(out)
    with run_lock.hold(store, "run"):  # one writer per output folder (run_lock); refused before anything is read
        prog = Progress(enabled=cfg.progress if progress is None else progress)
        # One executor (one Ray connection, or none) for the whole run; an instance it started ends with it.
        with executor_for(cfg, log_to_driver=prog.enabled) as executor:
            return _discover(footage, store, cfg, prog, executor, models, labeller, video_source or FileClips())


def _discover(footage: str | Path | list[str | Path], store: OutputStore, cfg: RunConfig, prog: Progress,
              executor: Executor, models: SubModels | None, labeller: Labeller | None, video_source: ClipSource) -> RunResult:
    timings: dict[str, float] = {}
    t_run = time.perf_counter()
    try:
        clips = video_source.find(footage, cfg.phase.pattern, skip=[store.uri])  # never its own outputs
        # A model that cannot load stops the run here, before any clip is decoded.
        t0 = time.perf_counter()
        # Devices are resolved here when the stages run on this machine (local runner, or a Ray instance
        # the runner starts); workers of a remote Ray cluster resolve their own.
        encoders = check_models(cfg, resolve_devices=not executor.remote)
        if any(name != "scene" or rec.get("encoder") != "histogram" for name, rec in encoders.items()):  # a model was checked
            timings["model_check"] = time.perf_counter() - t0
        clips_tbl, runner = process_footage(clips, cfg, store, prog, timings, executor, video_source)
    except (FootageError, ModelLoadError, DeviceError, ConfigError, RunnerError) as exc:
        record_failure(store, cfg, footage, exc)
        raise
    result = build_activities(store, cfg, clips_tbl, footage, prog, timings, models, executor=executor, labeller=labeller)
    result.summary["quarantined"] = [r["path"] for r in clips_tbl.to_pylist() if r["status"] == "quarantined"]
    cluster = getattr(runner, "cluster", None)  # the Ray runner's, in words, when it ran clips
    if cluster:
        result.summary["ray_cluster"] = cluster
    timings["total"] = time.perf_counter() - t_run
    result.summary["wall_time_s"] = timings["total"]
    # A run in which no clip could be processed has no result: run.json says failed, as the exit code does.
    none_ok = result.summary.get("clips_ok", 0) == 0
    update_run(store, status="failed" if none_ok else "ok", error=no_clip_message(result.summary) if none_ok else None,
               config=config_to_dict(cfg),
               footage=[str(f) for f in footage] if isinstance(footage, list | tuple) else str(footage),
               versions=versions(), timings=timings, summary=result.summary,
               feature_fingerprint=runner.fingerprint, encoders=encoders,
               cost=run_cost_block(cfg, clips_tbl, timings["total"], getattr(runner, "resources", None), result.summary))
    if cfg.report.enabled:
        write_run_report(store, result, reel=cfg.report.reel, prog=prog, executor=executor)
    return result


def no_clip_message(summary: dict[str, Any]) -> str:
    """The one line of a run (or assign) in which no clip could be processed."""
    quarantined = len(summary.get("quarantined") or [])
    return (f"no clip could be processed ({summary.get('clips_failed', 0)} failed"
            + (f", {quarantined} quarantined" if quarantined else "") + f" of {summary.get('clips_total', 0)}): each clip's "
            "reason is in clips.parquet (column error) and listed above; fix or remove those files and rerun")


def run_cost_block(cfg: RunConfig, clips_tbl: pa.Table, wall_s: float, resources: dict[str, float] | None,
                   summary: dict[str, Any]) -> dict[str, Any]:
    """run.json's ``cost``: measured compute beside the estimate for the footage hours of the ok clips, and
    the labelling spend (:func:`handclust.cost.run_cost`)."""
    from handclust.cost import run_cost

    ok = [r["duration_s"] or 0.0 for r in clips_tbl.to_pylist() if r["status"] == "ok"]
    return run_cost(cfg, sum(ok) / 3600, wall_s, resources, summary.get("labels", {}).get("spend"))


def record_failure(store: OutputStore, cfg: RunConfig | None, footage: Any, exc: Exception,
                   overrides: list[str] | None = None) -> None:
    """Say in ``run.json`` why the run stopped before any result, keeping what an earlier run wrote there."""
    try:
        # The attempt's own config goes beside, not over, the config of the run whose tables are here.
        update_run(store, status="failed", error=f"{exc.__class__.__name__}: {exc}", failed_attempt={
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": config_to_dict(cfg) if cfg is not None else None,
            "overrides": list(overrides or []), "footage": [str(f) for f in footage] if isinstance(footage, list | tuple) else str(footage)})
    except OSError as write_exc:  # an unwritable --out must not hide the original error
        log.warning("could not record the failure in %s/run.json: %s", store.uri, write_exc)


def write_run_report(store: OutputStore, result: RunResult, reel: bool, prog: Progress, executor: Executor | None = None) -> None:
    """The HTML report and reel (excerpts decoded on ``executor``: the run's); a failure is logged and
    recorded in run.json, never loses the run."""
    try:  # the import too: a broken install (templates or jinja2 missing) must not cost the tables either
        from handclust.reporting.report import write_report

        path = str(write_report(store.uri, reel=reel, progress=prog, executor=executor))
    except Exception as exc:  # the tables are written by now; a broken report must not cost them
        error = f"{exc.__class__.__name__}: {exc}"
        log.warning("the report could not be written (retry with `handclust report %s`): %s", store.uri, error)
        result.summary["report_error"] = error
        update_run(store, report={"status": "error", "error": error})
        return
    result.summary["report"] = path
    update_run(store, summary={**read_run(store).get("summary", {}), "report": path})
