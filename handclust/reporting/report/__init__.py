"""The report a person reads: ``OUT/report/index.html`` and the preview reel ``OUT/report/reel.mp4``.

``index.html`` is one self-contained file (plots as base64 PNG, keyframes as base64 JPEG, no
scripts, no network) that opens from disk: the run summary, the activities with their names, the
ablation and cross-clip tables, per-clip timeline strips (one strip per modality variant on a
shared time axis, noise in black), the 2-D map of all segments, per-clip scene self-similarity and
flow-rhythm plots, and a keyframe gallery per activity. ``reel.mp4`` shows, per activity, a title
card and a few seconds of three typical segments.

Raw frames are never stored, so keyframes and reel frames are re-decoded from the clips
(:mod:`~handclust.reporting.report.excerpts`: on the run's executor, so in Ray tasks after a Ray run,
since the driver may not see the footage). Everything written by a model or taken from a file name is
HTML-escaped. Optional inputs (``eval.json`` keys, ``labels.parquet``, ``ablations.parquet``)
may be missing: their place says "not computed". Large runs stay quick to open: thumbnails,
downsampled plots, and at most ``MAX_CLIPS`` clips in the per-clip sections (the rest in a table).

The package: :mod:`~handclust.reporting.report.data` reads a run into one :class:`RunData`;
:mod:`~handclust.reporting.report.plots` draws; :mod:`~handclust.reporting.report.reel` encodes the reel;
:mod:`~handclust.reporting.report.html` fills ``templates/*.html.j2`` (Jinja2, autoescape on). This module
keeps the entry points (:func:`write_report`, used by the pipeline and ``handclust report``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from handclust.colours import activity_colour
from handclust.config import RayConfig
from handclust.io import layout, run_lock
from handclust.io.run_record import update_run
from handclust.io.storage import OutputStore
from handclust.progress import Progress
from handclust.reporting.report import html
from handclust.reporting.report.data import RunData, align_to_fused, example_segments, load_run
from handclust.reporting.report.excerpts import decode_excerpts
from handclust.reporting.report.reel import REEL_FPS, REEL_SIZE, reel_excerpts, reel_plan, remove_reel, write_reel
from handclust.runtime.executor import Executor, LocalExecutor, executor_from

__all__ = ["RunData", "align_to_fused", "colour_hex", "example_segments", "load_run", "reel_plan", "write_report"]

log = logging.getLogger(__name__)

colour_hex = activity_colour  # the name this module gave it before handclust.colours


def _as_progress(progress: Progress | bool | Callable[[str], None] | None) -> Progress:
    if isinstance(progress, Progress):
        return progress
    if callable(progress):
        prog = Progress(enabled=True)
        prog.say = progress  # type: ignore[method-assign]
        return prog
    return Progress(enabled=bool(progress))


def run_executor(data: RunData) -> Executor:
    """The executor of the run ``data`` was read from (run.json's ``runner`` and ``ray``): its
    excerpts are decoded where its footage was read (Ray tasks after a Ray run), else here."""
    cfg = data.run.get("config") or {}
    try:
        rc = RayConfig.model_validate(cfg.get("ray") or {})
    except ValueError as exc:  # an older or hand-edited run.json: decode here rather than fail the report
        log.warning("report: run.json's ray settings do not validate (%s); decoding excerpts here", exc)
        return LocalExecutor()
    try:
        return executor_from(str(cfg.get("runner") or "local"), rc)
    except ValueError as exc:  # a runner this version does not know: decode here
        log.warning("report: %s; decoding excerpts here", exc)
        return LocalExecutor()


def write_report(out: str | Path, *, reel: bool = True, progress: Progress | bool | Callable[[str], None] | None = None,
                 executor: Executor | None = None) -> Path | str:
    """Write ``OUT/report/index.html`` (and ``OUT/report/reel.mp4`` unless ``reel=False``) for a finished run.

    Returns the path of ``index.html`` (a local :class:`~pathlib.Path`, or the URI on object
    stores). What went wrong in a part of the report (a clip that no longer decodes, the reel) is
    logged, shown in the report and recorded in ``run.json`` under ``"report"``; a run without
    ``clips.parquet`` raises :class:`FileNotFoundError`. ``executor`` decodes the excerpts (the
    run's, from :func:`handclust.discover`); default: one like the run's (:func:`run_executor`),
    closed when the report is written.
    """
    store = OutputStore(out)
    with run_lock.hold(store, "report"):  # shared when `run` writes its own report
        return _write_report(store, reel, progress, executor)


def _write_report(store: OutputStore, reel: bool, progress: Progress | bool | Callable[[str], None] | None,
                  executor: Executor | None) -> Path | str:
    t0 = time.perf_counter()
    prog = _as_progress(progress)
    data = load_run(store)
    if data.missing_clips:
        names = data.clips[data.clips.clip_id.isin(data.missing_clips)].path.head(3).tolist()
        msg = (f"{len(data.missing_clips)} clip(s) are no longer at the path the run read them from (e.g. {', '.join(names)}): "
               "their keyframes and reel excerpts are left out")
        data.problems.append(msg)
        log.warning("report: %s", msg)
    prog.say(f"report: {len(data.segments)} segments, {len(data.ok_clips)} clips, {len(data.activities)} activities")
    chapters: list[dict[str, Any]] | None = reel_plan(data) if reel else None
    # Every excerpt the gallery and the reel show, decoded in one pass where the footage is: in Ray
    # tasks after a Ray run (the driver may not see the clips), here otherwise.
    planned = html.gallery_excerpts(data) + (reel_excerpts(data, chapters) if chapters else [])
    if executor is None:
        with run_executor(data) as own:
            data.decoded = decode_excerpts(planned, own, prog)
    else:
        data.decoded = decode_excerpts(planned, executor, prog)
    reel_error = None
    reel_s = None
    if not chapters:  # no reel this time: a stale one from an earlier report would mislead
        remove_reel(store)
    if chapters:
        try:
            reel_s = write_reel(data, chapters, layout.REEL, prog)
            store.write_json(layout.REEL_JSON, {"fps": REEL_FPS, "size": list(REEL_SIZE), "duration_s": reel_s,
                                                  "chapters": chapters})
        except Exception as exc:  # the HTML is worth having without the reel
            reel_error = f"{exc.__class__.__name__}: {exc}"
            remove_reel(store)
            data.problems.append(f"reel: {reel_error}")
            log.warning("report: the reel could not be written: %s", reel_error)
    timelines, signals = html.clip_sections_html(data, prog)
    parts = {
        "activities": html.activities_html(data),
        "evaluation": html.evaluation_html(data),
        "timelines": timelines,
        "map": html.map_html(data),
        "signals": signals,
        "galleries": html.gallery_html(data, prog),
        "reel": html.reel_html(chapters, reel_error),
    }
    parts["summary"] = html.summary_html(data)  # last: it lists the problems met while building the rest
    store.write_bytes(layout.REPORT, html.render_page(data, parts).encode("utf-8"))
    seconds = time.perf_counter() - t0
    if store.exists(layout.RUN):
        update_run(store, report={"status": "ok" if not data.problems else "partial", "path": layout.REPORT,
                                  "reel": layout.REEL if reel_s is not None else None, "reel_s": reel_s,
                                  "seconds": round(seconds, 2), "problems": data.problems[:html.MAX_PROBLEMS],
                                  "problems_total": len(data.problems)})
    prog.say(f"report: written in {seconds:.1f} s")
    return store.local_path(layout.REPORT) if store.local else store.uri_of(layout.REPORT)
