"""The report's pictures, each a base64 PNG ``data:`` URI: per-clip timeline strips, the 2-D map, per-clip signals."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from handclust.colours import activity_colour
from handclust.reporting.report.data import PHASE_NONE, RunData

MAP_MAX_POINTS = 20_000  # segments drawn on the 2-D map
SSM_MAX = 300  # self-similarity matrices are at most SSM_MAX x SSM_MAX
FLOW_MAX_POINTS = 1500  # samples of a flow-magnitude curve
DPI = 80


def mpl_text(text: Any, limit: int = 40) -> str:
    """Text for a matplotlib label: no mathtext from a stray ``$``, bounded length."""
    s = str(text)
    return (s[: limit - 1] + "…" if len(s) > limit else s).replace("$", r"\$")


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
        _strip(ax, s.t_start.to_numpy(), s.t_end.to_numpy(), [activity_colour(c) for c in s.c])
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
    a.scatter(members.x, members.y, s=size, c=[activity_colour(c) for c in members.cluster], alpha=0.85, linewidths=0)
    for c, g in members.groupby("cluster"):
        a.annotate(str(c), (g.x.median(), g.y.median()), fontsize=9, weight="bold", ha="center", va="center",
                   bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": activity_colour(int(c)), "alpha": 0.8})
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
    ax_flow.broken_barh(list(zip(starts, ends - starts)), (0, y_top), facecolors=[activity_colour(c) for c in seg.cluster],
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


