"""Per-clip activity timelines: JSON for programs, PNG strips for people."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from handclust.clustering import Clustering
from handclust.colours import activity_colour
from handclust.progress import Progress
from handclust.storage import OutputStore


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
    and 2.3 GB). The per-clip PNGs are drawn on one reused figure, and the files are written by a
    pool of threads (on an object store each write is a round trip).

    ``names`` maps activity ids to the labeller's names; unnamed ones show as ``activity N``.
    """
    from concurrent.futures import ThreadPoolExecutor

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    records = _clip_records(clips_tbl, segments, clustering)
    if not records:
        return
    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
        writes = [pool.submit(store.write_json, f"timelines/{rec['clip_id']}.json", rec) for rec in records]
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
        writes.append(pool.submit(store.write_bytes, "timelines/timelines.png", figure_png(fig, dpi=110)))
        # One figure for every clip's strip: a new figure per clip cost most of the time.
        fig, ax = plt.subplots(figsize=(12, 0.9))
        fig.subplots_adjust(left=0.02, right=0.99, bottom=0.38, top=0.72)  # what tight_layout chose, once, not per clip
        for rec in records:
            ax.clear()
            draw_strip(ax, rec["segments"], float(rec["duration_s"] or 1.0), "")
            ax.set_title(f"{rec['name']}  ({rec['phase'] or 'no phase'})", fontsize=9, loc="left")
            ax.set_xlabel("s", fontsize=8)
            writes.append(pool.submit(store.write_bytes, f"timelines/{rec['clip_id']}.png", figure_png(fig, dpi=100, close=False)))
            while len(writes) > 4 * WRITE_THREADS and writes[0].done():  # bounded: finished writes are dropped
                writes.pop(0).result()
        plt.close(fig)
        for w in writes:
            w.result()  # a failed write raises here


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
