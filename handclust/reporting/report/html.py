"""The page: each section's content built from :class:`RunData`, rendered by Jinja2 templates with autoescape.

Every value a template prints is escaped unless it is :class:`markupsafe.Markup`, and Markup is made
only here, from fixed markup with ``Markup.format`` (which escapes its arguments): text from a
model (activity names, descriptions) or from a file name cannot reach the page unescaped.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from handclust import schema
from handclust.colours import activity_colour
from handclust.io import layout
from handclust.modalities import registry as modalities
from handclust.progress import Progress
from handclust.reporting.report import plots, reel
from handclust.reporting.report.data import MAX_ACTIVITIES, NOT_COMPUTED, RunData, dig, example_segments

log = logging.getLogger(__name__)

MAX_CLIPS = 50  # clips drawn in the per-clip sections; the rest are listed in a table
MAX_CLIP_ROWS = 2000  # rows of that table
MAX_PROBLEMS = 50  # problems listed (a moved footage folder makes one per keyframe)
THUMB_WIDTH = 240
GALLERY_SEGMENTS = 3
GALLERY_FRAMES = 3

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("handclust.reporting.report", "templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(template: str, **context: Any) -> Markup:
    return Markup(_ENV.get_template(template).render(**context))


# ---------------------------------------------------------------------------------------- cells


def not_computed(note: Any = None) -> Markup:
    if note:
        return Markup('<span class="nc" title="{}">{}</span>').format(note, NOT_COMPUTED)
    return Markup('<span class="nc">{}</span>').format(NOT_COMPUTED)


def fmt(value: Any, spec: str = ".2f") -> str | Markup:
    """A number for a table cell, or ``not computed`` for a missing / NaN value."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) or not math.isfinite(float(value)):
        return not_computed()
    if isinstance(value, int | np.integer) and spec.endswith("f"):
        return str(int(value))
    try:
        return format(value, spec)
    except ValueError:  # e.g. "d" given a float
        return format(float(value), ".2f")


def pct(value: Any) -> str | Markup:
    """A share as a percentage, or ``not computed``."""
    text = fmt(value)
    return text if isinstance(text, Markup) else fmt(100 * float(value), ".1f") + " %"


def pct_or_blank(v: Any) -> str:
    return fmt(100 * v, ".1f") + " %" if isinstance(v, int | float) else ""


def swatch(cluster: int, text: Any = "") -> Markup:
    """The activity's colour square, then ``text`` (escaped)."""
    return Markup('<span class="sw" style="background:{}"></span>{}').format(activity_colour(cluster), text)


def is_fusion(name: Any) -> bool:
    """The run's own variant in eval.json / ablations.parquet ("fusion", "fusion (this run)")."""
    return str(name).startswith("fusion")


# ---------------------------------------------------------------------------------------- sections


def summary_html(data: RunData) -> Markup:
    clips, seg, ev = data.clips, data.segments, data.evaluation or {}
    s = data.run.get("summary", {}) if isinstance(data.run.get("summary"), dict) else {}
    ok = data.ok_clips
    hours = float(np.nansum(ok.duration_s.to_numpy(dtype=float))) / 3600
    failed = clips[~clips.status.isin(["ok", "partial"])]  # error, quarantined (Ray runner), ...
    partial = clips[clips.status == "partial"]
    k = ev.get("k", len(data.activities))
    noise = ev.get("noise_rate", float((seg.cluster < 0).mean()) if len(seg) else None)
    lab = data.labels_summary or (s.get("labels") if isinstance(s.get("labels"), dict) else None)
    if lab:
        labels = f"{lab.get('labelled', 0)} named, {lab.get('failed', 0)} failed, {lab.get('skipped', 0)} skipped"
        if lab.get("budget_stopped"):
            labels += f", {lab['budget_stopped']} not asked ({lab.get('budget', 'budget reached')})"
        if lab.get("errors"):
            labels += f" ({lab['errors'][0]})"
    else:
        labels = f"{len(data.names)} named" if data.labels is not None else NOT_COMPUTED
    rows = [
        ("footage", f"{hours:.2f} h in {len(ok)} clips ({hours * 60:.1f} min)"),
        ("clips", f"{len(clips) - len(failed) - len(partial)} ok, {len(partial)} partial, {len(failed)} failed (of {len(clips)})"),
        ("segments", f"{len(seg)} (mean {(seg.t_end - seg.t_start).mean():.1f} s)" if len(seg) else "0"),
        ("activities", f"{k} found, {sum(c in data.names for c in data.activities)} with a label"),
        ("labels", labels),
        ("noise", f"{100 * noise:.1f} % of segments (black in the strips; timelines/ show them as their nearest activity)"
         if isinstance(noise, int | float) and math.isfinite(noise) else NOT_COMPUTED),
    ]
    gt = ev.get("ground_truth")
    if isinstance(gt, dict):
        ari, nmi = gt.get("ari"), gt.get("nmi")
        if isinstance(ari, int | float) and isinstance(nmi, int | float):
            rows.append(("vs ground truth", f"ARI {ari:.2f}, NMI {nmi:.2f} (frame level)"))
    groups = dig(data.run, "clip_groups")
    if isinstance(groups, dict) and groups.get("count", 1) > 1:
        rows.append(("groups of clips", f"{groups['count']} groups clustered apart ({', '.join(map(str, groups.get('clips', [])))} "
                                        "clips): activities are numbered apart, none spans two groups (run.json clip_groups)"))
    if s.get("cluster_reason"):
        rows.append(("why this many", s["cluster_reason"]))
    if isinstance(s.get("backends"), dict):
        rows.append(("backends", ", ".join(f"{a}={b}" for a, b in s["backends"].items())))
    if s.get("wall_time_s") is not None:
        rows.append(("wall time", f"{s['wall_time_s']:.1f} s"))
    measured, estimated, spend = dig(data.run, "cost", "measured"), dig(data.run, "cost", "estimated"), dig(data.run, "cost", "labelling")
    if isinstance(measured, dict) and isinstance(measured.get("node_hours"), int | float):
        cost = f"{measured['node_hours']:.3f} node-h, {measured.get('cpu_hours', 0):.3f} CPU-h measured ({measured.get('where')})"
        if isinstance(estimated, dict) and isinstance(estimated.get("node_hours"), int | float):
            cost += f"; estimated {estimated['node_hours']:.3f} node-h on {estimated.get('node_type')}"
        if isinstance(spend, dict) and spend.get("requests"):
            cost += f"; Gemini {spend['requests']} requests, ${spend.get('usd', 0):.4f}"
        rows.append(("compute", cost))
    weights = dig(data.run, "clustering", "fusion_weights")
    weights = weights if isinstance(weights, dict) and weights else {}
    coverage = {m: sc["coverage"] for m, sc in (dig(data.run, "clustering", "modality_scores") or {}).items()
                if isinstance(sc, dict) and isinstance(sc.get("coverage"), int | float) and sc["coverage"] < 1} if weights else {}
    return render(
        "summary.html.j2", rows=rows,
        weights=", ".join(f"{modalities.label(m)} {w:.2f}" if isinstance(w, int | float) else f"{modalities.label(m)} {w}"
                          for m, w in weights.items()),
        coverage=", ".join(f"{modalities.label(m)} {100 * c:.1f} %" for m, c in coverage.items()),
        failed=[{"name": r.name, "status": r.status, "error": r.error} for r in failed.head(MAX_CLIPS).itertuples()],
        failed_more=len(failed) - MAX_CLIPS, problems=data.problems[:MAX_PROBLEMS], problems_total=len(data.problems),
        problems_more=len(data.problems) - MAX_PROBLEMS)


def activities_html(data: RunData) -> Markup:
    seg = data.segments
    total = float((seg.t_end - seg.t_start).sum()) or 1.0
    desc = {}
    if data.labels is not None and "description" in data.labels:
        desc = {int(r.cluster): r.description for r in data.labels.itertuples() if isinstance(r.description, str)}
    keypoints = dig(data.evaluation or {}, "keypoints")
    keypoints = keypoints if isinstance(keypoints, dict) and keypoints else None
    propagated = keypoints is not None and any(isinstance(v, dict) and "propagated_share" in v for v in keypoints.values())
    groups = dig(data.run, "clip_groups")
    group_of = ({str(p): i for i, paths in enumerate(groups.get("paths") or []) for p in paths}  # as hierarchy.parquet clip_group
                if isinstance(groups, dict) and groups.get("count", 1) > 1 else {})
    paths = data.paths
    rows = []
    for c, g in [(c, seg[seg.cluster == c]) for c in data.activities] + [(-1, seg[seg.cluster < 0])]:
        if c < 0 and not len(g):
            continue
        dur = float((g.t_end - g.t_start).sum())
        row: list[Any] = [swatch(c, c if c >= 0 else ""), data.name(c) if c >= 0 else "noise",
                          str(len(g)), f"{dur / 60:.1f}", f"{100 * dur / total:.1f} %", str(g.clip_id.nunique())]
        if group_of:  # clips clustered in groups: which group's activity this is
            row.append(", ".join(sorted({str(group_of[p]) for p in g.clip_id.map(paths) if p in group_of})))
        if keypoints is not None:  # MediaPipe: share of looked-at frames with a hand / the body in view
            kp = keypoints.get(str(c)) or {}
            row += [pct_or_blank(kp.get("hand_rate")), pct_or_blank(kp.get("body_rate"))]
            if propagated:  # hands seen before propagation, and the share of hand frames that are propagated
                row += [pct_or_blank(kp.get("coverage_before")), pct_or_blank(kp.get("propagated_share"))]
        rows.append([*row, desc.get(c, "")])
    kp_header = ["hands seen", "body seen", *(["hands detected", "propagated"] if propagated else [])] if keypoints else []
    header = ["id", "label", "segments", "minutes", "share", "clips", *(["clip group"] if group_of else []), *kp_header, "description"]
    if not desc:
        header, rows = header[:-1], [r[:-1] for r in rows]
    hands = dig(data.evaluation or {}, "hands", "per_clip")
    names = {str(c): Path(str(p)).name for c, p in zip(data.clips.clip_id, data.clips.path)}
    hand_rows = [{"name": names.get(c, c), "before": pct_or_blank(v.get("coverage_before")), "after": pct_or_blank(v.get("coverage_after")),
                  "share": pct_or_blank(v.get("propagated_share"))}
                 for c, v in (hands.items() if isinstance(hands, dict) else []) if isinstance(v, dict)]
    return render("activities.html.j2", header=header, rows=rows, numeric=list(range(2, len(header) - (1 if desc else 0))),
                  hands=hand_rows)


def _phase_cells(phase: Any) -> list[Any]:
    if not isinstance(phase, dict) or "per_segment" not in phase:
        note = phase.get("note") if isinstance(phase, dict) else None
        return [not_computed(note)] * 4
    return [fmt(dig(phase, "per_segment", "ari")), fmt(dig(phase, "per_segment", "nmi")),
            fmt(dig(phase, "per_segment", "v_measure")), fmt(dig(phase, "duration_weighted", "ari"))]


def _entropy(cross: Any) -> Any:
    if not isinstance(cross, dict):
        return None
    return cross.get("entropy", cross.get("mixing_entropy"))


def _ablation_row(a: dict[str, Any], with_gt: bool) -> list[Any]:
    name = a.get("name", "?")
    m = a.get("modalities")
    row = [Markup('<span class="nw"><b>{}</b></span>' if is_fusion(name) else '<span class="nw">{}</span>').format(name),
           " + ".join(modalities.label(str(x)) for x in m) if isinstance(m, list) else fmt(None), fmt(a.get("k"), "d"), pct(a.get("noise_rate")),
           *_phase_cells(a.get("phase")), fmt(_entropy(a.get("cross_clip"))), pct(dig(a, "cross_clip", "multi_clip_share"))]
    if with_gt:
        row += [fmt(dig(a, "ground_truth", "ari")), fmt(dig(a, "ground_truth", "mof")), fmt(dig(a, "ground_truth", "f1@25"))]
    return row


def _evaluation(data: RunData) -> dict[str, Any]:
    ev = data.evaluation
    if ev is None:
        return {"computed": False}
    ablations = ev.get("ablations")
    variants = [a for a in ablations if isinstance(a, dict)] if isinstance(ablations, list) else []
    if not any(is_fusion(a.get("name")) for a in variants):  # the run itself, from the top level of eval.json
        variants.insert(0, {**ev, "name": "fusion (this run)", "modalities": dig(data.run, "config", "cluster", "modalities")})
    with_gt = any(isinstance(a.get("ground_truth"), dict) for a in variants)
    br = Markup("<br>")
    header = ["variant", "modalities", "k", "noise", "phase" + br + "ARI", "phase" + br + "NMI", "phase" + br + "V",
              "phase ARI" + br + "by duration", "cross-clip" + br + "entropy", "multi-clip" + br + "clusters"]
    if with_gt:
        header += ["truth" + br + "ARI", "truth" + br + "MoF", "truth" + br + "F1@25"]
    gt = ev.get("ground_truth")
    keys: list[str] = []
    if isinstance(gt, dict):
        keys = [k for k in ("ari", "nmi", "v_measure", "mof", "f1@10", "f1@25", "f1@50", "edit") if k in gt]
        keys += [k for k in gt if k not in keys and k != "n" and isinstance(gt[k], int | float)]
    return {"computed": True, "ablations_computed": isinstance(ablations, list), "phase_note": dig(ev, "phase", "note"),
            "header": header, "numeric": list(range(2, len(header))), "with_gt": with_gt,
            "rows": [_ablation_row(a, with_gt) for a in sorted(variants, key=lambda a: not is_fusion(a.get("name")))],
            "gt_keys": keys, "gt_values": [fmt(gt[k]) for k in keys] if keys else []}


def _cross_clip(data: RunData) -> dict[str, Any]:
    """Where each activity occurs: minutes per phase / clip x activity; plus per-clip clustering from eval.json."""
    seg, acts, ok = data.segments, data.activities, data.ok_clips
    out: dict[str, Any] = {"activity_header": [], "per_clip_rows": []}
    if acts and len(ok):
        minutes = seg.assign(m=(seg.t_end - seg.t_start) / 60)

        def cells(vals: pd.Series) -> list[Any]:
            return [("<0.1" if 0 < vals.get(c, 0.0) < 0.05 else f"{vals.get(c, 0.0):.1f}") if vals.get(c, 0.0) > 0 else ""
                    for c in acts + [-1]]

        by_phase = minutes.pivot_table(index="phase", columns="cluster", values="m", aggfunc="sum", fill_value=0.0)
        n_clips = ok.groupby("phase").size()
        by_clip = minutes.pivot_table(index="clip_id", columns="cluster", values="m", aggfunc="sum", fill_value=0.0)
        clip_rows = []
        for r in ok.head(MAX_CLIP_ROWS).itertuples():
            vals = by_clip.loc[r.clip_id] if r.clip_id in by_clip.index else pd.Series(dtype=float)
            clip_rows.append([r.name, r.phase, *cells(vals)])
        out.update(activity_header=[swatch(c, c) for c in acts] + ["noise"],
                   phase_rows=[[p, str(int(n_clips.get(p, 0))), *cells(by_phase.loc[p])] for p in by_phase.index],
                   clip_rows=clip_rows, clips_more=len(ok) - MAX_CLIP_ROWS,
                   spans=", ".join(f"{c}: {seg[seg.cluster == c].clip_id.nunique()}" for c in acts))
    per_clip = (data.evaluation or {}).get("per_clip")
    rows_in = [r for r in per_clip if isinstance(r, dict)] if isinstance(per_clip, list) else []
    if rows_in:
        df = pd.DataFrame(rows_in)
        if "variant" not in df:
            df["variant"] = "fusion"
        blank = pd.Series([None] * len(df), index=df.index)
        df["clip_name"] = [Path(p).name if isinstance(p, str) and p else str(c) for p, c in zip(df.get("path", blank), df.get("clip_id", blank))]
        variants = list(dict.fromkeys(df.variant.astype(str)))
        clips = list(dict.fromkeys(df["clip_name"]))
        cell = {(r.clip_name, str(r.variant)): Markup("{} ({})").format(fmt(getattr(r, "k", None), "d"), pct(getattr(r, "noise_rate", None)))
                for r in df.itertuples()}
        out.update(per_clip_variants=variants, per_clip_rows=[[c] + [cell.get((c, v), "") for v in variants] for c in clips[:MAX_CLIP_ROWS]],
                   per_clip_more=len(clips) - MAX_CLIP_ROWS)
    return out


def evaluation_html(data: RunData) -> Markup:
    """Ablations, ground truth, where each activity occurs, and each clip clustered on its own."""
    return render("evaluation.html.j2", **_evaluation(data), **_cross_clip(data))


def clip_sections_html(data: RunData, progress: Progress) -> tuple[Markup, Markup]:
    """(timeline strips, self-similarity + flow rhythm) for the first ``MAX_CLIPS`` ok clips."""
    ok = data.ok_clips
    shown = ok.head(MAX_CLIPS)
    clips = []
    by_clip: dict[str, pd.DataFrame] = {}
    try:  # the shown clips' frames in one read (per-clip files or compacted parts)
        frames_all = data.store.read_dataset("frames", schema.FRAMES, columns=["clip_id", "frame_idx", "t", "flow_mag_mean", "scene_embedding"],
                                             clip_ids=[str(c) for c in shown.clip_id]).to_pandas()
        by_clip = {str(c): g.sort_values("frame_idx").drop(columns=["clip_id", "frame_idx"]).reset_index(drop=True)
                   for c, g in frames_all.groupby("clip_id", sort=False)}
    except Exception as exc:  # each clip then says its frames are missing
        log.warning("report: frames/ could not be read: %s", exc)
    for i, clip in enumerate(shown.itertuples(index=False), 1):
        clip_s = pd.Series(clip._asdict())
        c = {"name": clip.name, "strip": plots.timeline_figure(data, clip_s), "signals": None, "error": None,
             "title": render("clip_title.html.j2", name=clip.name, phase=clip.phase, seconds=fmt(clip.duration_s, ".0f"),
                             partial=clip.status == "partial")}
        try:
            if str(clip.clip_id) not in by_clip:
                raise FileNotFoundError("no frames of this clip in frames/")
            frames = by_clip[str(clip.clip_id)]
            c["signals"] = plots.clip_signal_figure(data, clip_s, frames)
        except Exception as exc:  # one clip's missing frames table must not cost the report
            c["error"] = f"{layout.frames(clip.clip_id)}: {exc}"
            data.problems.append(c["error"])
            log.warning("report: %s", c["error"])
        clips.append(c)
        if i % 10 == 0:
            progress.say(f"report: {i}/{len(shown)} clips drawn")
    rest = ok.iloc[MAX_CLIPS:]
    rest_rows: list[list[Any]] = []
    if len(rest):
        seg = data.segments
        dominant = seg[seg.cluster >= 0].assign(d=seg.t_end - seg.t_start).groupby(["clip_id", "cluster"]).d.sum()
        top = dominant.groupby(level=0).idxmax().map(lambda x: x[1]) if len(dominant) else pd.Series(dtype=int)
        rest_rows = [[r.name, r.phase, fmt(r.duration_s, ".0f"), fmt(r.n_segments, "d") if pd.notna(r.n_segments) else fmt(None),
                      data.name(int(top[r.clip_id])) if r.clip_id in top.index else fmt(None)]
                     for r in rest.head(MAX_CLIP_ROWS).itertuples()]
    common = {"clips": clips, "rest_rows": rest_rows, "rest_more": len(rest) - MAX_CLIP_ROWS}
    legend = [{"cluster": c, "colour": activity_colour(c), "name": data.name(c)} for c in data.activities]
    return (render("timelines.html.j2", **common, legend=legend, n_ok=len(ok), max_clips=MAX_CLIPS),
            render("signals.html.j2", **common, ssm_max=plots.SSM_MAX))


def gallery_excerpts(data: RunData) -> list[tuple[Any, ...]]:
    """The excerpts :func:`gallery_html` will show (decoded in advance, where the footage is)."""
    out = []
    for c in data.activities[:MAX_ACTIVITIES]:
        for r in example_segments(data, c, GALLERY_SEGMENTS).itertuples():
            if r.clip_id in data.paths:
                out.append(data.excerpt(r.clip_id, r.t_start, r.t_end, GALLERY_FRAMES, THUMB_WIDTH))
    return out


def gallery_html(data: RunData, progress: Progress) -> Markup:
    """Per activity, keyframes of its typical segments, re-decoded from the clips."""
    from handclust.io.video import VideoError

    names = data.clip_names
    galleries = []
    for c in data.activities[:MAX_ACTIVITIES]:
        thumbs: list[dict[str, Any]] = []
        for r in example_segments(data, c, GALLERY_SEGMENTS).itertuples():
            caption = f"{names.get(r.clip_id, r.clip_id)} {r.t_start:.1f}-{r.t_end:.1f} s"
            try:
                frames = data.frames(r.clip_id, r.t_start, r.t_end, GALLERY_FRAMES, THUMB_WIDTH)
            except (VideoError, KeyError, OSError) as exc:
                msg = f"keyframes of {caption} could not be decoded: {exc}"
                data.problems.append(msg)
                log.warning("report: %s", msg)
                thumbs.append({"error": msg})
                continue
            thumbs.append({"error": None, "caption": caption,
                           "frames": [{"uri": reel.jpeg_data_uri(f), "width": f.shape[1], "height": f.shape[0]} for f in frames]})
        galleries.append({"cluster": c, "colour": activity_colour(c), "name": data.name(c), "description": data.description(c),
                          "thumbs": thumbs})
        progress.say(f"report: keyframes of activity {c}")
    return render("galleries.html.j2", galleries=galleries, n_activities=len(data.activities))


def reel_html(chapters: list[dict[str, Any]] | None, reel_error: str | None) -> Markup:
    if reel_error or not chapters:
        return render("reel.html.j2", error=reel_error, rows=None if chapters is None else [])
    rows = [[f"{int(t // 60)}:{t % 60:04.1f}", swatch(ch["cluster"], f"{ch['cluster']}: {ch['title']}"),
             "; ".join(f"{e['clip']} {e['t_start']:.1f}-{e['t_end']:.1f} s" for e in ch["excerpts"] if e["frames"])]
            for t, ch in zip(reel.chapter_starts(chapters), chapters)]
    ch = chapters[0]
    poster = reel.jpeg_data_uri(reel.title_card(ch["title"], ch["subtitle"], activity_colour(ch["cluster"])))
    return render("reel.html.j2", error=None, rows=rows, poster=poster, width=reel.REEL_SIZE[0], height=reel.REEL_SIZE[1])


SECTIONS = (("summary", "Summary", "Summary"), ("activities", "Activities", "Activities"), ("evaluation", "Evaluation", "Evaluation"),
            ("timelines", "Timelines", "Timelines"), ("map", "2-D map", "2-D map of all segments"),
            ("signals", "Per-clip signals", "Per-clip signals"), ("galleries", "Galleries", "Galleries"), ("reel", "Reel", "Preview reel"))


def render_page(data: RunData, parts: dict[str, Markup]) -> str:
    """The whole ``index.html``: ``parts`` holds each section's rendered body, keyed like :data:`SECTIONS` (id, link, title)."""
    return _ENV.get_template("index.html.j2").render(
        uri=data.store.uri, generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        nav=[(k, link) for k, link, _ in SECTIONS], sections=[(k, title, parts[k]) for k, _, title in SECTIONS])


def map_html(data: RunData) -> Markup:
    return render("map.html.j2", method=data.map_method(), uri=plots.map_figure(data))
