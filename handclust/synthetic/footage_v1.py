"""Synthetic helmet-camera footage with a known truth.

Renders real H.264 MP4 files of a head-mounted camera over procedurally drawn masonry scenes:

- ``walking``: forward motion across the site, head bob (~1.6-1.9 Hz), slight roll;
- ``laying``: looking at a brick wall, a gloved hand carries bricks from a pile to the wall and
  back every 2-4 s, small head motion;
- ``scooping``: looking down into a mortar tub, a trowel circles every 1.5-2.5 s;
- ``idle``: near-static view of any part of the site.

It is honest, not easy: every clip gets its own world textures, white balance, exposure,
gamma, sensor noise, vignetting and fisheye strength, so the same activity looks different in
every clip and clustering on clip appearance fails. Filenames carry the coarse phase the way
real footage does (``03_production_masonry.mp4``); ``ground_truth.parquet`` gives the activity of
every source frame. :func:`activity_at` and :func:`load_ground_truth` serve tests and evaluation.

This is version 1, kept for quick tests. Version 2 (:mod:`handclust.synthetic.footage_v2`, the CLI's
default) adds a second trade in its own world, bouts of varied length, wider style and
low-frame-rate sources; it draws with the pieces here (:class:`Head`, :func:`draw_masonry_hands`,
:class:`Mp4Writer`, :func:`write_sample_set`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from handclust import schema
from handclust.io.footage import GROUND_TRUTH_FILE as GROUND_TRUTH_FILE
from handclust.io.footage import load_ground_truth as load_ground_truth
from handclust.io.storage import write_table_atomic

log = logging.getLogger(__name__)

ACTIVITIES = ("walking", "laying", "scooping", "idle")
PHASES = ("production", "prep", "transit", "downtime")
PHASE_NAMES = {"production": "production_masonry", "prep": "prep_mortar", "transit": "transit", "downtime": "downtime"}
# How often each activity occurs within a phase (rows sum to 1).
PHASE_MIX: dict[str, dict[str, float]] = {
    "production": {"laying": 0.45, "scooping": 0.25, "walking": 0.15, "idle": 0.15},
    "prep": {"scooping": 0.45, "walking": 0.25, "idle": 0.15, "laying": 0.15},
    "transit": {"walking": 0.65, "idle": 0.2, "scooping": 0.15},
    "downtime": {"idle": 0.65, "walking": 0.25, "laying": 0.10},
}
REGION = {"ground": 0, "wall": 1, "tub": 2, "pallet": 3}
TILE = 1200  # world pixels per region


@dataclass(frozen=True)
class Bout:
    activity: str
    t_start: float
    t_end: float
    period_s: float  # motion period of the activity (0 when it has none)
    anchor_x: float  # where the camera looks (world px)
    anchor_y: float


@dataclass(frozen=True)
class ClipStyle:
    gains: tuple[float, float, float]
    gamma: float
    offset: float
    noise_sigma: float
    fisheye_k: float
    vignette: float


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scales: tuple[int, ...]) -> npt.NDArray[np.float32]:
    out = np.zeros((h, w), np.float32)
    for s in scales:
        small = rng.standard_normal((max(2, h // s), max(2, w // s))).astype(np.float32)
        out += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) / len(scales)
    return out


def _world(rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Four regions side by side: gravel ground, brick wall, mortar tub, brick pallet."""
    h, w = TILE, 4 * TILE
    tone = rng.uniform(-20, 20, 3)
    base = np.array([118, 108, 92], np.float32) + tone
    tex = _smooth_noise(rng, h, w, (3, 12, 60))[..., None] * 28
    world = np.clip(base + tex, 0, 255).astype(np.uint8)
    for _ in range(900):  # stones everywhere on the ground
        c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        g = int(rng.uniform(60, 190))
        cv2.ellipse(world, c, (int(rng.uniform(3, 14)), int(rng.uniform(2, 9))), float(rng.uniform(0, 180)), 0, 360, (g, g - 5, g - 12), -1)
    # Brick wall.
    x0 = TILE * REGION["wall"]
    mortar = np.array([178, 172, 160]) + rng.uniform(-15, 15, 3)
    world[:, x0 : x0 + TILE] = np.clip(mortar + _smooth_noise(rng, h, TILE, (2, 8))[..., None] * 10, 0, 255).astype(np.uint8)
    bw, bh = int(rng.uniform(70, 95)), int(rng.uniform(26, 34))
    brick = np.array([150, 62, 42]) + rng.uniform(-25, 25, 3)
    for row, y in enumerate(range(0, h, bh + 6)):
        shift = (bw // 2) * (row % 2)
        for x in range(-shift, TILE, bw + 6):
            col = np.clip(brick + rng.uniform(-22, 22, 3), 0, 255)
            cv2.rectangle(world, (x0 + max(x, 0), y), (x0 + min(x + bw, TILE - 1), y + bh), col.tolist(), -1)
    # Mortar tub: dark rim, grey mortar inside, on gravel.
    cx, cy = TILE * REGION["tub"] + TILE // 2, TILE // 2
    cv2.circle(world, (cx, cy), 330, (38, 40, 46), -1)
    inner = np.array([150, 146, 136]) + rng.uniform(-15, 15, 3)
    cv2.circle(world, (cx, cy), 290, inner.tolist(), -1)
    blob = _smooth_noise(rng, 600, 600, (6, 25))[..., None] * 18
    patch = world[cy - 300 : cy + 300, cx - 300 : cx + 300].astype(np.float32)
    mask = np.zeros((600, 600), np.uint8)
    cv2.circle(mask, (300, 300), 290, 1, -1)
    patch = np.where(mask[..., None] > 0, np.clip(patch + blob, 0, 255), patch)
    world[cy - 300 : cy + 300, cx - 300 : cx + 300] = patch.astype(np.uint8)
    # Pallet of bricks: wooden planks with stacked bricks.
    x0 = TILE * REGION["pallet"]
    wood = np.array([165, 122, 72]) + rng.uniform(-20, 20, 3)
    for i, y in enumerate(range(150, 1050, 60)):
        cv2.rectangle(world, (x0 + 150, y), (x0 + 1050, y + 45), np.clip(wood + (i % 3) * 8, 0, 255).tolist(), -1)
    for _ in range(70):
        bx, by = int(x0 + rng.uniform(180, 960)), int(rng.uniform(180, 960))
        col = np.clip(brick + rng.uniform(-25, 25, 3), 0, 255).tolist()
        cv2.rectangle(world, (bx, by), (bx + bw, by + bh), col, -1)
        cv2.rectangle(world, (bx, by), (bx + bw, by + bh), (90, 60, 50), 2)
    return world


def _style(rng: np.random.Generator) -> ClipStyle:
    return ClipStyle(
        gains=tuple(float(g) for g in rng.uniform(0.72, 1.28, 3)),  # type: ignore[arg-type]
        gamma=float(rng.uniform(0.7, 1.4)),
        offset=float(rng.uniform(-25, 25)),
        noise_sigma=float(rng.uniform(2, 9)),
        fisheye_k=float(rng.uniform(0.08, 0.35)),
        vignette=float(rng.uniform(0.1, 0.45)),
    )


def _plan(rng: np.random.Generator, phase: str, duration_s: float) -> list[Bout]:
    mix = PHASE_MIX[phase]
    names, probs = list(mix), np.array(list(mix.values()))
    bouts: list[Bout] = []
    t, prev = 0.0, ""
    while t < duration_s - 1e-6:
        p = probs * np.array([0.0 if n == prev else 1.0 for n in names])
        act = names[int(rng.choice(len(names), p=p / p.sum()))]
        length = float(rng.uniform(10, 30))
        if duration_s - (t + length) < 8:  # no sliver at the end
            length = duration_s - t
        period = {"laying": rng.uniform(2.0, 4.0), "scooping": rng.uniform(1.5, 2.5), "walking": 1 / rng.uniform(1.6, 1.9)}.get(act, 0.0)
        region = {"laying": "wall", "scooping": "tub"}.get(act) or str(rng.choice(list(REGION)))
        ax = TILE * REGION[region] + TILE / 2 + rng.uniform(-120, 120)
        ay = TILE / 2 + rng.uniform(-120, 120)
        bouts.append(Bout(act, t, min(t + length, duration_s), float(period), float(ax), float(ay)))
        t += length
        prev = act
    return bouts


HEAD_DRIFT = {"laying": 9.0, "scooping": 7.0, "idle": 2.0}  # world px around the bout's anchor


def _drift(t: float, seed: float, amp: float) -> tuple[float, float]:
    """Slow smooth head drift: a few incommensurate sinusoids."""
    dx = sum(np.sin(2 * np.pi * f * t + seed * k) for k, f in enumerate((0.07, 0.13, 0.29), 1))
    dy = sum(np.cos(2 * np.pi * f * t + seed * k * 1.7) for k, f in enumerate((0.05, 0.17, 0.23), 1))
    return amp * dx / 3, amp * dy / 3


class _Renderer:
    def __init__(self, world: npt.NDArray[np.uint8], style: ClipStyle, size: tuple[int, int], rng: np.random.Generator):
        self.world = world
        self.w, self.h = size
        self.style = style
        lut = np.arange(256, dtype=np.float32) / 255.0
        self.lut = np.stack(
            [np.clip(255 * (lut**style.gamma) * g + style.offset, 0, 255) for g in style.gains], axis=-1
        ).astype(np.uint8).reshape(256, 1, 3)
        yy, xx = np.mgrid[0 : self.h, 0 : self.w].astype(np.float32)
        nx, ny = (xx - self.w / 2) / (self.w / 2), (yy - self.h / 2) / (self.w / 2)
        r2 = nx**2 + ny**2
        f = 1 + style.fisheye_k * r2  # barrel: the edges of the frame see further out
        self.map_x = (nx * f * self.w / 2 + self.w / 2).astype(np.float32)
        self.map_y = (ny * f * self.w / 2 + self.h / 2).astype(np.float32)
        vig = 255 * (1 - style.vignette * np.clip(r2 / 1.3, 0, 1))
        self.vignette = np.repeat(vig[..., None], 3, axis=2).round().astype(np.uint8)
        self.noise = [rng.normal(0, style.noise_sigma, (self.h, self.w, 3)).round().astype(np.int16) for _ in range(6)]
        self.rng = rng

    def view(self, cx: float, cy: float, zoom: float, roll: float) -> npt.NDArray[np.uint8]:
        c, s = np.cos(roll) * zoom, np.sin(roll) * zoom
        # Image pixel -> world pixel.
        m = np.array([[c, -s, cx - c * self.w / 2 + s * self.h / 2], [s, c, cy - s * self.w / 2 - c * self.h / 2]], np.float32)
        return cv2.warpAffine(self.world, m, (self.w, self.h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_WRAP)

    def finish(self, img: npt.NDArray[np.uint8], k: int) -> npt.NDArray[np.uint8]:
        img = cv2.remap(img, self.map_x, self.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        img = cv2.LUT(img, self.lut)
        # Saturating uint8 arithmetic in OpenCV: 5x faster than the same in float numpy.
        img = cv2.multiply(img, self.vignette, scale=1 / 255.0)
        return cv2.add(img, self.noise[k % len(self.noise)], dtype=cv2.CV_8U)


def _glove(img: npt.NDArray[np.uint8], x: float, y: float, w: int, h: int, colour: tuple[int, int, int], carry: bool) -> None:
    """An arm from the bottom edge to a gloved hand at (x, y); optionally carrying a brick."""
    base = (int(w * 0.62 + (x - w / 2) * 0.3), h + 20)
    cv2.line(img, base, (int(x), int(y)), (70, 80, 95), 38)
    if carry:
        cv2.rectangle(img, (int(x - 42), int(y - 28)), (int(x + 42), int(y - 4)), (150, 64, 44), -1)
    cv2.ellipse(img, (int(x), int(y)), (30, 22), -20, 0, 360, colour, -1)


def _trowel(img: npt.NDArray[np.uint8], x: float, y: float, angle: float) -> None:
    c, s = np.cos(angle), np.sin(angle)
    pts = np.array([[0, -40], [26, 30], [-26, 30]], np.float32) @ np.array([[c, s], [-s, c]], np.float32)
    cv2.fillPoly(img, [(pts + (x, y)).astype(np.int32)], (175, 180, 185))
    cv2.line(img, (int(x), int(y + 30 * c)), (int(x + 60), int(y + 90)), (60, 45, 35), 12)


class Head:
    """Where the helmet camera looks: walks forward across the site, turns to each bout's anchor
    in 0.7 s, and drifts around it by ``drift[activity]`` world px. ``dt`` is the time step of the
    frames being rendered, so a low-frame-rate source jumps as far per frame as the head moved."""

    SPEED = 230.0  # walking, world px per second

    def __init__(self, x: float, y: float, drift: Mapping[str, float] = HEAD_DRIFT):
        self.x, self.y = x, y
        self.drift = drift

    def pose(self, bout: Bout, b: int, tb: float, dt: float) -> tuple[float, float, float, float]:
        """``(cx, cy, zoom, roll)`` at ``tb`` seconds into bout number ``b``."""
        zoom, roll = 1.25, 0.0
        if bout.activity == "walking":
            self.x += self.SPEED * dt
            bob = np.sin(2 * np.pi * tb / bout.period_s)
            cx, cy = self.x, self.y + 14 * bob + 20 * np.sin(0.3 * tb)
            roll = 0.03 * np.sin(np.pi * tb / bout.period_s)
            zoom = 1.25 + 0.04 * np.sin(2 * np.pi * tb / bout.period_s)
            return float(cx), float(cy), float(zoom), float(roll)
        dx, dy = _drift(tb, float(b * 1.37), self.drift[bout.activity])
        cx, cy = bout.anchor_x + dx, bout.anchor_y + dy
        ease = min(1.0, tb / 0.7)  # a quick head turn from where the last bout ended
        cx, cy = self.x + (cx - self.x) * ease, self.y + (cy - self.y) * ease
        if ease >= 1.0:
            self.x, self.y = cx, cy
        return float(cx), float(cy), zoom, roll


def draw_masonry_hands(img: npt.NDArray[np.uint8], bout: Bout, tb: float, glove_colour: tuple[int, int, int]) -> None:
    """The gloved hand of ``laying`` (bricks to the wall) and ``scooping`` (trowel in the tub)."""
    h, w = img.shape[:2]
    if bout.activity == "laying":
        s = 0.5 - 0.5 * np.cos(2 * np.pi * tb / bout.period_s)
        px, py = w * 0.8, h * 0.85
        wx, wy = w * 0.38 + 40 * np.sin(tb * 0.4), h * 0.35
        half = (tb / bout.period_s) % 1.0 < 0.5  # carrying on the way to the wall
        _glove(img, px + (wx - px) * s, py + (wy - py) * s, w, h, glove_colour, carry=half)
    elif bout.activity == "scooping":
        a = 2 * np.pi * tb / bout.period_s
        tx, ty = w * 0.5 + 110 * np.cos(a), h * 0.5 + 55 * np.sin(a)
        _trowel(img, tx, ty, a)
        _glove(img, tx + 50, ty + 70, w, h, glove_colour, carry=False)


class Mp4Writer:
    """An H.264 MP4 (PyAV, libx264 veryfast) at ``rate`` frames per second, which may be below 1
    (a timelapse helmet cam). Written under a temporary name, renamed when complete."""

    def __init__(self, path: Path, rate: float, size: tuple[int, int]):
        self.path, self.size = path, size
        self.rate = Fraction(rate).limit_denominator(1000)
        self.tmp = path.with_name(path.name + ".part")
        self.n_frames = 0

    def __enter__(self) -> Mp4Writer:
        import av

        self.container = av.open(str(self.tmp), mode="w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=self.rate)
        self.stream.width, self.stream.height = self.size
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"preset": "veryfast", "crf": "23", "threads": "1",
                               # x264 with lookahead or macroblock-tree rate control gave other bits for the
                               # same frames in some calls, and the thread count changes the bits: one thread and
                               # neither, so a seed gives the same footage on every machine.
                               "x264-params": "rc-lookahead=0:mbtree=0"}
        return self

    def write(self, img: npt.NDArray[np.uint8], repeat: int = 1) -> None:
        """Append ``img`` (``(H, W, 3)`` RGB) as ``repeat`` identical frames."""
        import av

        # Converted once, not once per held copy.
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        for _ in range(repeat):
            frame.pts = self.n_frames
            self.n_frames += 1
            for packet in self.stream.encode(frame):
                self.container.mux(packet)

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            if exc_type is None:
                for packet in self.stream.encode():
                    self.container.mux(packet)
        finally:
            self.container.close()
        if exc_type is None:
            self.tmp.replace(self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def render_clip(path: Path, phase: str, duration_s: float, seed: int, fps: float = 15.0,
                size: tuple[int, int] = (640, 360)) -> list[Bout]:
    """Write one clip to ``path`` and return its bouts (the truth)."""
    rng = np.random.default_rng(seed)
    world = _world(rng)
    style = _style(rng)
    bouts = _plan(rng, phase, duration_s)
    render = _Renderer(world, style, size, rng)
    glove_colour = tuple(int(v) for v in rng.uniform([170, 140, 0], [240, 210, 70]))
    head = Head(bouts[0].anchor_x, bouts[0].anchor_y)
    n = int(round(duration_s * fps))
    with Mp4Writer(path, int(round(fps)), size) as out:
        b = 0
        for k in range(n):
            t = k / fps
            while b < len(bouts) - 1 and t >= bouts[b].t_end:
                b += 1
            bout = bouts[b]
            tb = t - bout.t_start
            img = render.view(*head.pose(bout, b, tb, 1 / fps))
            draw_masonry_hands(img, bout, tb, glove_colour)  # type: ignore[arg-type]
            out.write(render.finish(img, k))
    return bouts


def clip_names(n_clips: int) -> list[tuple[str, str]]:
    """``(filename, phase)`` pairs; phases cycle production, prep, transit, downtime."""
    return [(f"{i + 1:02d}_{PHASE_NAMES[PHASES[i % 4]]}.mp4", PHASES[i % 4]) for i in range(n_clips)]


def make_sample_footage_v1(out_dir: str | Path, n_clips: int = 4, minutes: float = 1.5, seed: int = 0,
                           fps: float = 15.0, size: tuple[int, int] = (640, 360),
                           progress: Callable[[str], None] | None = None) -> Path:
    """Version 1 of :func:`handclust.synthetic.sample.make_sample_footage`: one trade (masonry), one
    bout length range, every clip at ``fps``, for quick tests."""
    params = {"minutes": minutes, "seed": seed, "fps": fps, "size": list(size)}
    clips = []
    for i, (name, phase) in enumerate(clip_names(n_clips)):
        def render(path: Path, phase: str = phase, i: int = i) -> dict[str, Any]:
            bouts = render_clip(path, phase, minutes * 60.0, seed=seed * 1000 + i, fps=fps, size=size)
            return {"phase": phase, "bouts": [asdict(b) for b in bouts]}

        clips.append(PlannedClip(name, params, f"{minutes:g} min, {phase}", render))
    return write_sample_set(out_dir, clips, progress)


@dataclass(frozen=True)
class PlannedClip:
    """One clip of a sample set: its file name, the parameters that decide its content (a clip
    on disk with other parameters is rendered again), and how to render it. ``render(path)``
    writes the file and returns its ``truth.json`` record (at least ``bouts``)."""

    name: str
    params: dict[str, Any]
    description: str
    render: Callable[[Path], dict[str, Any]]


def write_sample_set(out_dir: str | Path, clips: list[PlannedClip], progress: Callable[[str], None] | None = None) -> Path:
    """Render the clips that are missing or stale, then write ``truth.json`` and ``ground_truth.parquet``.

    ``truth.json`` is rewritten after every clip, so an interrupted call resumes. Clips that an
    earlier call made (recorded in ``truth.json``) and that are not in ``clips`` are removed, so the
    folder holds exactly the set asked for and a run over it sees no clip without truth.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth_path = out / "truth.json"
    truth: dict[str, dict[str, Any]] = json.loads(truth_path.read_text()) if truth_path.exists() else {}

    def save() -> None:
        tmp = truth_path.with_suffix(".json.part")
        tmp.write_text(json.dumps(truth, indent=1))
        tmp.replace(truth_path)

    names = {c.name for c in clips}
    for stale in sorted(set(truth) - names):
        log.info("removing %s: made by an earlier sample-footage call, not in this set", stale)
        (out / stale).unlink(missing_ok=True)
        del truth[stale]
        save()
    for clip in clips:
        path = out / clip.name
        if path.exists() and truth.get(clip.name, {}).get("params") == clip.params:
            continue
        if progress:
            progress(f"rendering {clip.name} ({clip.description})")
        truth[clip.name] = {**clip.render(path), "params": clip.params}
        save()
    columns: dict[str, list[Any]] = {name: [] for name in schema.GROUND_TRUTH.names}
    for name in sorted(names):
        for column, values in _truth_rows(name, truth[name]).items():
            columns[column] += values
    write_table_atomic(schema.table(columns, schema.GROUND_TRUTH), out / GROUND_TRUTH_FILE)
    return out


def _truth_rows(name: str, record: dict[str, Any]) -> dict[str, list[Any]]:
    """Ground-truth rows of one clip: one per frame of the file. A held clip (``hold`` > 1 file
    frames per source frame) takes, on every copy, the activity of the source frame it repeats."""
    source_fps = float(record.get("source_fps", record["params"]["fps"]))
    hold = int(record.get("hold", 1))
    bouts = [Bout(**b) for b in record["bouts"]]
    n_source = int(round(bouts[-1].t_end * source_fps))
    k = np.arange(n_source * hold)
    return {"file": [name] * len(k), "frame_idx": k.tolist(), "t": (k / (source_fps * hold)).tolist(),
            "activity": activity_at(bouts, (k // hold) / source_fps),
            "trade": [record.get("trade", "masonry")] * len(k)}


def activity_at(bouts: list[Bout], t: npt.NDArray[np.float64]) -> list[str]:
    ends = np.array([b.t_end for b in bouts])
    idx = np.clip(np.searchsorted(ends, t, side="right"), 0, len(bouts) - 1)
    return [bouts[i].activity for i in idx]


def planted_segment_descriptors(n_segments: int, n_activities: int, seed: int = 0,
                                dims: dict[str, int] | None = None, segments_per_clip: int = 120,
                                noise: float = 1.2, clip_look: float = 0.5,
                                ) -> tuple[dict[str, npt.NDArray[np.float32]], npt.NDArray[np.object_], npt.NDArray[np.int64]]:
    """Segment descriptors with planted activities, for clustering tests and benchmarks.

    Each activity has a centre per modality; a segment is its activity's centre plus Gaussian
    noise (``noise`` x the centres' spread). The scene modality also gets a per-clip offset
    (``clip_look``), the camera fingerprint that fusion must discount. Activity ``a`` keeps the
    same centres whatever ``n_activities`` is (centres come from ``seed`` and ``a``), so adding
    activities adds new groups without moving the old ones.

    Returns ``({modality: (n_segments, dim)}, clip_ids (n_segments,), activity (n_segments,))``.
    """
    dims = dims or {"scene": 64, "motion": 52, "ego": 16, "rhythm": 8}
    rng = np.random.default_rng(seed)
    activity = rng.integers(0, n_activities, n_segments)
    n_clips = max(2, n_segments // segments_per_clip)
    clip_idx = rng.integers(0, n_clips, n_segments)
    clip_ids = np.array([f"clip{c:05d}" for c in clip_idx], dtype=object)
    out: dict[str, npt.NDArray[np.float32]] = {}
    for m, (name, d) in enumerate(dims.items()):
        centres = np.stack([np.random.default_rng([seed, m, a]).normal(0.0, 1.0, d) for a in range(n_activities)])
        x = centres[activity] + rng.normal(0.0, noise, (n_segments, d))
        if name == "scene" and clip_look > 0:
            looks = np.random.default_rng([seed, m, 10_000]).normal(0.0, clip_look, (n_clips, d))
            x += looks[clip_idx]
        out[name] = x.astype(np.float32)
    return out, clip_ids, activity


DEFAULT_WIDTHS = {"scene": 135, "motion": 52, "ego": 16, "rhythm": 8, "pose": 17}  # the default config's desc_* widths
GPU_JOB_WIDTHS = {"scene": 768, "motion": 52, "ego": 16, "rhythm": 8, "video": 1024, "pose": 17}  # cluster_configs/job.yaml


def planted_segments_table(n_segments: int, n_clips: int, n_activities: int = 12, widths: Mapping[str, int] | None = None,
                           seed: int = 0, segment_s: float = 4.0, mean_bout: float = 5.0,
                           ) -> tuple[pa.Table, npt.NDArray[np.int64]]:
    """A segments table with the real schema (:data:`handclust.schema.SEGMENTS`) and planted
    activities, for scale benchmarks and tests of the post-stream path: ``n_clips`` clips of about
    equal length, rows of a clip in time order, bouts of one activity (geometric, mean ``mean_bout``
    segments), each descriptor its activity's centre + noise + a per-clip style offset; ``widths``
    per modality (default :data:`DEFAULT_WIDTHS`; modalities not registered are left out).

    Returns the table (clips in id order) and the true activity per row ``(n_segments,)``.
    """
    widths = {m: d for m, d in (widths or DEFAULT_WIDTHS).items() if m in schema.MODALITY_COLUMNS}
    rng = np.random.default_rng(seed)
    per_clip = np.full(n_clips, n_segments // n_clips)
    per_clip[: n_segments % n_clips] += 1
    clip_idx = np.repeat(np.arange(n_clips), per_clip)
    seg_idx = np.concatenate([np.arange(k) for k in per_clip]).astype(np.int32)
    # Bouts: an activity switch with probability 1 / mean_bout at each segment; clips start afresh.
    switch = (rng.random(n_segments) < 1.0 / mean_bout) | (seg_idx == 0)
    truth = rng.integers(0, n_activities, int(switch.sum()))[np.cumsum(switch) - 1].astype(np.int64)
    cols: dict[str, Any] = {}
    for m, (name, d) in enumerate(widths.items()):
        centres = np.random.default_rng([seed, m]).normal(0.0, 1.0, (n_activities, d)).astype(np.float32)
        style = np.random.default_rng([seed, m, 1]).normal(0.0, 0.5, (n_clips, d)).astype(np.float32)
        x = rng.standard_normal((n_segments, d), dtype=np.float32)
        x += centres[truth]
        x += style[clip_idx]
        if name == "pose":
            x[:, 0] = np.abs(x[:, 0])  # observed rate > 0: every segment saw a hand
        cols[schema.MODALITY_COLUMNS[name]] = x
    ids = np.array([f"{c:016x}" for c in range(n_clips)], dtype=object)
    fps_frames = 2 * segment_s  # 2 fps sampling
    n = n_segments
    cols.update({
        "clip_id": ids[clip_idx], "segment_id": [f"{ids[c]}-{i:05d}" for c, i in zip(clip_idx.tolist(), seg_idx.tolist())],
        "seg_idx": seg_idx, "frame_start": (seg_idx * fps_frames).astype(np.int32), "frame_end": ((seg_idx + 1) * fps_frames).astype(np.int32),
        "t_start": seg_idx * segment_s, "t_end": (seg_idx + 1) * segment_s, "boundary_detectors": np.full(n, "motion", object),
        "boundary_score": np.ones(n, np.float32), "rhythm_period_s": np.full(n, np.nan, np.float32),
        "rhythm_strength": np.zeros(n, np.float32), "ssm_period_s": np.full(n, np.nan, np.float32),
        "flow_period_s": np.full(n, np.nan, np.float32), "repetition_period_s": np.full(n, np.nan, np.float32),
        "unmeasured": [[] for _ in range(n)], "hand_looked": np.zeros(n, np.int32), "hand_detected": np.zeros(n, np.int32),
        "hand_propagated": np.zeros(n, np.int32),
    })
    return schema.table({k: v for k, v in cols.items() if k in schema.SEGMENTS.names}, schema.SEGMENTS), truth
