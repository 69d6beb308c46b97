"""Per-clip activity timelines: JSON for programs, PNG strips for people."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from handclust.colours import activity_colour
from handclust.core.clustering import Clustering
from handclust.io import layout
from handclust.io.storage import OutputStore
from handclust.progress import Progress


def _clip_records(clips_tbl: pa.Table, segments: pa.Table, clustering: Clustering) -> list[dict[str, Any]]:
    """One record per ok clip (clips.parquet order) with its segments in row order. Segments are
    grouped by one stable sort on the clip id, not filtered once per clip (3,000 clips x their rows)."""
    seg = segments.select(["clip_id", "segment_id", "t_start", "t_end", "boundary_detectors"])
    clip_ids = np.asarray(seg.column("clip_id").to_pylist(), dtype=object)
    ids, inv = np.unique(clip_ids, return_inverse=True)
    order = np.argsort(np.ravel(inv), kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(np.ravel(inv), minlength=len(ids)))])
    where = {str(c): i for i, c in enumerate(ids.tolist())}
    seg_ids = seg.column("segment_id").to_pylist()
    t_start = np.asarray(seg.column("t_start"), np.float64)
    t_end = np.asarray(seg.column("t_end"), np.float64)
    detectors = seg.column("boundary_detectors").to_pylist()
    labels, activity, moved = (np.asarray(a) for a in (clustering.labels, clustering.activity, clustering.reassigned))
    out = []
    for row in clips_tbl.select(["clip_id", "path", "phase", "status", "duration_s"]).to_pylist():
        if row["status"] not in ("ok", "partial"):
            continue
        g = where.get(row["clip_id"])
        rows = order[bounds[g]:bounds[g + 1]] if g is not None else np.zeros(0, np.int64)
        out.append({
            "clip_id": row["clip_id"], "path": row["path"], "name": Path(row["path"]).name, "phase": row["phase"],
            "duration_s": row["duration_s"],
            "segments": [
                {"segment_id": seg_ids[i], "t_start": round(float(t_start[i]), 3), "t_end": round(float(t_end[i]), 3),
                 "activity": int(activity[i]), "cluster": int(labels[i]), "reassigned": bool(moved[i]),
                 "boundary_detectors": detectors[i]}
                for i in rows.tolist()
            ],
        })
    return out


def draw_strip(ax: Any, segs: list[dict[str, Any]], duration: float, label: str) -> None:
    """One clip's segments as coloured bars on ``ax``: one bar collection per (activity, reassigned),
    not one per segment (a strip of hundreds of segments drew hundreds of artists)."""
    spans: dict[tuple[int, bool], list[tuple[float, float]]] = {}
    for s in segs:
        spans.setdefault((s["activity"], bool(s["reassigned"])), []).append((s["t_start"], s["t_end"] - s["t_start"]))
    for (act, moved), xr in spans.items():
        ax.broken_barh(xr, (0, 1), facecolors=activity_colour(act), hatch="//" if moved else None,
                       edgecolor="white", linewidth=0.3)
    ax.set_xlim(0, duration)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)


OVERVIEW_MAX_CLIPS = 60  # clips in timelines/timelines.png; every clip has its own PNG and JSON


def write_timelines(store: OutputStore, clips_tbl: pa.Table, segments: pa.Table, clustering: Clustering, prog: Progress,
                    names: dict[int, str] | None = None, overview_max: int = OVERVIEW_MAX_CLIPS) -> None:
    """Per clip: ``timelines/<clip_id>.json`` and ``.png``; ``timelines/timelines.png``: the first
    ``overview_max`` clips (its title says how many of how many; one figure of 3,000 strips took 95 s
    and 2.3 GB). The files are written by a
    pool of threads (on an object store each write is a round trip); the per-clip PNGs are
    rasterised directly (:func:`strip_png`).

    ``names`` maps activity ids to the labeller's names; unnamed ones show as ``activity N``.
    """
    from concurrent.futures import ThreadPoolExecutor

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    records = _clip_records(clips_tbl, segments, clustering)
    # A clip without segments this time (it failed, or left the footage) keeps no timeline of an earlier
    # run; the overview goes too when no clip has one. Deleted with the writer's threads (one request each).
    current = {rec["clip_id"] for rec in records}
    stale = [f"{layout.TIMELINES_DIR}/{name}" for suffix in (".json", ".png") for name in store.list(layout.TIMELINES_DIR, suffix)
             if name[: -len(suffix)] not in current and not (name == layout.TIMELINES_PNG.rsplit("/", 1)[1] and records)]
    if stale:
        with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
            list(pool.map(store.delete, stale))  # a failed delete raises here
    if not records:
        return
    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
        writes = [pool.submit(store.write_json, layout.timeline_json(rec['clip_id']), rec) for rec in records]
        shown = records[:overview_max]
        acts = sorted({s["activity"] for r in shown for s in r["segments"]})
        longest = max(float(r["duration_s"] or 1.0) for r in shown)
        height = 0.45 * len(shown) + 1.2 + (0.3 if len(records) > len(shown) else 0.0)
        fig, axes = plt.subplots(len(shown), 1, figsize=(12, height), squeeze=False)
        for ax, rec in zip(axes[:, 0], shown, strict=True):
            draw_strip(ax, rec["segments"], longest, rec["name"])
        axes[-1, 0].set_xlabel("time in clip (s)")
        for ax in axes[:-1, 0]:
            ax.set_xticks([])
        names = names or {}
        handles = [Patch(color=activity_colour(a), label=f"{a}: {names[a]}" if a in names else f"activity {a}") for a in acts]
        handles.append(Patch(facecolor="white", edgecolor="grey", hatch="//", label="noise, nearest activity"))
        fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
        top = 0.5 / height
        if len(records) > len(shown):
            fig.suptitle(f"the first {len(shown)} of {len(records)} clips; every clip: timelines/<clip_id>.png",
                         y=1 - 0.05 / height, fontsize=9)
            top = 0.8 / height
        fig.tight_layout(rect=(0, 0, 1, 1 - top))
        writes.append(pool.submit(store.write_bytes, layout.TIMELINES_PNG, figure_png(fig, dpi=110)))
        # Each clip's own strip is rasterised directly (strip_png): a matplotlib figure per clip took
        # ~0.1 s, i.e. 17 minutes for 10k clips.
        for rec in records:
            png = strip_png(rec["segments"], float(rec["duration_s"] or 1.0), f"{rec['name']}  ({rec['phase'] or 'no phase'})")
            writes.append(pool.submit(store.write_bytes, layout.timeline_png(rec['clip_id']), png))
            while len(writes) > 4 * WRITE_THREADS and writes[0].done():  # bounded: finished writes are dropped
                writes.pop(0).result()
        for w in writes:
            w.result()  # a failed write raises here


def _bgr(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[4:6], 16), int(h[2:4], 16), int(h[0:2], 16)


def _tick_step(duration: float, most: int = 10) -> float:
    """A round step (1, 2, 5 x 10^k seconds) giving at most ``most`` ticks over ``duration``."""
    raw = max(duration, 1e-6) / most
    base = 10 ** np.floor(np.log10(raw))
    return float(next(m * base for m in (1, 2, 5, 10) if m * base >= raw))


def strip_png(segs: list[dict[str, Any]], duration: float, title: str, width: int = 1200, height: int = 90) -> bytes:
    """One clip's timeline as a ``width`` x ``height`` PNG: the title, a bar per segment in its
    activity's colour (hatched white where noise was given its nearest activity), seconds below.
    Drawn with numpy and OpenCV (about a millisecond), the colours of :func:`activity_colour`."""
    import cv2

    img = np.full((height, width, 3), 255, np.uint8)
    x0, x1, y0, y1 = 10, width - 10, 26, 62
    scale = (x1 - x0) / max(duration, 1e-6)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    hatch = ((xx + yy) % 8) < 2
    for sg in segs:
        a = x0 + int(round(max(sg["t_start"], 0.0) * scale))
        b = max(a + 1, min(x1, x0 + int(round(sg["t_end"] * scale))))
        if a >= x1:
            continue
        img[y0:y1, a:b] = _bgr(activity_colour(sg["activity"]))
        if sg["reassigned"]:
            block = img[y0:y1, a:b]
            block[hatch[:, a - x0:b - x0]] = 255
        img[y0:y1, a] = 255  # the boundary, as the figures' white edges
    text = title.encode("ascii", "replace").decode()
    cv2.putText(img, text, (x0, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    step = _tick_step(duration)
    for t in np.arange(0.0, duration + 1e-9, step):
        x = x0 + int(round(t * scale))
        img[y1:y1 + 4, x] = 0
        cv2.putText(img, f"{t:g}", (min(x, x1 - 40), y1 + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "s", (x1 - 6, height - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError(f"could not encode the timeline of {title} as PNG")
    return buf.tobytes()


WRITE_THREADS = 8  # concurrent small-object writes (timelines, status): object stores answer each in ~10-50 ms


def figure_png(fig: Any, dpi: int = 100, close: bool = True) -> bytes:
    """A matplotlib figure as PNG bytes (closed unless ``close`` is False)."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if close:
        plt.close(fig)
    return buf.getvalue()


def save_figure(fig: Any, store: OutputStore, rel: str, dpi: int = 100) -> None:
    """Render a matplotlib figure to PNG bytes and write it atomically (any filesystem)."""
    store.write_bytes(rel, figure_png(fig, dpi=dpi))
