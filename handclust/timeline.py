"""Per-clip activity timelines: JSON for programs, PNG strips for people."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from handclust.clustering import Clustering
from handclust.colours import activity_colour
from handclust.progress import Progress
from handclust.storage import OutputStore


def _clip_records(clips_tbl: pa.Table, segments: pa.Table, clustering: Clustering) -> list[dict[str, Any]]:
    seg = segments.select(["clip_id", "segment_id", "t_start", "t_end", "boundary_detectors"]).to_pandas()
    seg["cluster"], seg["activity"], seg["reassigned"] = clustering.labels, clustering.activity, clustering.reassigned
    out = []
    for row in clips_tbl.to_pylist():
        if row["status"] not in ("ok", "partial"):
            continue
        s = seg[seg.clip_id == row["clip_id"]]
        out.append({
            "clip_id": row["clip_id"], "path": row["path"], "name": Path(row["path"]).name, "phase": row["phase"],
            "duration_s": row["duration_s"],
            "segments": [
                {"segment_id": r.segment_id, "t_start": round(float(r.t_start), 3), "t_end": round(float(r.t_end), 3),
                 "activity": int(r.activity), "cluster": int(r.cluster), "reassigned": bool(r.reassigned),
                 "boundary_detectors": r.boundary_detectors}
                for r in s.itertuples(index=False)
            ],
        })
    return out


def draw_strip(ax: Any, segs: list[dict[str, Any]], duration: float, label: str) -> None:
    for s in segs:
        colour = activity_colour(s["activity"])
        ax.broken_barh([(s["t_start"], s["t_end"] - s["t_start"])], (0, 1), facecolors=[colour],
                       hatch="//" if s["reassigned"] else None, edgecolor="white", linewidth=0.3)
    ax.set_xlim(0, duration)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)


def write_timelines(store: OutputStore, clips_tbl: pa.Table, segments: pa.Table, clustering: Clustering, prog: Progress,
                    names: dict[int, str] | None = None) -> None:
    """Per clip: ``timelines/<clip_id>.json`` and ``.png``; all clips: ``timelines/timelines.png``.

    ``names`` maps activity ids to the labeller's names; unnamed ones show as ``activity N``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    records = _clip_records(clips_tbl, segments, clustering)
    # A clip without segments this time (it failed, or left the footage) keeps no timeline of an earlier run.
    current = {rec["clip_id"] for rec in records}
    for suffix in (".json", ".png"):
        for name in store.list("timelines", suffix):
            if name[: -len(suffix)] not in current and not (name == "timelines.png" and records):
                store.delete(f"timelines/{name}")
    for rec in records:
        store.write_json(f"timelines/{rec['clip_id']}.json", rec)
    if not records:
        return
    acts = sorted({s["activity"] for r in records for s in r["segments"]})
    longest = max(float(r["duration_s"] or 1.0) for r in records)
    fig, axes = plt.subplots(len(records), 1, figsize=(12, 0.45 * len(records) + 1.2), squeeze=False)
    for ax, rec in zip(axes[:, 0], records, strict=True):
        draw_strip(ax, rec["segments"], longest, rec["name"])
    axes[-1, 0].set_xlabel("time in clip (s)")
    for ax in axes[:-1, 0]:
        ax.set_xticks([])
    names = names or {}
    handles = [Patch(color=activity_colour(a), label=f"{a}: {names[a]}" if a in names else f"activity {a}") for a in acts]
    handles.append(Patch(facecolor="white", edgecolor="grey", hatch="//", label="noise, nearest activity"))
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (0.45 * len(records) + 1.2)))
    save_figure(fig, store, "timelines/timelines.png", dpi=110)
    for rec in records:
        fig, ax = plt.subplots(figsize=(12, 0.9))
        draw_strip(ax, rec["segments"], float(rec["duration_s"] or 1.0), "")
        ax.set_title(f"{rec['name']}  ({rec['phase'] or 'no phase'})", fontsize=9, loc="left")
        ax.set_xlabel("s", fontsize=8)
        fig.tight_layout()
        save_figure(fig, store, f"timelines/{rec['clip_id']}.png", dpi=100)


def save_figure(fig: Any, store: OutputStore, rel: str, dpi: int = 100) -> None:
    """Render a matplotlib figure to PNG bytes and write it atomically (any filesystem)."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    store.write_bytes(rel, buf.getvalue())
