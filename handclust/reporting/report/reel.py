"""The preview reel ``report/reel.mp4``: per activity a title card, then a few seconds of its most typical segments.

Frames are re-decoded from the clips (raw frames are never stored); text on the frames is drawn
with Pillow in ASCII (the default font has no other glyphs).
"""

from __future__ import annotations

import base64
import logging
import textwrap
import unicodedata
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from handclust.colours import activity_colour
from handclust.io import layout
from handclust.io.storage import OutputStore
from handclust.progress import Progress
from handclust.reporting.report.data import MAX_ACTIVITIES, RunData, example_segments

log = logging.getLogger(__name__)


REEL_SEGMENTS = 3
REEL_SEGMENT_S = 3.0
REEL_TITLE_S = 1.5
REEL_FPS = 10
REEL_SIZE = (480, 270)  # even, for yuv420p


def jpeg_data_uri(frame: npt.NDArray[np.uint8], quality: int = 80) -> str:
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


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
    names = data.clip_names
    chapters = []
    for c in data.activities[:MAX_ACTIVITIES]:
        members = data.segments[data.segments.cluster == c]
        excerpts = []
        for r in example_segments(data, c, REEL_SEGMENTS).itertuples():
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


def reel_excerpts(data: RunData, chapters: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The excerpts :func:`write_reel` will show (decoded in advance, where the footage is)."""
    return [data.excerpt(ex["clip_id"], ex["t_start"], ex["t_end"], ex["frames"], REEL_SIZE[0])
            for ch in chapters for ex in ch["excerpts"] if ex["clip_id"] in data.paths]


def write_reel(data: RunData, chapters: list[dict[str, Any]], rel: str, progress: Progress) -> float:
    """Encode the reel (H.264, yuv420p) to ``rel`` in the store; returns its duration in seconds."""
    import tempfile

    import av

    from handclust.io.video import VideoError

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
                put(title_card(ch["title"], ch["subtitle"], activity_colour(ch["cluster"])), ch["title_frames"])
                for ex in ch["excerpts"]:
                    caption = f"{ch['cluster']}: {ch['title']} | {ex['clip']} {ex['t_start']:.1f}-{ex['t_end']:.1f} s"
                    try:
                        frames = data.frames(ex["clip_id"], ex["t_start"], ex["t_end"], ex["frames"], REEL_SIZE[0])
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


def chapter_starts(chapters: list[dict[str, Any]]) -> list[float]:
    """Second of the reel at which each chapter starts."""
    starts, t = [], 0.0
    for ch in chapters:
        starts.append(t)
        t += (ch["title_frames"] + sum(e["frames"] for e in ch["excerpts"])) / REEL_FPS
    return starts


def remove_reel(store: OutputStore) -> None:
    for rel in (layout.REEL, layout.REEL_JSON):
        if store.exists(rel):
            store.fs.delete_file(store.path(rel))
