"""Sample footage v2: two trades in two worlds, bouts of varied length, low-frame-rate sources.

Hard in the ways real helmet-camera footage is hard (issue 9):

- **Trades share some activities and not others.** ``masonry`` clips (brick wall, mortar tub,
  brick pallet on gravel) show ``laying`` and ``scooping``; ``framing`` clips (OSB deck, stud
  wall, sawhorses, lumber stack) show ``nailing`` (a hammer strike every 0.55-0.9 s, the camera
  jolting on each impact) and ``sawing`` (handsaw strokes every 0.5-0.8 s, the other hand holding
  the board). Both show ``walking`` and ``idle``, under the same labels, in their own worlds.
- **Several bouts per clip, of varied length**: log-normal around 12 s, 4-40 s (at least four
  source frames), so a clip holds many instances of an activity and short ones are easy to miss.
- **Per-clip style** (white balance, exposure, gamma, noise, vignetting, fisheye) wider than v1:
  the same activity looks more different between two clips than two activities within one clip.
- **Low-frame-rate sources**: a clip drawn at 0.5 fps and written as a 0.5 fps MP4 (a timelapse
  helmet cam), and one drawn at 1 fps and re-encoded at 30 fps by holding each frame (every
  frame repeated 30 times). The ground truth covers the file's own frames and timestamps.

File names carry the phase and the trade (``03_production_framing.mp4``); the set repeats
:data:`PATTERN` with new seeds. ``truth.json`` records per clip its trade, phase, source fps, file
fps, hold and bouts; ``ground_truth.parquet`` has a ``trade`` column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from handclust.synthetic.footage_v1 import (
    HEAD_DRIFT,
    Bout,
    ClipStyle,
    Head,
    Mp4Writer,
    PlannedClip,
    _glove,
    _Renderer,
    _smooth_noise,
    _world,
    draw_masonry_hands,
    write_sample_set,
)

SHARED_ACTIVITIES = ("walking", "idle")
# Per trade, its (main, second) activity: the work of production and of prep.
TRADE_ACTIVITIES: dict[str, tuple[str, str]] = {"masonry": ("laying", "scooping"), "framing": ("nailing", "sawing")}
ACTIVITIES = (*SHARED_ACTIVITIES, *(a for pair in TRADE_ACTIVITIES.values() for a in pair))
# How often each activity occurs within a phase, on the trade's main / second activity.
PHASE_MIX: dict[str, dict[str, float]] = {
    "production": {"main": 0.45, "second": 0.2, "walking": 0.15, "idle": 0.2},
    "prep": {"second": 0.45, "main": 0.15, "walking": 0.2, "idle": 0.2},
    "transit": {"walking": 0.55, "idle": 0.25, "main": 0.1, "second": 0.1},
    "downtime": {"idle": 0.55, "walking": 0.3, "main": 0.15},
}
# Every clip shows these (so the shared activities are in every trade), plus walking and idle.
PHASE_MUST = {"production": ("main",), "prep": ("second",), "transit": (), "downtime": ()}
PERIOD_S = {"walking": (1 / 1.9, 1 / 1.6), "laying": (2.0, 4.0), "scooping": (1.5, 2.5),
            "nailing": (0.55, 0.9), "sawing": (0.5, 0.8)}
DRIFT = {**HEAD_DRIFT, "nailing": 6.0, "sawing": 8.0}
TILE = 1200
REGIONS: dict[str, dict[str, int]] = {
    "masonry": {"ground": 0, "wall": 1, "tub": 2, "pallet": 3},
    "framing": {"deck": 0, "studs": 1, "sawhorse": 2, "lumber": 3},
}
WORK_REGION = {"laying": "wall", "scooping": "tub", "nailing": "studs", "sawing": "sawhorse"}
BOUT_MEDIAN_S, BOUT_SIGMA, BOUT_RANGE_S = 12.0, 0.6, (4.0, 40.0)


@dataclass(frozen=True)
class ClipSpec:
    """One clip of the repeating pattern. ``source_fps`` None: the set's ``fps``. ``file_fps``
    None: written at the source rate; else each source frame is held for file_fps / source_fps
    frames."""

    phase: str
    trade: str
    source_fps: float | None = None
    file_fps: float | None = None


PATTERN = (
    ClipSpec("production", "masonry"),
    ClipSpec("prep", "masonry", source_fps=1.0, file_fps=30.0),
    ClipSpec("production", "framing", source_fps=0.5),
    ClipSpec("transit", "framing"),
)


def _wood(rng: np.random.Generator, h: int, w: int, colour: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """``(h, w, 3)`` planed timber, grain along x."""
    grain = cv2.resize(rng.standard_normal((max(2, h // 3), max(2, w // 90))).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    return np.asarray(colour, np.float32) + (grain * 14 + _smooth_noise(rng, h, w, (8, 40)) * 10)[..., None]


def _framing_world(rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Four regions side by side: OSB deck, stud wall, sawhorses with a board, lumber stack."""
    h, w = TILE, 4 * TILE
    regions = REGIONS["framing"]
    osb = np.array([196, 160, 105], np.float32) + rng.uniform(-20, 20, 3)
    world = np.clip(osb + _smooth_noise(rng, h, w, (4, 30))[..., None] * 16, 0, 255).astype(np.uint8)
    for _ in range(2500):  # the pressed flakes of oriented strand board
        c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        col = np.clip(osb + rng.uniform(-35, 25), 0, 255).tolist()
        cv2.ellipse(world, c, (int(rng.uniform(6, 18)), int(rng.uniform(2, 5))), float(rng.uniform(0, 180)), 0, 360, col, -1)
    for x in range(0, w, 600):  # sheet seams and nail rows over the joists
        cv2.line(world, (x, 0), (x, h), (95, 75, 50), 3)
        for y in range(20, h, 40):
            cv2.circle(world, (x + 300, y), 3, (70, 70, 75), -1)
    timber = np.array([222, 190, 135], np.float32) + rng.uniform(-18, 18, 3)
    # Stud wall: the site beyond, seen between studs 16" apart, plates top and bottom.
    x0 = TILE * regions["studs"]
    beyond = np.array([105, 112, 104], np.float32) + rng.uniform(-20, 20, 3)
    world[:, x0 : x0 + TILE] = np.clip(beyond + _smooth_noise(rng, h, TILE, (10, 50))[..., None] * 30, 0, 255).astype(np.uint8)
    stud_w = int(rng.uniform(48, 62))
    for x in range(x0 + 40, x0 + TILE - stud_w, int(rng.uniform(180, 210))):
        world[:, x : x + stud_w] = np.clip(_wood(rng, stud_w, h, timber).transpose(1, 0, 2), 0, 255).astype(np.uint8)
        cv2.line(world, (x, 0), (x, h), (120, 95, 60), 2)
    for y0, y1 in ((60, 115), (118, 172), (1040, 1100)):
        world[y0:y1, x0 : x0 + TILE] = np.clip(_wood(rng, y1 - y0, TILE, timber), 0, 255).astype(np.uint8)
    # Sawhorses with a board across them, a pencil line and sawdust below.
    x0 = TILE * regions["sawhorse"]
    for sx in (x0 + 250, x0 + 850):
        for dx in (-70, 70):
            cv2.line(world, (sx, 560), (sx + dx, 1000), (60, 55, 50), 26)
        cv2.rectangle(world, (sx - 60, 540), (sx + 60, 580), (70, 62, 55), -1)
    for _ in range(400):
        c = (int(x0 + 600 + rng.normal(0, 60)), int(760 + rng.normal(0, 40)))
        cv2.circle(world, c, int(rng.uniform(1, 4)), np.clip(timber + 20, 0, 255).tolist(), -1)
    world[500:640, x0 + 60 : x0 + TILE - 60] = np.clip(_wood(rng, 140, TILE - 120, timber), 0, 255).astype(np.uint8)
    cv2.line(world, (x0 + 600, 500), (x0 + 600, 640), (50, 50, 60), 3)
    # Lumber stack: boards side by side, each its own tone, dark gaps between.
    x0 = TILE * regions["lumber"]
    for y in range(150, 1050, 78):
        tone = timber + rng.uniform(-25, 15, 3)
        x_start = x0 + 150 + int(rng.uniform(-40, 40))
        world[y : y + 70, x_start : x_start + 900] = np.clip(_wood(rng, 70, 900, tone), 0, 255).astype(np.uint8)
        cv2.rectangle(world, (x_start, y), (x_start + 900, y + 70), (90, 70, 45), 2)
    return world


WORLDS: dict[str, Callable[[np.random.Generator], npt.NDArray[np.uint8]]] = {"masonry": _world, "framing": _framing_world}


def _style(rng: np.random.Generator) -> ClipStyle:
    """Wider than v1's in colour and lens: cameras, seasons and times of day differ more than the work does."""
    return ClipStyle(
        gains=tuple(float(g) for g in rng.uniform(0.6, 1.4, 3)),  # type: ignore[arg-type]
        gamma=float(rng.uniform(0.6, 1.6)),
        offset=float(rng.uniform(-35, 35)),
        noise_sigma=float(rng.uniform(2, 9)),  # as v1: more is mostly bits (a 36 MB clip at 11)
        fisheye_k=float(rng.uniform(0.05, 0.45)),
        vignette=float(rng.uniform(0.1, 0.55)),
    )


def plan_bouts(rng: np.random.Generator, trade: str, phase: str, duration_s: float,
               min_bout_s: float = BOUT_RANGE_S[0]) -> list[Bout]:
    """Bouts covering ``[0, duration_s)``, log-normal lengths in ``[min_bout_s, 40]`` s and at most
    a third of the clip (so at least three), no activity twice in a row. Redrawn until the clip
    shows walking, idle and its phase's work (see :data:`PHASE_MUST`)."""
    main, second = TRADE_ACTIVITIES[trade]
    alias = {"main": main, "second": second}
    mix = {alias.get(k, k): p for k, p in PHASE_MIX[phase].items()}
    must = {*SHARED_ACTIVITIES, *(alias[k] for k in PHASE_MUST[phase])}
    names, probs = list(mix), np.array(list(mix.values()))
    lo, hi = max(BOUT_RANGE_S[0], min_bout_s), min(BOUT_RANGE_S[1], duration_s / 3)
    if hi < lo:
        raise ValueError(f"{duration_s:g} s is too short for three bouts of at least {lo:g} s")
    regions = REGIONS[trade]
    for _ in range(200):
        bouts: list[Bout] = []
        t, prev = 0.0, ""
        while t < duration_s - 1e-6:
            p = probs * np.array([0.0 if n == prev else 1.0 for n in names])
            act = names[int(rng.choice(len(names), p=p / p.sum()))]
            length = float(np.clip(rng.lognormal(np.log(BOUT_MEDIAN_S), BOUT_SIGMA), lo, hi))
            if duration_s - (t + length) < lo:  # no sliver at the end
                length = duration_s - t
            period = float(rng.uniform(*PERIOD_S[act])) if act in PERIOD_S else 0.0
            region = WORK_REGION.get(act) or str(rng.choice(list(regions)))
            ax = TILE * regions[region] + TILE / 2 + rng.uniform(-120, 120)
            ay = TILE / 2 + rng.uniform(-120, 120)
            bouts.append(Bout(act, t, min(t + length, duration_s), period, float(ax), float(ay)))
            t += length
            prev = act
        if must <= {b.activity for b in bouts}:
            return bouts
    raise ValueError(f"no plan of {duration_s:g} s shows {sorted(must)}; make the clip longer")


def _body_shake(bout: Bout, tb: float) -> float:
    """Vertical camera shake (world px) from the work itself: a jolt on each hammer impact, a
    sway with each saw stroke."""
    if bout.activity == "nailing":
        since_impact = (tb / bout.period_s) % 1.0 * bout.period_s
        return float(6.0 * np.exp(-since_impact / 0.08))
    if bout.activity == "sawing":
        return float(3.0 * np.sin(2 * np.pi * tb / bout.period_s))
    return 0.0


def _draw_framing_hands(img: npt.NDArray[np.uint8], bout: Bout, tb: float, glove_colour: tuple[int, int, int]) -> None:
    """The gloved hands of ``nailing`` (a hammer swinging about the elbow onto a nail that sinks
    over four strikes) and ``sawing`` (a handsaw stroking along the cut, the other hand on the board)."""
    h, w = img.shape[:2]
    u = w / 640  # tool sizes follow the frame; the glove keeps v1's size
    if bout.activity == "nailing":
        beat = tb / bout.period_s
        phase = beat % 1.0
        nail = np.array([w * 0.42, h * (0.3 + 0.1 * ((beat // 4) % 4))])  # a new nail every four strikes
        sunk = (beat % 4) / 4
        tip = nail + (u * (12 * (1 - sunk) + 2), -u * (14 * (1 - sunk) + 2))
        cv2.line(img, (int(nail[0]), int(nail[1])), (int(tip[0]), int(tip[1])), (150, 150, 155), max(2, int(4 * u)))
        # Slow raise over 75 % of the beat, fast strike over the rest; impact on the beat.
        lift = 0.75 * (np.sin(np.pi / 2 * phase / 0.75) if phase < 0.75 else np.cos(np.pi / 2 * (phase - 0.75) / 0.25))
        elbow = np.array([w * 0.9, h * 1.15])
        c, s = np.cos(lift), np.sin(lift)
        rot = np.array([[c, -s], [s, c]])  # swings the hammer up and back over the shoulder
        head = elbow + rot @ (nail + u * np.array([6, -10]) - elbow)
        hand = elbow + rot @ (nail + u * np.array([116, 80]) - elbow)
        cv2.line(img, (int(hand[0]), int(hand[1])), (int(head[0]), int(head[1])), (120, 80, 40), max(3, int(12 * u)))
        d = rot @ np.array([0.6, -0.8])
        a, b = head + 26 * u * d, head - 16 * u * d
        cv2.line(img, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), (55, 58, 64), max(5, int(20 * u)))
        _glove(img, hand[0], hand[1], w, h, glove_colour, carry=False)
    elif bout.activity == "sawing":
        cut = np.array([w * 0.46, h * 0.5])
        axis = np.array([0.55, 0.83])  # from the handle down into the board
        normal = np.array([axis[1], -axis[0]])
        heel = cut - axis * 120 * u + axis * 55 * u * np.sin(2 * np.pi * tb / bout.period_s)
        toe = heel + axis * 240 * u
        blade = np.array([heel, heel + normal * 44 * u, toe + normal * 26 * u, toe]).astype(np.int32)
        cv2.fillPoly(img, [blade], (185, 188, 195))
        grip0, grip = heel + normal * 22 * u, heel - axis * 30 * u + normal * 22 * u
        cv2.line(img, (int(grip0[0]), int(grip0[1])), (int(grip[0]), int(grip[1])), (150, 40, 30), max(5, int(22 * u)))
        for x, y in cut + np.random.default_rng(int(tb * 1000)).normal(0, 12 * u, (6, 2)):  # sawdust at the cut
            cv2.circle(img, (int(x), int(y)), max(1, int(2 * u)), (235, 215, 170), -1)
        _glove(img, grip[0], grip[1], w, h, glove_colour, carry=False)
        _glove(img, w * 0.18 + 3 * np.sin(tb), h * 0.62, w, h, glove_colour, carry=False)  # holding the board


def render_clip_v2(path: Path, trade: str, phase: str, duration_s: float, seed: int, source_fps: float = 15.0,
                   hold: int = 1, size: tuple[int, int] = (640, 360)) -> tuple[list[Bout], ClipStyle]:
    """Write one clip drawn at ``source_fps`` to ``path``, each frame written ``hold`` times (at
    ``source_fps * hold`` frames/s); return its bouts (the truth) and style."""
    if trade not in TRADE_ACTIVITIES:
        raise ValueError(f"trade {trade!r}: choose one of {sorted(TRADE_ACTIVITIES)}")
    rng = np.random.default_rng(seed)
    world = WORLDS[trade](rng)
    style = _style(rng)
    bouts = plan_bouts(rng, trade, phase, duration_s, min_bout_s=4 / source_fps)
    render = _Renderer(world, style, size, rng)
    glove_colour = tuple(int(v) for v in rng.uniform([170, 140, 0], [240, 210, 70]))
    head = Head(bouts[0].anchor_x, bouts[0].anchor_y, drift=DRIFT)
    draw_hands = draw_masonry_hands if trade == "masonry" else _draw_framing_hands
    n = int(round(duration_s * source_fps))
    with Mp4Writer(path, source_fps * hold, size) as out:
        b = 0
        for k in range(n):
            t = k / source_fps
            while b < len(bouts) - 1 and t >= bouts[b].t_end:
                b += 1
            bout = bouts[b]
            tb = t - bout.t_start
            cx, cy, zoom, roll = head.pose(bout, b, tb, 1 / source_fps)
            img = render.view(cx, cy + _body_shake(bout, tb), zoom, roll)
            draw_hands(img, bout, tb, glove_colour)  # type: ignore[arg-type]
            out.write(render.finish(img, k), repeat=hold)
    return bouts, style


def clip_specs(n_clips: int, pattern: Sequence[ClipSpec] = PATTERN) -> list[tuple[str, ClipSpec]]:
    """``(filename, spec)`` pairs: ``pattern`` repeated, named ``NN_<phase>_<trade>.mp4``."""
    out = []
    for i in range(n_clips):
        spec = pattern[i % len(pattern)]
        out.append((f"{i + 1:02d}_{spec.phase}_{spec.trade}.mp4", spec))
    return out


def make_sample_footage_v2(out_dir: str | Path, n_clips: int = 4, minutes: float = 1.5, seed: int = 0,
                           fps: float = 15.0, size: tuple[int, int] = (640, 360),
                           progress: Callable[[str], None] | None = None,
                           pattern: Sequence[ClipSpec] = PATTERN) -> Path:
    """Render ``n_clips`` clips of ``minutes`` each (``pattern`` repeated, clip ``i`` from seed
    ``seed * 1000 + i``) into ``out_dir`` with ``truth.json`` and ``ground_truth.parquet``.

    ``fps`` is the rate of clips whose spec names none. Existing clips with the same parameters
    are kept, so an interrupted call resumes.
    """
    clips = []
    for i, (name, spec) in enumerate(clip_specs(n_clips, pattern)):
        source_fps = spec.source_fps or fps
        shortest_bout = max(BOUT_RANGE_S[0], 4 / source_fps)
        if minutes * 60 < 3 * shortest_bout:  # checked before anything is drawn
            raise ValueError(f"{minutes:g} min is too short for {name}: at {source_fps:g} fps it needs three bouts "
                             f"of at least {shortest_bout:g} s, i.e. {3 * shortest_bout / 60:.2g} min")
        hold = max(1, int(round((spec.file_fps or source_fps) / source_fps)))
        params = {"version": 2, "minutes": minutes, "seed": seed, "fps": fps, "size": list(size),
                  "source_fps": source_fps, "hold": hold}

        def render(path: Path, spec: ClipSpec = spec, i: int = i, source_fps: float = source_fps,
                   hold: int = hold) -> dict[str, Any]:
            bouts, style = render_clip_v2(path, spec.trade, spec.phase, minutes * 60.0, seed=seed * 1000 + i,
                                          source_fps=source_fps, hold=hold, size=size)
            return {"version": 2, "phase": spec.phase, "trade": spec.trade, "source_fps": source_fps,
                    "fps": source_fps * hold, "hold": hold, "clip_seed": seed * 1000 + i,
                    "style": asdict(style), "bouts": [asdict(b) for b in bouts]}

        held = f", held to {source_fps * hold:g} fps" if hold > 1 else ""
        clips.append(PlannedClip(name, params, f"{minutes:g} min, {spec.trade} {spec.phase}, {source_fps:g} fps{held}", render))
    return write_sample_set(out_dir, clips, progress)
