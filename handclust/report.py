"""The report a person reads: ``OUT/report/index.html`` and the preview reel ``OUT/report/reel.mp4``.

``index.html`` is one self-contained file (plots as base64 PNG, keyframes as base64 JPEG, no
scripts, no network) that opens from disk: the run summary, the activities with their names, the
ablation and cross-clip tables, per-clip timeline strips (one strip per modality variant on a
shared time axis, noise in black), the 2-D map of all segments, per-clip scene self-similarity and
flow-rhythm plots, and a keyframe gallery per activity. ``reel.mp4`` shows, per activity, a title
card and a few seconds of three typical segments.

Raw frames are never stored, so keyframes and reel frames are re-decoded from the clips with
:func:`handclust.video.read_range`. Everything written by a model or taken from a file name is
HTML-escaped. Optional inputs (``eval.json`` keys, ``labels.parquet``, ``ablations.parquet``)
may be missing: their place says "not computed". Large runs stay quick to open: thumbnails,
downsampled plots, and at most ``max_clips`` clips in the per-clip sections (the rest in a table).
"""

from __future__ import annotations

import base64
import functools
import html
import io
import logging
import math
import textwrap
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from handclust import schema
from handclust.progress import Progress
from handclust.storage import OutputStore

log = logging.getLogger(__name__)

MAX_CLIPS = 50  # clips drawn in the per-clip sections; the rest are listed in a table
MAX_CLIP_ROWS = 2000  # rows of that table
MAX_ACTIVITIES = 60  # activities with a gallery and a reel chapter
MAX_PROBLEMS = 50  # problems listed (a moved footage folder makes one per keyframe)
MAP_MAX_POINTS = 20_000  # segments drawn on the 2-D map
SSM_MAX = 300  # self-similarity matrices are at most SSM_MAX x SSM_MAX
FLOW_MAX_POINTS = 1500  # samples of a flow-magnitude curve
THUMB_WIDTH = 240
GALLERY_SEGMENTS = 3
GALLERY_FRAMES = 3
REEL_SEGMENTS = 3
REEL_SEGMENT_S = 3.0
REEL_TITLE_S = 1.5
REEL_FPS = 10
REEL_SIZE = (480, 270)  # even, for yuv420p
DPI = 80
NOT_COMPUTED = "not computed"
PHASE_NONE = "no phase"


def esc(value: Any) -> str:
    """Text for HTML (labels come from a VLM, names from files: never trusted)."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: Any, spec: str = ".2f") -> str:
    """A number for a table cell, or ``not computed`` for a missing / NaN value."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) or not math.isfinite(float(value)):
        return f'<span class="nc">{NOT_COMPUTED}</span>'
    if isinstance(value, int | np.integer) and spec.endswith("f"):
        return str(int(value))
    try:
        return format(value, spec)
    except ValueError:  # e.g. "d" given a float
        return format(float(value), ".2f")


def pct(value: Any) -> str:
    text = fmt(value)
    return fmt(100 * float(value), ".1f") + " %" if "nc" not in text else text


def dig(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...`` or None when any level is missing."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def mpl_text(text: Any, limit: int = 40) -> str:
    """Text for a matplotlib label: no mathtext from a stray ``$``, bounded length."""
    s = str(text)
    return (s[: limit - 1] + "…" if len(s) > limit else s).replace("$", r"\$")


@functools.lru_cache(maxsize=1024)
def colour_hex(cluster: int) -> str:
    """Colour of an activity: tab10 for 0-9 (as in timelines/), then tab10's light tints, then evenly spread hues."""
    import colorsys

    import matplotlib
    from matplotlib.colors import to_hex

    c = int(cluster)
    if c < 0:
        return "#000000"
    if c < 10:
        return to_hex(matplotlib.colormaps["tab10"](c))
    if c < 20:
        return to_hex(matplotlib.colormaps["tab20"](2 * (c - 10) + 1))
    return to_hex(colorsys.hsv_to_rgb((c * 0.618033988749895) % 1.0, 0.55, 0.85))


def phase_colours(phases: Iterable[str]) -> dict[str, str]:
    import matplotlib
    from matplotlib.colors import to_hex

    cmap = matplotlib.colormaps["Set2"]
    named = sorted(p for p in set(phases) if p != PHASE_NONE)
    out = {p: to_hex(cmap(i % cmap.N)) for i, p in enumerate(named)}
    out[PHASE_NONE] = "#9e9e9e"
    return out


def png_data_uri(fig: Any, dpi: int = DPI) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def jpeg_data_uri(frame: npt.NDArray[np.uint8], quality: int = 80) -> str:
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


def pooled(x: npt.NDArray[np.floating], n_max: int) -> npt.NDArray[np.float64]:
    """Average consecutive rows into at most ``n_max`` bins: ``(n, ...) -> (min(n, n_max), ...)``."""
    if len(x) <= n_max:
        return np.asarray(x, dtype=np.float64)
    edges = np.linspace(0, len(x), n_max + 1).astype(int)
    sums = np.add.reduceat(np.asarray(x, dtype=np.float64), edges[:-1], axis=0)
    counts = np.diff(edges).reshape((-1,) + (1,) * (x.ndim - 1))
    return sums / counts


def self_similarity(emb: npt.NDArray[np.floating], n_max: int = SSM_MAX) -> npt.NDArray[np.float64]:
    """Cosine self-similarity of per-frame vectors ``(n, d)``, pooled to at most ``n_max`` frames."""
    x = pooled(emb, n_max)
    x = x - x.mean(axis=0, keepdims=True)  # centre: raw histogram features are all alike
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)
    return x @ x.T


# ---------------------------------------------------------------------------------------- data


@dataclass
class RunData:
    """Everything the report reads from a run's outputs (pandas frames; optional parts may be None)."""

    store: OutputStore
    clips: pd.DataFrame
    segments: pd.DataFrame  # ok clips' segments, with cluster / probability / activity / reassigned / phase
    run: dict[str, Any]
    evaluation: dict[str, Any] | None
    labels: pd.DataFrame | None
    embedding: pd.DataFrame | None
    ablations: pd.DataFrame | None
    names: dict[int, str] = field(default_factory=dict)  # cluster -> label (only labelled ones)
    problems: list[str] = field(default_factory=list)

    @functools.cached_property
    def missing_clips(self) -> set[str]:
        """Ok clips whose file is no longer where the run found it (local paths only): no keyframes from them."""
        ok = self.ok_clips
        return {c for c, p in zip(ok.clip_id, ok.path) if isinstance(p, str) and "://" not in p and not Path(p).exists()}

    @functools.cached_property
    def ablation_strips(self) -> dict[str, pd.DataFrame]:
        """Per clip id: the rows of ``ablations`` other than the run's own (fusion) variant."""
        if self.ablations is None:
            return {}
        ab = self.ablations[~self.ablations.variant.astype(str).str.startswith("fusion")]
        ab = ab.merge(self.segments[["segment_id", "clip_id"]], on="segment_id", how="inner", suffixes=("_ab", ""))
        return {str(c): g for c, g in ab.groupby("clip_id", sort=False)}

    @property
    def ok_clips(self) -> pd.DataFrame:
        return self.clips[self.clips.status.isin(["ok", "partial"])]

    @property
    def activities(self) -> list[int]:
        return sorted(int(c) for c in self.segments.cluster.unique() if c >= 0)

    def name(self, cluster: int) -> str:
        return self.names.get(int(cluster)) or f"activity {int(cluster)}"


SEGMENT_COLUMNS = ["clip_id", "segment_id", "seg_idx", "t_start", "t_end", "boundary_detectors", "rhythm_period_s",
                   "rhythm_strength", "repetition_period_s"]


def _read_optional(store: OutputStore, rel: str, problems: list[str]) -> pd.DataFrame | None:
    if not store.exists(rel):
        return None
    try:
        return store.read_table(rel).to_pandas()
    except Exception as exc:  # a broken optional table must not cost the whole report
        problems.append(f"{rel} could not be read: {exc}")
        log.warning("report: %s could not be read: %s", rel, exc)
        return None


def align_to_fused(ablations: pd.DataFrame, segments: pd.DataFrame) -> pd.DataFrame:
    """Add ``shown``: each variant's cluster renamed to the fused activity it shares most time with.

    Ablation cluster ids are arbitrary; matched one-to-one to the fused clusters (Hungarian, on
    shared seconds), the same colour means the same activity in every strip when the variants
    agree. Clusters left unmatched get fresh ids after the fused ones; noise stays -1.
    """
    from scipy.optimize import linear_sum_assignment

    seconds = segments.set_index("segment_id").eval("t_end - t_start")
    fused = segments.set_index("segment_id").cluster
    ab = ablations.reset_index(drop=True)
    ab["cluster"] = ab.cluster.astype(int)
    ab["shown"] = ab.cluster
    next_id = int(max(fused.max() if len(fused) else -1, -1)) + 1
    for _, g in ab.groupby("variant", sort=False):
        f = fused.reindex(g.segment_id).to_numpy()
        w = seconds.reindex(g.segment_id).fillna(0.0).to_numpy()
        own = g.cluster.to_numpy()
        ids_v = np.unique(own[own >= 0])
        ids_f = np.unique(f[np.isfinite(f) & (f >= 0)]).astype(int) if len(f) else np.zeros(0, int)
        mapping: dict[int, int] = {-1: -1}
        if len(ids_v) and len(ids_f):
            overlap = np.zeros((len(ids_v), len(ids_f)))
            for i, a in enumerate(ids_v):
                for j, b in enumerate(ids_f):
                    overlap[i, j] = w[(own == a) & (f == b)].sum()
            rows, cols = linear_sum_assignment(-overlap)
            mapping.update({int(ids_v[r]): int(ids_f[c]) for r, c in zip(rows, cols) if overlap[r, c] > 0})
        extra = next_id
        for a in ids_v:
            if int(a) not in mapping:
                mapping[int(a)] = extra
                extra += 1
        ab.loc[g.index, "shown"] = [mapping.get(int(c), -1) for c in own]
    return ab


def load_run(store: OutputStore) -> RunData:
    """Read the tables and JSON files of a finished run (``clips.parquet`` at least)."""
    if not store.exists("clips.parquet"):
        raise FileNotFoundError(f"{store.uri}/clips.parquet not found: is {store.uri} a HandClust output directory?")
    problems: list[str] = []
    clips_tbl = store.read_table("clips.parquet")
    clips = clips_tbl.to_pandas()
    clips["name"] = [Path(str(p)).name for p in clips.path]
    clips["phase"] = clips.phase.fillna(PHASE_NONE).replace("", PHASE_NONE)
    run = store.read_json("run.json") if store.exists("run.json") else {}
    evaluation = store.read_json("eval.json") if store.exists("eval.json") else None

    parts = [store.read_table(f"segments/{n}").select(SEGMENT_COLUMNS) for n in store.list("segments", ".parquet")]
    seg_tbl = pa.concat_tables(parts) if parts else schema.SEGMENTS.empty_table().select(SEGMENT_COLUMNS)
    ok = clips_tbl.filter(pc.is_in(clips_tbl.column("status"), value_set=pa.array(["ok", "partial"]))).column("clip_id")
    seg = seg_tbl.filter(pc.is_in(seg_tbl.column("clip_id"), value_set=ok)).to_pandas()
    seg = seg.sort_values(["clip_id", "seg_idx"], kind="stable").reset_index(drop=True)
    clusters = _read_optional(store, "clusters.parquet", problems)
    if clusters is not None and len(clusters):
        seg = seg.merge(clusters.drop(columns=["clip_id"]), on="segment_id", how="left")
    for col, default in (("cluster", -1), ("activity", -1), ("probability", 0.0), ("reassigned", False)):
        if col not in seg:
            seg[col] = default
        seg[col] = seg[col].fillna(default)
    seg["cluster"] = seg.cluster.astype(int)
    seg["activity"] = seg.activity.astype(int)
    seg["phase"] = seg.clip_id.map(dict(zip(clips.clip_id, clips.phase))).fillna(PHASE_NONE)

    labels = _read_optional(store, "labels.parquet", problems)
    names: dict[int, str] = {}
    if labels is not None and "label" in labels:
        names = {int(r.cluster): str(r.label) for r in labels.itertuples() if isinstance(r.label, str) and r.label}
    ablations = _read_optional(store, "ablations.parquet", problems)
    if ablations is not None and not {"segment_id", "variant", "cluster"} <= set(ablations.columns):
        problems.append("ablations.parquet lacks segment_id / variant / cluster columns; per-modality strips not drawn")
        ablations = None
    if ablations is not None:
        ablations = align_to_fused(ablations, seg)
    return RunData(store, clips, seg, run, evaluation, labels, _read_optional(store, "embedding_2d.parquet", problems),
                   ablations, names, problems)


# ---------------------------------------------------------------------------------------- plots


def _strip(ax: Any, starts: Sequence[float], ends: Sequence[float], colours: Sequence[str]) -> None:
    ax.broken_barh(list(zip(starts, np.subtract(ends, starts))), (0, 1), facecolors=list(colours), edgecolor="none")
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def timeline_figure(data: RunData, clip: pd.Series) -> str:
    """Strips of one clip, one per variant (fused first), on a shared time axis; noise in black."""
    from matplotlib.figure import Figure

    seg = data.segments[data.segments.clip_id == clip.clip_id]
    strips: list[tuple[str, pd.DataFrame]] = [("fused", seg.assign(c=seg.cluster))]
    if data.ablations is not None:
        ab = data.ablation_strips.get(clip.clip_id, data.ablations.iloc[:0])
        times = seg.set_index("segment_id")[["t_start", "t_end"]]
        for variant in pd.unique(ab.variant):
            v = ab[ab.variant == variant].join(times, on="segment_id", how="inner")
            strips.append((str(variant), v.assign(c=v.shown.astype(int))))
    duration = float(clip.duration_s) if pd.notna(clip.duration_s) and clip.duration_s > 0 else float(seg.t_end.max() or 1.0)
    fig = Figure(figsize=(12, 0.26 * len(strips) + 0.55))
    axes = fig.subplots(len(strips), 1, sharex=True, squeeze=False)
    for ax, (name, s) in zip(axes[:, 0], strips, strict=True):
        _strip(ax, s.t_start.to_numpy(), s.t_end.to_numpy(), [colour_hex(c) for c in s.c])
        ax.set_ylabel(mpl_text(name, 16), rotation=0, ha="right", va="center", fontsize=8)
    for ax in axes[:-1, 0]:
        ax.spines["bottom"].set_visible(False)
        ax.tick_params(bottom=False)
    axes[-1, 0].set_xlim(0, duration)
    axes[-1, 0].tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("time in clip (s)", fontsize=7, labelpad=1)
    fig.subplots_adjust(left=0.09, right=0.99, top=0.97, bottom=0.55 / (0.26 * len(strips) + 0.55) + 0.02, hspace=0.15)
    return png_data_uri(fig)


def map_figure(data: RunData) -> str | None:
    """The 2-D map of all segments, coloured by cluster (left) and by phase (right)."""
    from matplotlib.figure import Figure

    emb = data.embedding
    if emb is None or not len(emb):
        return None
    emb = emb.merge(data.segments[["segment_id", "phase"]], on="segment_id", how="left")
    emb["phase"] = emb.phase.fillna(PHASE_NONE)
    if len(emb) > MAP_MAX_POINTS:
        emb = emb.sample(MAP_MAX_POINTS, random_state=0)
    size = float(np.clip(3000 / max(len(emb), 1), 2, 30))
    fig = Figure(figsize=(10, 4.4))
    a, b = fig.subplots(1, 2)
    noise = emb[emb.cluster < 0]
    a.scatter(noise.x, noise.y, s=size * 0.6, c="black", marker="x", linewidths=0.6, label="noise")
    members = emb[emb.cluster >= 0]
    a.scatter(members.x, members.y, s=size, c=[colour_hex(c) for c in members.cluster], alpha=0.85, linewidths=0)
    for c, g in members.groupby("cluster"):
        a.annotate(str(c), (g.x.median(), g.y.median()), fontsize=9, weight="bold", ha="center", va="center",
                   bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": colour_hex(int(c)), "alpha": 0.8})
    a.set_title("by cluster (numbers: activity id, x: noise)", fontsize=9)
    colours = phase_colours(emb.phase)
    for p, g in emb.groupby("phase"):
        b.scatter(g.x, g.y, s=size, c=colours[p], label=mpl_text(p, 24), alpha=0.85, linewidths=0)
    b.legend(fontsize=7, markerscale=max(1.0, 30 / size) ** 0.5, loc="best", framealpha=0.8)
    b.set_title("by phase (from the file name)", fontsize=9)
    for ax in (a, b):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return png_data_uri(fig)


def clip_signal_figure(data: RunData, clip: pd.Series, frames: pd.DataFrame) -> str:
    """Scene self-similarity (left) and flow magnitude + rhythm per segment (right) of one clip."""
    from matplotlib.figure import Figure

    seg = data.segments[data.segments.clip_id == clip.clip_id]
    t = frames.t.to_numpy(dtype=float)
    duration = float(max(t[-1] if len(t) else 0.0, seg.t_end.max() if len(seg) else 0.0, 1e-3))
    fig = Figure(figsize=(12, 2.9))
    grid = fig.add_gridspec(2, 2, width_ratios=(1, 4.2), height_ratios=(1.4, 1), wspace=0.17, hspace=0.12,
                            left=0.03, right=0.99, top=0.9, bottom=0.14)
    ax_ssm = fig.add_subplot(grid[:, 0])
    emb = np.stack(frames.scene_embedding.to_numpy()) if len(frames) else np.zeros((0, 1))
    # One collection per kind of mark (not one artist per segment): an hour-long clip has hundreds of segments.
    starts, ends = seg.t_start.to_numpy(dtype=float), seg.t_end.to_numpy(dtype=float)
    inner = starts[starts > 0]
    if len(emb) >= 2:
        ax_ssm.imshow(self_similarity(emb), cmap="magma", vmin=-0.2, vmax=1.0, extent=(0, duration, duration, 0),
                      interpolation="nearest")
        ax_ssm.hlines(inner, 0, duration, color="white", lw=0.4, alpha=0.6)
        ax_ssm.vlines(inner, 0, duration, color="white", lw=0.4, alpha=0.6)
    ax_ssm.set_title("scene self-similarity (s)", fontsize=8)
    ax_ssm.tick_params(labelsize=7)
    ax_flow = fig.add_subplot(grid[0, 1])
    ax_rh = fig.add_subplot(grid[1, 1], sharex=ax_flow)
    flow = pooled(np.nan_to_num(frames.flow_mag_mean.to_numpy(dtype=float)), FLOW_MAX_POINTS)
    ax_flow.plot(pooled(t, FLOW_MAX_POINTS), flow, lw=0.7, color="#333")
    y_top = float(flow.max()) * 1.08 if len(flow) and flow.max() > 0 else 1.0
    ax_flow.broken_barh(list(zip(starts, ends - starts)), (0, y_top), facecolors=[colour_hex(c) for c in seg.cluster],
                        alpha=0.18, linewidth=0)
    ax_flow.set_ylim(0, y_top)
    for ax in (ax_flow, ax_rh):
        ax.vlines(inner, 0, 1, transform=ax.get_xaxis_transform(), color="#1565c0", lw=0.6, alpha=0.7)
    ax_flow.set_ylabel("flow\n(px/frame)", fontsize=7)
    ax_flow.tick_params(labelsize=7, labelbottom=False)
    ax_flow.set_title("flow magnitude, segment boundaries (blue), segments shaded by cluster", fontsize=8)
    period = seg.rhythm_period_s.to_numpy(dtype=float)
    strength = np.nan_to_num(seg.rhythm_strength.to_numpy(dtype=float))
    top = float(np.nanmax(period, initial=1.0)) if np.isfinite(period).any() else 1.0
    has = np.isfinite(period)
    ax_rh.hlines(period[has], starts[has], ends[has], color="#2e7d32", linewidths=1 + 5 * np.minimum(strength[has] / 0.4, 1.0))
    for i in np.flatnonzero(has & ((ends - starts) / duration >= 0.1)):  # label only where it fits
        ax_rh.text((starts[i] + ends[i]) / 2, period[i] + 0.06 * top, f"{period[i]:.1f} s / {strength[i]:.2f}", fontsize=7,
                   ha="center", va="bottom", color="#1b5e20")
    rep = seg.repetition_period_s.to_numpy(dtype=float)
    ax_rh.plot(((starts + ends) / 2)[np.isfinite(rep)], rep[np.isfinite(rep)], "o", ms=3.5, color="#ef6c00", linestyle="none")
    ax_rh.set_ylim(0, top * 1.45)
    ax_rh.set_xlim(0, duration)
    ax_rh.set_ylabel("rhythm\nperiod (s)", fontsize=7)
    ax_rh.set_xlabel("time in clip (s); line width = rhythm strength, label period/strength, dot = agreed repetition period",
                     fontsize=7, labelpad=1)
    ax_rh.tick_params(labelsize=7)
    return png_data_uri(fig)


# ---------------------------------------------------------------------------------------- examples


def typical_segments(data: RunData, cluster: int, n: int) -> pd.DataFrame:
    """The ``n`` most typical segments of a cluster.

    The labeller's choice (``labels.parquet`` ``segment_ids``) when there is one, so the report
    shows what the model saw; else the highest HDBSCAN membership, nearest the cluster's centre
    on the 2-D map, taking one segment per clip before a second from the same clip.
    """
    members = data.segments[(data.segments.cluster == cluster) & ~data.segments.clip_id.isin(data.missing_clips)]
    if data.labels is not None and "segment_ids" in data.labels:
        row = data.labels[data.labels.cluster == cluster]
        ids = list(row.segment_ids.iloc[0]) if len(row) and row.segment_ids.iloc[0] is not None else []
        chosen = members.set_index("segment_id").reindex([i for i in ids if i in set(members.segment_id)])
        if len(chosen):
            return chosen.reset_index().head(n)
    score = members.probability.to_numpy(dtype=float)
    if data.embedding is not None and len(members):
        xy = members[["segment_id"]].merge(data.embedding[["segment_id", "x", "y"]], on="segment_id", how="left")
        pts = xy[["x", "y"]].to_numpy(dtype=float)
        if np.isfinite(pts).all():
            d = np.linalg.norm(pts - np.median(pts, axis=0), axis=1)
            score = score - d / max(float(d.max()), 1e-9)
    ranked = members.assign(score=score).sort_values("score", ascending=False, kind="stable")
    ranked = ranked.assign(rank_in_clip=ranked.groupby("clip_id").cumcount())
    return ranked.sort_values(["rank_in_clip", "score"], ascending=[True, False], kind="stable").head(n)


def _paths(data: RunData) -> dict[str, str]:
    return dict(zip(data.clips.clip_id, data.clips.path))


def gallery_html(data: RunData, progress: Progress) -> str:
    from handclust.video import VideoError, read_range

    acts = data.activities
    paths = _paths(data)
    names = dict(zip(data.clips.clip_id, data.clips.name))
    parts: list[str] = []
    if len(acts) > MAX_ACTIVITIES:
        parts.append(f'<p class="note">{len(acts)} activities; galleries of the first {MAX_ACTIVITIES} shown.</p>')
    for c in acts[:MAX_ACTIVITIES]:
        thumbs: list[str] = []
        for r in typical_segments(data, c, GALLERY_SEGMENTS).itertuples():
            caption = f"{names.get(r.clip_id, r.clip_id)} {r.t_start:.1f}-{r.t_end:.1f} s"
            try:
                frames = read_range(paths[r.clip_id], float(r.t_start), float(r.t_end), GALLERY_FRAMES, width=THUMB_WIDTH)
            except (VideoError, KeyError, OSError) as exc:
                msg = f"keyframes of {caption} could not be decoded: {exc}"
                data.problems.append(msg)
                log.warning("report: %s", msg)
                thumbs.append(f'<div class="missing">{esc(msg)}</div>')
                continue
            imgs = "".join(f'<img src="{jpeg_data_uri(f)}" width="{f.shape[1]}" height="{f.shape[0]}" alt="{esc(caption)}">'
                           for f in frames)
            thumbs.append(f'<figure class="seg">{imgs}<figcaption>{esc(caption)}</figcaption></figure>')
        if not thumbs:
            thumbs.append(f'<p class="note">No keyframes: {NOT_COMPUTED} (no member segment in a clip that is still readable).</p>')
        desc = ""
        if data.labels is not None and "description" in data.labels:
            d = data.labels[data.labels.cluster == c].description
            desc = str(d.iloc[0]) if len(d) and isinstance(d.iloc[0], str) else ""
        parts.append(
            f'<div class="gallery" id="gallery-{c}"><h3><span class="sw" style="background:{colour_hex(c)}"></span>'
            f'{c}: {esc(data.name(c))}</h3>' + (f'<p class="desc">{esc(desc)}</p>' if desc else "")
            + "".join(thumbs) + "</div>")
        progress.say(f"report: keyframes of activity {c}")
    if not acts:
        parts.append(f'<p class="note">No activities found: no gallery ({NOT_COMPUTED}).</p>')
    return "".join(parts)


# ---------------------------------------------------------------------------------------- reel


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "replace").decode()


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def title_card(title: str, subtitle: str, colour: str, size: tuple[int, int] = REEL_SIZE) -> npt.NDArray[np.uint8]:
    from PIL import Image, ImageDraw

    h = size[1]
    img = Image.new("RGB", size, (20, 22, 28))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 12, h), fill=colour)
    font, small = _font(30), _font(16)
    lines = textwrap.wrap(_ascii(title), 26)[:3] or [""]
    y = h // 2 - 20 * len(lines)
    for line in lines:
        draw.text((34, y), line, font=font, fill=(245, 245, 245))
        y += 38
    draw.text((34, y + 6), _ascii(subtitle), font=small, fill=(180, 180, 190))
    return np.asarray(img, dtype=np.uint8)


def letterbox(frame: npt.NDArray[np.uint8], caption: str, size: tuple[int, int] = REEL_SIZE) -> npt.NDArray[np.uint8]:
    import cv2
    from PIL import Image, ImageDraw

    w, h = size
    fh, fw = frame.shape[:2]
    scale = min(w / fw, h / fh)
    nw, nh = max(2, int(fw * scale)), max(2, int(fh * scale))
    canvas = np.zeros((h, w, 3), np.uint8)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    canvas[y0:y0 + nh, x0:x0 + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, h - 22, w, h), fill=(0, 0, 0))
    draw.text((6, h - 19), _ascii(caption)[:70], font=_font(13), fill=(235, 235, 235))
    return np.asarray(img, dtype=np.uint8)


def reel_plan(data: RunData) -> list[dict[str, Any]]:
    """Chapters of the reel: per activity a title card and up to three segment excerpts."""
    names = dict(zip(data.clips.clip_id, data.clips.name))
    chapters = []
    for c in data.activities[:MAX_ACTIVITIES]:
        members = data.segments[data.segments.cluster == c]
        excerpts = []
        for r in typical_segments(data, c, REEL_SEGMENTS).itertuples():
            d = min(REEL_SEGMENT_S, float(r.t_end - r.t_start))
            t0 = float(r.t_start) + (float(r.t_end - r.t_start) - d) / 2  # the middle of the segment
            excerpts.append({"clip_id": r.clip_id, "clip": names.get(r.clip_id, r.clip_id), "segment_id": r.segment_id,
                             "t_start": round(t0, 3), "t_end": round(t0 + d, 3), "frames": max(1, round(d * REEL_FPS))})
        chapters.append({"cluster": c, "title": data.name(c), "labelled": c in data.names,
                         "subtitle": (f"activity {c}: " if c in data.names else "")
                         + f"{len(members)} segments, {(members.t_end - members.t_start).sum() / 60:.1f} min, "
                         f"{members.clip_id.nunique()} clips",
                         "title_frames": round(REEL_TITLE_S * REEL_FPS), "excerpts": excerpts})
    return chapters


def write_reel(data: RunData, chapters: list[dict[str, Any]], rel: str, progress: Progress) -> float:
    """Encode the reel (H.264, yuv420p) to ``rel`` in the store; returns its duration in seconds."""
    import tempfile

    import av

    from handclust.video import VideoError, read_range

    paths = _paths(data)
    store = data.store
    if store.local:
        tmp_dir = None
        tmp = store.local_path(rel).with_name(f".reel.{uuid.uuid4().hex[:8]}.tmp.mp4")
    else:
        tmp_dir = tempfile.TemporaryDirectory()
        tmp = Path(tmp_dir.name) / "reel.mp4"
    n_written = 0
    try:
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=REEL_FPS)
            stream.width, stream.height, stream.pix_fmt = REEL_SIZE[0], REEL_SIZE[1], "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "26"}

            def put(img: npt.NDArray[np.uint8], repeat: int = 1) -> None:
                nonlocal n_written
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                for _ in range(repeat):
                    for packet in stream.encode(frame):
                        container.mux(packet)
                    n_written += 1

            for ch in chapters:
                put(title_card(ch["title"], ch["subtitle"], colour_hex(ch["cluster"])), ch["title_frames"])
                for ex in ch["excerpts"]:
                    caption = f"{ch['cluster']}: {ch['title']} | {ex['clip']} {ex['t_start']:.1f}-{ex['t_end']:.1f} s"
                    try:
                        frames = read_range(paths[ex["clip_id"]], ex["t_start"], ex["t_end"], ex["frames"], width=REEL_SIZE[0])
                    except (VideoError, KeyError, OSError) as exc:
                        msg = f"reel: {ex['clip']} {ex['t_start']:.1f} s could not be decoded: {exc}"
                        data.problems.append(msg)
                        log.warning("report: %s", msg)
                        ex["frames"] = 0
                        continue
                    for f in frames:
                        put(letterbox(f, caption))
                progress.say(f"report: reel chapter for activity {ch['cluster']}")
            if n_written == 0:
                put(title_card("no activities found", "see index.html", "#9e9e9e"), round(REEL_TITLE_S * REEL_FPS))
            for packet in stream.encode():
                container.mux(packet)
        if store.local:
            tmp.replace(store.local_path(rel))
        else:
            store.write_bytes(rel, tmp.read_bytes())
    finally:
        if store.local and tmp.exists():
            tmp.unlink()
        if tmp_dir is not None:
            tmp_dir.cleanup()
    return n_written / REEL_FPS


# ---------------------------------------------------------------------------------------- html

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#263238;color:#eceff1;padding:14px 28px}header h1{margin:0 0 4px;font-size:22px}
header .meta{margin:0;font-size:12px;color:#b0bec5;word-break:break-all}
nav{margin-top:8px}nav a{color:#80cbc4;margin-right:14px;font-size:13px;text-decoration:none}
main{padding:8px 28px 40px;max-width:1180px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:10px 18px 16px;margin:16px 0}
h2{font-size:18px;margin:6px 0 10px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px}
th,td{border-bottom:1px solid #e6e6e6;padding:3px 8px;text-align:left;vertical-align:top}td.n{white-space:nowrap}
th{background:#f3f5f7;font-weight:600;white-space:nowrap}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.kv td:first-child{color:#555;white-space:nowrap}
details.warn summary{color:#b71c1c;font-weight:600;cursor:pointer;margin:10px 0 4px}details.warn ul{color:#333}
.nc{color:#9e9e9e;font-style:italic;white-space:normal}.nw{white-space:nowrap}.note{color:#666;font-size:13px}.warn{color:#b71c1c}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px;vertical-align:-1px;border:1px solid #0003}
.legend span.item{display:inline-block;margin:2px 14px 2px 0;font-size:13px}
.clip{margin:10px 0 14px}.clip h3{margin:6px 0 2px;font-size:13px;font-weight:600}
.clip img,.map img{max-width:100%;height:auto;display:block}
.gallery figure{display:inline-block;margin:4px 10px 8px 0;vertical-align:top}
.gallery figure img{margin-right:2px;border-radius:2px;width:170px;height:auto}
.gallery figcaption{font-size:11px;color:#555}.desc{margin:0 0 4px;color:#333}
.missing{display:inline-block;color:#b71c1c;font-size:12px;max-width:360px}
.scroll{overflow:auto;max-height:560px}.scroll th{position:sticky;top:0;z-index:1}video{max-width:100%;background:#000}
"""


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = (), attrs: str = "") -> str:
    """Rows of already-escaped cells."""
    head = "".join(f'<th class="n">{h}</th>' if i in numeric else f"<th>{h}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<div class="scroll"><table {attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def legend_html(data: RunData) -> str:
    items = [f'<span class="item"><span class="sw" style="background:{colour_hex(c)}"></span>{c}: {esc(data.name(c))}</span>'
             for c in data.activities]
    items.append('<span class="item"><span class="sw" style="background:#000"></span>noise</span>')
    return '<div class="legend">' + "".join(items) + "</div>"


def summary_html(data: RunData) -> str:
    clips, seg, ev = data.clips, data.segments, data.evaluation or {}
    s = data.run.get("summary", {}) if isinstance(data.run.get("summary"), dict) else {}
    ok = data.ok_clips
    hours = float(np.nansum(ok.duration_s.to_numpy(dtype=float))) / 3600
    failed = clips[~clips.status.isin(["ok", "partial"])]  # error, quarantined (Ray runner), ...
    partial = clips[clips.status == "partial"]
    k = ev.get("k", len(data.activities))
    noise = ev.get("noise_rate", float((seg.cluster < 0).mean()) if len(seg) else None)
    lab = s.get("labels") if isinstance(s.get("labels"), dict) else None
    if data.labels is not None and "status" in data.labels:
        st = data.labels.status.fillna("").tolist()
        errs = [e for e in data.labels.get("error", pd.Series(dtype=object)).tolist() if isinstance(e, str) and e]
        lab = {"labelled": sum(x in ("ok", "cached") for x in st), "failed": st.count("error"), "skipped": st.count("skipped"),
               "errors": sorted(set(errs))}
    if lab:
        labels = f"{lab.get('labelled', 0)} named, {lab.get('failed', 0)} failed, {lab.get('skipped', 0)} skipped"
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
    if s.get("cluster_reason"):
        rows.append(("why this many", s["cluster_reason"]))
    if isinstance(s.get("backends"), dict):
        rows.append(("backends", ", ".join(f"{a}={b}" for a, b in s["backends"].items())))
    if s.get("wall_time_s") is not None:
        rows.append(("wall time", f"{s['wall_time_s']:.1f} s"))
    out = '<table class="kv">' + "".join(f"<tr><td>{esc(a)}</td><td>{esc(b)}</td></tr>" for a, b in rows) + "</table>"
    weights = dig(data.run, "clustering", "fusion_weights")
    if isinstance(weights, dict) and weights:
        out += '<p class="note">fusion weights (confidence on this data): ' + esc(
            ", ".join(f"{m} {w:.2f}" if isinstance(w, int | float) else f"{m} {w}" for m, w in weights.items())) + "</p>"
        coverage = {m: sc["coverage"] for m, sc in (dig(data.run, "clustering", "modality_scores") or {}).items()
                    if isinstance(sc, dict) and isinstance(sc.get("coverage"), int | float) and sc["coverage"] < 1}
        if coverage:
            out += '<p class="note">sparse modalities, share of segments that observed them (weight scaled by it): ' + esc(
                ", ".join(f"{m} {100 * c:.1f} %" for m, c in coverage.items())) + "</p>"
    if len(failed):
        items = "".join(f"<li>{esc(r.name)}" + (f" ({esc(r.status)})" if r.status != "error" else "") + f": {esc(r.error)}</li>"
                        for r in failed.head(MAX_CLIPS).itertuples())
        more = f"<li>... and {len(failed) - MAX_CLIPS} more (clips.parquet)</li>" if len(failed) > MAX_CLIPS else ""
        out += f'<h3 class="warn">Failed clips</h3><ul id="failed-clips">{items}{more}</ul>'
    if data.problems:
        more = len(data.problems) - MAX_PROBLEMS
        is_open = " open" if len(data.problems) <= 3 else ""
        out += (f'<details class="warn"{is_open}><summary>{len(data.problems)} problem(s) while writing this report</summary>'
                '<ul id="report-problems">' + "".join(f"<li>{esc(p)}</li>" for p in data.problems[:MAX_PROBLEMS])
                + (f"<li>... and {more} more</li>" if more > 0 else "") + "</ul></details>")
    return out


def activities_html(data: RunData) -> str:
    seg = data.segments
    total = float((seg.t_end - seg.t_start).sum()) or 1.0
    rows = []
    desc = {}
    if data.labels is not None and "description" in data.labels:
        desc = {int(r.cluster): r.description for r in data.labels.itertuples() if isinstance(r.description, str)}
    keypoints = dig(data.evaluation or {}, "keypoints")
    keypoints = keypoints if isinstance(keypoints, dict) and keypoints else None
    propagated = keypoints is not None and any(isinstance(v, dict) and "propagated_share" in v for v in keypoints.values())
    groups = [(c, seg[seg.cluster == c]) for c in data.activities] + [(-1, seg[seg.cluster < 0])]
    for c, g in groups:
        if c < 0 and not len(g):
            continue
        dur = float((g.t_end - g.t_start).sum())
        name = esc(data.name(c)) if c >= 0 else "noise"
        row = [f'<span class="sw" style="background:{colour_hex(c)}"></span>{c if c >= 0 else ""}', name,
               str(len(g)), f"{dur / 60:.1f}", f"{100 * dur / total:.1f} %", str(g.clip_id.nunique())]
        if keypoints is not None:  # MediaPipe: share of looked-at frames with a hand / the body in view
            kp = keypoints.get(str(c)) or {}
            row += [_pct(kp.get("hand_rate")), _pct(kp.get("body_rate"))]
            if propagated:  # hands seen before propagation, and the share of hand frames that are propagated
                row += [_pct(kp.get("coverage_before")), _pct(kp.get("propagated_share"))]
        rows.append([*row, esc(desc.get(c, ""))])
    if not rows:
        return f'<p class="note">No segments: {NOT_COMPUTED}.</p>'
    kp_header = ["hands seen", "body seen", *(["hands detected", "propagated"] if propagated else [])] if keypoints else []
    header = ["id", "label", "segments", "minutes", "share", "clips", *kp_header, "description"]
    if not desc:
        header, rows = header[:-1], [r[:-1] for r in rows]
    table = _table(header, rows, numeric=range(2, len(header) - (1 if desc else 0)), attrs='id="activities-table"')
    return table + hand_coverage_note(data)


def _pct(v: Any) -> str:
    return fmt(100 * v, ".1f") + " %" if isinstance(v, int | float) else ""


def hand_coverage_note(data: RunData) -> str:
    """Per clip: share of looked-at frames with a detected hand, and with any hand after propagation."""
    hands = dig(data.evaluation or {}, "hands", "per_clip")
    if not isinstance(hands, dict) or not hands:
        return ""
    names = {str(c): Path(str(p)).name for c, p in zip(data.clips.clip_id, data.clips.path)}
    items = "".join(f"<li>{esc(names.get(c, c))}: {_pct(v.get('coverage_before'))} &rarr; {_pct(v.get('coverage_after'))}"
                    f" ({_pct(v.get('propagated_share'))} of hand frames propagated)</li>"
                    for c, v in hands.items() if isinstance(v, dict))
    return ('<p class="note" id="hand-coverage">Hand coverage per clip, share of looked-at frames with a hand: detected '
            f'&rarr; detected or propagated (pose.max_age_frames)</p><ul class="note">{items}</ul>')


def _phase_cells(phase: Any) -> list[str]:
    if not isinstance(phase, dict) or "per_segment" not in phase:
        note = phase.get("note") if isinstance(phase, dict) else None
        cell = f'<span class="nc" title="{esc(note)}">{NOT_COMPUTED}</span>' if note else fmt(None)
        return [cell] * 4
    return [fmt(dig(phase, "per_segment", "ari")), fmt(dig(phase, "per_segment", "nmi")),
            fmt(dig(phase, "per_segment", "v_measure")), fmt(dig(phase, "duration_weighted", "ari"))]


def _entropy(cross: Any) -> Any:
    if not isinstance(cross, dict):
        return None
    return cross.get("entropy", cross.get("mixing_entropy"))


def is_fusion(name: Any) -> bool:
    """The run's own variant in eval.json / ablations.parquet ("fusion", "fusion (this run)")."""
    return str(name).startswith("fusion")


def _ablation_row(a: dict[str, Any], name: str, with_gt: bool) -> list[str]:
    m = a.get("modalities")
    mods = esc(" + ".join(map(str, m))) if isinstance(m, list) else fmt(None)
    row = [f'<span class="nw">{name}</span>', mods, fmt(a.get("k"), "d"), pct(a.get("noise_rate")),
           *_phase_cells(a.get("phase")), fmt(_entropy(a.get("cross_clip"))), pct(dig(a, "cross_clip", "multi_clip_share"))]
    if with_gt:
        row += [fmt(dig(a, "ground_truth", "ari")), fmt(dig(a, "ground_truth", "mof")), fmt(dig(a, "ground_truth", "f1@25"))]
    return row


def evaluation_html(data: RunData) -> str:
    ev = data.evaluation
    if ev is None:
        return f'<p class="note">eval.json: {NOT_COMPUTED}.</p>'
    ablations = ev.get("ablations")
    variants = [a for a in ablations if isinstance(a, dict)] if isinstance(ablations, list) else []
    if not any(is_fusion(a.get("name")) for a in variants):  # the run itself, from the top level of eval.json
        mods = dig(data.run, "config", "cluster", "modalities")
        variants.insert(0, {**ev, "name": "fusion (this run)", "modalities": mods})
    with_gt = any(isinstance(a.get("ground_truth"), dict) for a in variants)
    rows = [_ablation_row(a, f"<b>{esc(a.get('name'))}</b>" if is_fusion(a.get("name")) else esc(a.get("name", "?")), with_gt)
            for a in sorted(variants, key=lambda a: not is_fusion(a.get("name")))]
    out = "<h3>Ablations: clustering on fewer modalities</h3>"
    if not isinstance(ablations, list):
        out += f'<p class="note">Ablations: {NOT_COMPUTED} (only the fused run is shown).</p>'
    note = dig(ev, "phase", "note")
    if note:
        out += f'<p class="note">Phase agreement: {esc(note)}.</p>'
    header = ["variant", "modalities", "k", "noise", "phase<br>ARI", "phase<br>NMI", "phase<br>V", "phase ARI<br>by duration",
              "cross-clip<br>entropy", "multi-clip<br>clusters"] + (["truth<br>ARI", "truth<br>MoF", "truth<br>F1@25"] if with_gt else [])
    out += _table(header, rows, numeric=range(2, len(header)), attrs='id="ablation-table"')
    out += ('<p class="note">Phase scores compare clusters with the phase in each file name (per segment, and weighted by '
            'segment duration). Cross-clip entropy: 0 when every cluster lives in one clip (fingerprinting the clip\'s look), '
            '1 when clusters mix clips evenly; multi-clip clusters: share of clusters spanning at least two clips.'
            + (" Truth: frame-level scores against ground_truth.parquet (MoF and F1@25 after matching clusters to activities)."
               if with_gt else "") + "</p>")
    gt = ev.get("ground_truth")
    out += "<h3>Against ground truth</h3>"
    if isinstance(gt, dict):
        keys = [k for k in ("ari", "nmi", "v_measure", "mof", "f1@10", "f1@25", "f1@50", "edit") if k in gt]
        keys += [k for k in gt if k not in keys and k != "n" and isinstance(gt[k], int | float)]
        out += _table([esc(k) for k in keys], [[fmt(gt[k]) for k in keys]], numeric=range(len(keys)), attrs='id="ground-truth-table"')
    else:
        out += f'<p class="note">Ground truth: {NOT_COMPUTED} (no ground_truth.parquet next to the footage).</p>'
    return out


def cross_clip_html(data: RunData) -> str:
    """Where each activity occurs: minutes per clip x activity; plus per-clip clustering from eval.json."""
    seg, acts = data.segments, data.activities
    ok = data.ok_clips
    out = ""
    if acts and len(ok):
        minutes = seg.assign(m=(seg.t_end - seg.t_start) / 60)
        header_acts = [f'<span class="sw" style="background:{colour_hex(c)}"></span>{c}' for c in acts] + ["noise"]

        def cells(vals: pd.Series) -> list[str]:
            return [("&lt;0.1" if 0 < vals.get(c, 0.0) < 0.05 else f"{vals.get(c, 0.0):.1f}") if vals.get(c, 0.0) > 0 else ""
                    for c in acts + [-1]]

        by_phase = minutes.pivot_table(index="phase", columns="cluster", values="m", aggfunc="sum", fill_value=0.0)
        n_clips = ok.groupby("phase").size()
        rows = [[esc(p), str(int(n_clips.get(p, 0))), *cells(by_phase.loc[p])] for p in by_phase.index]
        out += ("<h3>Where each activity occurs (minutes per phase)</h3>"
                + _table(["phase", "clips", *header_acts], rows, numeric=range(1, len(header_acts) + 2), attrs='id="cross-phase-table"'))
        by_clip = minutes.pivot_table(index="clip_id", columns="cluster", values="m", aggfunc="sum", fill_value=0.0)
        rows = []
        for r in ok.head(MAX_CLIP_ROWS).itertuples():
            vals = by_clip.loc[r.clip_id] if r.clip_id in by_clip.index else pd.Series(dtype=float)
            rows.append([esc(r.name), esc(r.phase), *cells(vals)])
        spans = [f"{c}: {seg[seg.cluster == c].clip_id.nunique()}" for c in acts]
        out += (f'<p class="note">Clips spanned per activity: {esc(", ".join(spans))}. Per clip:</p>'
                + _table(["clip", "phase", *header_acts], rows, numeric=range(2, len(header_acts) + 2), attrs='id="cross-clip-table"'))
        if len(ok) > MAX_CLIP_ROWS:
            out += f'<p class="note">{len(ok) - MAX_CLIP_ROWS} more clips not listed.</p>'
    else:
        out += f'<p class="note" id="cross-clip-table">Cross-clip table: {NOT_COMPUTED} (no activities).</p>'
    per_clip = (data.evaluation or {}).get("per_clip")
    out += "<h3>Clustering each clip on its own</h3>"
    rows_in = [r for r in per_clip if isinstance(r, dict)] if isinstance(per_clip, list) else []
    if rows_in:
        df = pd.DataFrame(rows_in)
        if "variant" not in df:
            df["variant"] = "fusion"
        blank = pd.Series([None] * len(df), index=df.index)
        df["clip_name"] = [Path(p).name if isinstance(p, str) and p else str(c)
                      for p, c in zip(df.get("path", blank), df.get("clip_id", blank))]
        variants = list(dict.fromkeys(df.variant.astype(str)))
        clips = list(dict.fromkeys(df["clip_name"]))
        cell = {(r.clip_name, str(r.variant)): f"{fmt(getattr(r, 'k', None), 'd')} ({pct(getattr(r, 'noise_rate', None))})"
                for r in df.itertuples()}
        rows = [[esc(c)] + [cell.get((c, v), "") for v in variants] for c in clips[:MAX_CLIP_ROWS]]
        out += _table(["clip"] + [esc(v) for v in variants], rows, numeric=range(1, len(variants) + 1), attrs='id="per-clip-table"')
        out += '<p class="note">Per clip and variant: clusters found (k) and the share of noise.</p>'
        if len(clips) > MAX_CLIP_ROWS:
            out += f'<p class="note">{len(clips) - MAX_CLIP_ROWS} more clips not listed (eval.json).</p>'
    else:
        out += f'<p class="note">Per-clip clustering: {NOT_COMPUTED}.</p>'
    return out


def clip_sections_html(data: RunData, progress: Progress) -> tuple[str, str]:
    """(timeline strips, self-similarity + flow rhythm) for the first ``MAX_CLIPS`` ok clips."""
    ok = data.ok_clips
    shown = ok.head(MAX_CLIPS)
    strips, signals = [], []
    for i, clip in enumerate(shown.itertuples(index=False), 1):
        clip_s = pd.Series(clip._asdict())
        title = (f'<h3>{esc(clip.name)} <span class="note">({esc(clip.phase)}, {fmt(clip.duration_s, ".0f")} s'
                 f'{", partial" if clip.status == "partial" else ""})</span></h3>')
        strips.append(f'<div class="clip timeline-strip">{title}<img src="{timeline_figure(data, clip_s)}" '
                      f'alt="timeline of {esc(clip.name)}"></div>')
        try:
            frames = data.store.read_table(f"frames/{clip.clip_id}.parquet").select(["t", "flow_mag_mean", "scene_embedding"]).to_pandas()
            signals.append(f'<div class="clip clip-signals">{title}<img src="{clip_signal_figure(data, clip_s, frames)}" '
                           f'alt="self-similarity and flow rhythm of {esc(clip.name)}"></div>')
        except Exception as exc:  # one clip's missing frames table must not cost the report
            msg = f"frames/{clip.clip_id}.parquet: {exc}"
            data.problems.append(msg)
            log.warning("report: %s", msg)
            signals.append(f'<div class="clip">{title}<p class="missing">{esc(msg)}</p></div>')
        if i % 10 == 0:
            progress.say(f"report: {i}/{len(shown)} clips drawn")
    rest = ok.iloc[MAX_CLIPS:]
    if len(rest):
        note = f'<p class="note">{len(ok)} clips; the first {MAX_CLIPS} are drawn. The others:</p>'
        seg = data.segments
        dominant = seg[seg.cluster >= 0].assign(d=seg.t_end - seg.t_start).groupby(["clip_id", "cluster"]).d.sum()
        top = dominant.groupby(level=0).idxmax().map(lambda x: x[1]) if len(dominant) else pd.Series(dtype=int)
        rows = [[esc(r.name), esc(r.phase), fmt(r.duration_s, ".0f"), fmt(r.n_segments, "d") if pd.notna(r.n_segments) else fmt(None),
                 esc(data.name(int(top[r.clip_id]))) if r.clip_id in top.index else fmt(None)]
                for r in rest.head(MAX_CLIP_ROWS).itertuples()]
        table = note + _table(["clip", "phase", "seconds", "segments", "main activity"], rows, numeric=(2, 3), attrs='id="more-clips"')
        if len(rest) > MAX_CLIP_ROWS:
            table += f'<p class="note">... and {len(rest) - MAX_CLIP_ROWS} more (clips.parquet).</p>'
        strips.append(table)
        signals.append(f'<p class="note">{len(rest)} more clips not drawn (see the table under Timelines).</p>')
    if not len(ok):
        strips.append(f'<p class="note">No clip was processed: {NOT_COMPUTED}.</p>')
    return "".join(strips), "".join(signals)


def reel_html(chapters: list[dict[str, Any]] | None, reel_error: str | None) -> str:
    if reel_error:
        return f'<p class="warn">The reel could not be written: {esc(reel_error)}</p>'
    if chapters is None:
        return f'<p class="note">Reel: {NOT_COMPUTED} (disabled).</p>'
    if not chapters:
        return '<p class="note">Reel: none (no activities to show).</p>'
    rows, t = [], 0.0
    for ch in chapters:
        rows.append([f"{int(t // 60)}:{t % 60:04.1f}", f'<span class="sw" style="background:{colour_hex(ch["cluster"])}"></span>'
                     + esc(f"{ch['cluster']}: {ch['title']}"),
                     esc("; ".join(f"{e['clip']} {e['t_start']:.1f}-{e['t_end']:.1f} s" for e in ch["excerpts"] if e["frames"]))])
        t += (ch["title_frames"] + sum(e["frames"] for e in ch["excerpts"])) / REEL_FPS
    poster = ""
    if chapters:
        ch = chapters[0]
        poster = f' poster="{jpeg_data_uri(title_card(ch["title"], ch["subtitle"], colour_hex(ch["cluster"])))}"'
    return (f'<video src="reel.mp4" controls preload="metadata" width="{REEL_SIZE[0]}" height="{REEL_SIZE[1]}"{poster}></video>'
            '<p class="note">reel.mp4 next to this file: per activity a title card, then a few seconds of its most typical segments.</p>'
            + _table(["starts at", "activity", "excerpts"], rows, numeric=(0,), attrs='id="reel-chapters"'))


def render_html(data: RunData, parts: dict[str, str]) -> str:
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#{a}">{b}</a>' for a, b in (("summary", "Summary"), ("activities", "Activities"),
                                                          ("evaluation", "Evaluation"), ("timelines", "Timelines"),
                                                          ("map", "2-D map"), ("signals", "Per-clip signals"),
                                                          ("galleries", "Galleries"), ("reel", "Reel")))
    sec = {
        "summary": ("Summary", parts["summary"]),
        "activities": ("Activities", parts["activities"]),
        "evaluation": ("Evaluation", parts["evaluation"] + parts["cross_clip"]),
        "timelines": ("Timelines", '<p class="note">One strip per variant on the clip\'s time axis: fused = this run, the others '
                      "cluster on fewer modalities (ablations.parquet). Their clusters take the colour of the fused activity they "
                      "share most time with; colours not in the legend are clusters without a fused match. Noise in black.</p>"
                      + legend_html(data) + parts["timelines"]),
        "map": ("2-D map of all segments", f'<p class="note">Fused segment descriptors in 2-D ({esc(map_method(data))}); '
                "nearby points are segments the clustering saw as alike.</p>" f'<div class="map">{parts["map"]}</div>'),
        "signals": ("Per-clip signals", '<p class="note">Left: cosine self-similarity of the per-frame scene vectors '
                    f"(at most {SSM_MAX} x {SSM_MAX}; repeated views show as bright off-diagonal blocks). Right: mean optical "
                    "flow per frame, and each segment's flow-rhythm period and strength.</p>" + parts["signals"]),
        "galleries": ("Galleries", '<p class="note">Keyframes of each activity\'s most typical segments, re-decoded from the '
                      "clips.</p>" + parts["galleries"]),
        "reel": ("Preview reel", parts["reel"]),
    }
    body = "".join(f'<section id="{k}"><h2>{v[0]}</h2>{v[1]}</section>' for k, v in sec.items())
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
            f"<title>HandClust report: {esc(data.store.uri)}</title><style>{CSS}</style></head><body>"
            f'<header><h1>HandClust report</h1><p class="meta">run {esc(data.store.uri)}, generated {generated}</p>'
            f"<nav>{nav}</nav></header><main>{body}</main></body></html>")


def map_method(data: RunData) -> str:
    backend = dig(data.run, "clustering", "backends", "map_2d") or dig(data.run, "summary", "backends", "map_2d")
    return str(backend) if backend else "method not recorded"


def _as_progress(progress: Progress | bool | Callable[[str], None] | None) -> Progress:
    if isinstance(progress, Progress):
        return progress
    if callable(progress):
        prog = Progress(enabled=True)
        prog.say = progress  # type: ignore[method-assign]
        return prog
    return Progress(enabled=bool(progress))


def _remove_reel(store: OutputStore) -> None:
    for rel in ("report/reel.mp4", "report/reel.json"):
        if store.exists(rel):
            store.fs.delete_file(store.path(rel))


def write_report(out: str | Path, *, reel: bool = True, progress: Progress | bool | Callable[[str], None] | None = None) -> Path | str:
    """Write ``OUT/report/index.html`` (and ``OUT/report/reel.mp4`` unless ``reel=False``) for a finished run.

    Returns the path of ``index.html`` (a local :class:`~pathlib.Path`, or the URI on object
    stores). What went wrong in a part of the report (a clip that no longer decodes, the reel) is
    logged, shown in the report and recorded in ``run.json`` under ``"report"``; a run without
    ``clips.parquet`` raises :class:`FileNotFoundError`.
    """
    t0 = time.perf_counter()
    prog = _as_progress(progress)
    store = OutputStore(out)
    data = load_run(store)
    if data.missing_clips:
        names = data.clips[data.clips.clip_id.isin(data.missing_clips)].path.head(3).tolist()
        msg = (f"{len(data.missing_clips)} clip(s) are no longer at the path the run read them from (e.g. {', '.join(names)}): "
               "their keyframes and reel excerpts are left out")
        data.problems.append(msg)
        log.warning("report: %s", msg)
    prog.say(f"report: {len(data.segments)} segments, {len(data.ok_clips)} clips, {len(data.activities)} activities")
    chapters: list[dict[str, Any]] | None = None
    reel_error = None
    reel_s = None
    if reel:
        chapters = reel_plan(data)
    if not chapters:  # no reel this time: a stale one from an earlier report would mislead
        _remove_reel(store)
    if chapters:
        try:
            reel_s = write_reel(data, chapters, "report/reel.mp4", prog)
            store.write_json("report/reel.json", {"fps": REEL_FPS, "size": list(REEL_SIZE), "duration_s": reel_s,
                                                  "chapters": chapters})
        except Exception as exc:  # the HTML is worth having without the reel
            reel_error = f"{exc.__class__.__name__}: {exc}"
            _remove_reel(store)
            data.problems.append(f"reel: {reel_error}")
            log.warning("report: the reel could not be written: %s", reel_error)
    timelines, signals = clip_sections_html(data, prog)
    map_uri = map_figure(data)
    parts = {
        "summary": "",  # filled last: it lists the problems met while building the rest
        "activities": activities_html(data),
        "evaluation": evaluation_html(data),
        "cross_clip": cross_clip_html(data),
        "timelines": timelines,
        "map": f'<img id="map-2d" src="{map_uri}" alt="2-D map of all segments">' if map_uri
        else f'<p class="note" id="map-2d">2-D map: {NOT_COMPUTED} (no embedding_2d.parquet).</p>',
        "signals": signals,
        "galleries": gallery_html(data, prog),
        "reel": reel_html(chapters, reel_error),
    }
    parts["summary"] = summary_html(data)
    store.write_bytes("report/index.html", render_html(data, parts).encode("utf-8"))
    seconds = time.perf_counter() - t0
    if store.exists("run.json"):
        run = store.read_json("run.json")
        run["report"] = {"status": "ok" if not data.problems else "partial", "path": "report/index.html",
                         "reel": "report/reel.mp4" if reel_s is not None else None, "reel_s": reel_s,
                         "seconds": round(seconds, 2), "problems": data.problems[:MAX_PROBLEMS],
                         "problems_total": len(data.problems)}
        store.write_json("run.json", run)
    prog.say(f"report: written in {seconds:.1f} s")
    return store.local_path("report/index.html") if store.local else store.uri_of("report/index.html")
