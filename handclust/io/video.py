"""Video input behind one interface: sample frames at a fixed rate, by timestamp.

Backends: PyAV (first choice and prober: faster here, flat in memory, decodes clips decord
rejects) and decord (selectable, and the fallback). ``open_video(path, backend=...)`` returns a
:class:`VideoSource` whose :meth:`~VideoSource.chunks` yields sampled frames in bounded chunks,
so memory does not grow with clip length; when the first backend yields no frame at all the
other one is tried, and which one decoded (and why) is recorded. Sampling is by presentation
timestamp, which keeps variable-frame-rate footage on the right clock; rotation metadata is
applied. A timestamp gap far longer than the frame period (:func:`gap_threshold_s`) ends
decoding there (the clip is ``partial``): no frames are made up across it.

The decode loop lives here and nowhere else: feature stages receive arrays, never open files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from handclust.errors import REENCODE_HINT as REENCODE_HINT
from handclust.errors import VideoError as VideoError  # defined with every error in handclust/errors.py

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mts", ".ts", ".mpg", ".mpeg")


CUT_SHORT_HINT = ("re-encoding cannot help (no tool can read it without the index): copy it again from the camera or "
                  "source, or rebuild the index with a repair tool such as untrunc (given a good clip from the same camera), "
                  "or remove it from the input")


def mp4_index_missing(path: Path) -> str | None:
    """Why an MP4/MOV (ISO-BMFF, ``ftyp`` first) cannot be opened when its top-level boxes show it was
    cut off before its index (``moov``) was written (a recording stopped by power loss, a partial
    copy); ``None`` for any other file."""
    size = path.stat().st_size
    kinds: list[bytes] = []
    with path.open("rb") as f:
        off = 0
        while off + 8 <= size:
            f.seek(off)
            head = f.read(16)
            n, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if n == 1 and len(head) == 16:
                n = int.from_bytes(head[8:16], "big")
            elif n == 0:  # the box runs to the end of the file
                n = size - off
            if n < 8 or not kind.isalnum():
                break
            kinds.append(kind)
            off += n
    if not kinds or kinds[0] != b"ftyp" or b"moov" in kinds:
        return None
    return (f"cut short: the file ends ({size} bytes) before its index (the MP4 'moov' box) was written, so its frames "
            "cannot be located")


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration_s: float
    source_fps: float
    width: int  # display width, after rotation
    height: int
    rotation: int  # degrees, counter-clockwise, applied to decoded frames
    codec: str = ""  # FFmpeg's name of the video codec (h264, hevc, vp9, av1, ...)


@dataclass
class FrameChunk:
    """Consecutive sampled frames of one clip.

    frames: ``(n, H, W, 3)`` uint8 RGB; t: ``(n,)`` seconds; frame_idx: ``(n,)`` sample index.
    model: the same frames at a video model's input size (:func:`model_frame_size`), decoded from the
    source frame, not enlarged from ``frames``; None unless the source was opened with ``model_input``.
    """

    frames: npt.NDArray[np.uint8]
    t: npt.NDArray[np.float64]
    frame_idx: npt.NDArray[np.int32]
    model: npt.NDArray[np.uint8] | None = None


def truncation_tolerance_s(source_fps: float) -> float:
    """How far before the container's duration the last frame may start without the clip being truncated:
    a frame period and a half (a 0.5 fps time-lapse ends 2 s after its last frame), at least 1 s."""
    return max(1.0, 1.5 / source_fps) if source_fps > 0 else 1.0


def gap_threshold_s(period_s: float) -> float:
    """A pause between consecutive frames longer than this is a gap in the recording, not a slow frame."""
    return max(5.0, 10.0 * period_s)


def sample_times(duration_s: float, sample_fps: float) -> npt.NDArray[np.float64]:
    n = int(np.floor(duration_s * sample_fps + 1e-6))
    return np.arange(max(n, 0), dtype=np.float64) / sample_fps


def output_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """Resize keeping aspect; both sides even (codecs and flow like even sizes)."""
    w = min(target_width, width) if width > 0 else target_width
    h = round(height * w / max(width, 1))
    return max(2, w - w % 2), max(2, h - h % 2)


def model_frame_size(width: int, height: int, model_input: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """For a display size and ``model_input`` = (short side, long side kept): the size to resize to
    (short side = the model's resize, aspect kept; not above the source) and the centred crop
    ``(width, height)`` kept of it (the long side cut to what the model's centre crop can reach)."""
    short, keep = model_input
    scale = min(short / max(min(width, height), 1), 1.0)
    rw, rh = max(2, round(width * scale)), max(2, round(height * scale))
    cw, ch = (min(rw, keep), rh) if rw >= rh else (rw, min(rh, keep))
    return (rw, rh), (cw, ch)


def _centre_crop(frame: npt.NDArray[np.uint8], crop: tuple[int, int]) -> npt.NDArray[np.uint8]:
    h, w = frame.shape[:2]
    cw, ch = crop
    y, x = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(frame[y:y + ch, x:x + cw])


def _rotate(frame: npt.NDArray[np.uint8], rotation: int) -> npt.NDArray[np.uint8]:
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frame, k)) if k else frame


def probe(path: str | Path) -> VideoInfo:
    """Read a clip's duration, rate, size and rotation, or raise :class:`VideoError`.

    A clip named by a URI (s3://, gs://) is fetched into the local clip cache first
    (:mod:`handclust.io.remote`); ``VideoInfo.path`` is then the local copy, errors name the URI.
    """
    import av

    from handclust.io.remote import is_uri, local_copy

    if is_uri(path):
        uri = str(path)
        try:
            local = local_copy(uri)
        except FileNotFoundError as exc:
            raise VideoError(uri, "not found on the object store", "check the manifest entry and the bucket") from exc
        except OSError as exc:
            raise VideoError(uri, f"could not be fetched ({exc})",
                             "check the store's credentials and network, then rerun (finished clips are kept)") from exc
        try:
            return probe(local)
        except VideoError as exc:
            raise VideoError(uri, exc.problem, exc.fix) from exc
    p = Path(path)
    if not p.exists():
        raise VideoError(p, "file not found", "check the path or the manifest entry")
    if p.stat().st_size == 0:
        raise VideoError(p, "file is empty (0 bytes)", "re-copy it from the camera, or remove it from the input")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        cut = mp4_index_missing(p)
        if cut:  # re-encoding needs the index too: say what can help
            raise VideoError(p, cut, CUT_SHORT_HINT) from exc
        raise VideoError(p, f"not a readable video container ({exc.__class__.__name__}: {exc})") from exc
    with container:
        if not container.streams.video:
            kinds = ", ".join(s.type for s in container.streams) or "none"
            raise VideoError(p, f"has no video stream (streams: {kinds})", "it is audio-only or a data file; remove it from the input")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = 0.0
        rotation = 0
        codec = str(stream.codec_context.name or "")
        try:
            first = next(container.decode(stream))
            rotation = int(getattr(first, "rotation", 0) or 0) % 360
            width, height = first.width, first.height
        except StopIteration:
            raise VideoError(p, "has a video stream but no decodable frames") from None
        except (av.error.FFmpegError, ValueError) as exc:
            raise VideoError(p, f"first frame cannot be decoded ({exc}); codec {stream.codec_context.name!r} may be unsupported or the file corrupt") from exc
    if rotation in (90, 270):
        width, height = height, width
    if duration <= 0 and fps > 0 and stream.frames:
        duration = stream.frames / fps
    if duration <= 0:
        raise VideoError(p, "reports zero duration")
    return VideoInfo(str(p), duration, fps, width, height, rotation, codec)


class VideoSource:
    """One open clip; iterate :meth:`chunks` for sampled frames."""

    backend = "base"

    def __init__(self, info: VideoInfo, sample_fps: float, width: int, chunk_frames: int,
                 model_input: tuple[int, int] | None = None):
        self.info = info
        self.sample_fps = sample_fps
        self.size = output_size(info.width, info.height, width)
        self.chunk_frames = chunk_frames
        # Chunks also carry each frame at a video model's input size (FrameChunk.model).
        self.model_input = model_input
        self.model_size = model_frame_size(info.width, info.height, model_input) if model_input else None
        self.truncated_at: float | None = None  # set when decoding stopped early
        self.gap: tuple[float, float] | None = None  # (last frame before, first frame after) a timestamp gap
        self.decoded_s = 0.0  # seconds of footage actually sampled

    def chunks(self) -> Iterator[FrameChunk]:
        raise NotImplementedError


class PyAVSource(VideoSource):
    backend = "pyav"

    def chunks(self) -> Iterator[FrameChunk]:
        import av

        fps = self.sample_fps
        w, h = self.size
        # Frames are reformatted before rotation, so swap the requested size for rotated clips.
        dec_w, dec_h = (h, w) if self.info.rotation in (90, 270) else (w, h)
        buf_f: list[npt.NDArray[np.uint8]] = []
        buf_t: list[float] = []
        buf_i: list[int] = []
        buf_m: list[npt.NDArray[np.uint8]] = []
        if self.model_size is not None:
            (mw, mh), model_crop = self.model_size
            mw, mh = (mh, mw) if self.info.rotation in (90, 270) else (mw, mh)
        k = 0  # next sample index; sample k is at time k / fps
        half = 0.5 / max(self.info.source_fps, 1.0)
        prev = None  # (time, av frame) on screen until the next frame's timestamp
        last_t = -1.0
        deltas: list[float] = []  # first frame-to-frame intervals: the clip's real frame period

        def emit(frame: object, until: float) -> Iterator[FrameChunk]:
            # The frame on screen at sample time s is the last one starting at or before s (+ half a frame).
            nonlocal k, buf_f, buf_t, buf_i, buf_m
            img = model = None
            while k / fps < until:
                if img is None:
                    img = _rotate(frame.to_ndarray(width=dec_w, height=dec_h, format="rgb24"), self.info.rotation)  # type: ignore[attr-defined]
                    if self.model_size is not None:
                        model = _centre_crop(_rotate(frame.to_ndarray(width=mw, height=mh, format="rgb24"),  # type: ignore[attr-defined]
                                                     self.info.rotation), model_crop)
                buf_f.append(img)
                buf_t.append(k / fps)
                buf_i.append(k)
                if model is not None:
                    buf_m.append(model)
                k += 1
                if len(buf_f) >= self.chunk_frames:
                    yield self._flush(buf_f, buf_t, buf_i, buf_m)
                    buf_f, buf_t, buf_i, buf_m = [], [], [], []

        try:
            with self._open() as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    if frame.pts is None or frame.time_base is None:
                        continue
                    t = float(frame.pts * frame.time_base)
                    if prev is not None:
                        period = float(np.median(deltas)) if deltas else 2 * half
                        if t - prev[0] > gap_threshold_s(period):
                            self.gap = (prev[0], t)
                            log.warning("%s: %.1f s with no frame after %.1f s; decoding stops at the gap",
                                        self.info.path, t - prev[0], prev[0])
                            break
                        if len(deltas) < 64 and t > prev[0]:
                            deltas.append(t - prev[0])
                        yield from emit(prev[1], t - half)
                    prev, last_t = (t, frame), t
        except (av.error.FFmpegError, ValueError) as exc:
            if prev is None:  # nothing decoded: the reason goes to FallbackSource (the next backend, or the clip's error)
                raise VideoError(self.info.path, f"decoded no frame ({exc})") from exc
            log.warning("%s: decoding stopped at %.1f s: %s", self.info.path, max(last_t, 0.0), exc)
            self.truncated_at = max(last_t, 0.0)
        # The last frame stays on screen one frame period; below 1 fps (slow sources, and clips whose
        # gaps drag the average rate down) the observed one, as ``half`` is capped there.
        period = float(np.median(deltas)) if deltas and self.info.source_fps < 1.0 else 2 * half
        if prev is not None:
            yield from emit(prev[1], last_t + period - 1e-9)
        if buf_f:
            yield self._flush(buf_f, buf_t, buf_i, buf_m)
        self.decoded_s = k / fps
        if self.gap is not None:
            self.truncated_at = self.gap[0]
        elif self.truncated_at is None and last_t + truncation_tolerance_s(self.info.source_fps) < self.info.duration_s:
            self.truncated_at = max(last_t, 0.0)

    def _open(self) -> Any:
        import av

        return av.open(self.info.path)

    @staticmethod
    def _flush(f: list[npt.NDArray[np.uint8]], t: list[float], i: list[int], m: list[npt.NDArray[np.uint8]]) -> FrameChunk:
        return FrameChunk(np.stack(f), np.asarray(t, dtype=np.float64), np.asarray(i, dtype=np.int32),
                          np.stack(m) if m else None)


class NvdecSource(PyAVSource):
    """PyAV with FFmpeg's CUDA hardware decoder (NVDEC): the GPU's video engine decodes, frames come
    back to system memory, and everything after (sampling, resizing, rotation) is PyAV's path.

    Chosen over torchcodec and PyNvVideoCodec because it is the same FFmpeg (PyAV's wheels ship
    with the ``cuda`` hardware device) and the same sampling code as the CPU decode, so the CPU twin
    differs only in the device: nothing extra to install, the same frames on screen at each sample
    time. No software fallback inside FFmpeg: a stream the GPU cannot decode (or a machine without
    one: opening the device fails) raises before the first frame, and :class:`FallbackSource`
    hands the clip to CPU PyAV, recording why.
    """

    backend = "nvdec"

    def _open(self) -> Any:
        import av
        from av.codec.hwaccel import HWAccel

        try:
            return av.open(self.info.path, hwaccel=HWAccel("cuda", allow_software_fallback=False))
        except (av.error.FFmpegError, OSError) as exc:  # no GPU, no driver, or the device is busy
            raise VideoError(self.info.path, f"NVDEC could not open a CUDA device ({exc})", "decoded on CPU instead") from exc


class DecordSource(VideoSource):
    backend = "decord"

    def chunks(self) -> Iterator[FrameChunk]:
        import decord

        w, h = self.size
        dec_w, dec_h = (h, w) if self.info.rotation in (90, 270) else (w, h)
        read_w, read_h = dec_w, dec_h
        if self.model_size is not None:
            # One decode for both sizes: the reader gives the larger, the other is resized from it here
            # (so with a video model on, decode-size frames are resized by OpenCV, not in the decoder).
            (mw, mh), model_crop = self.model_size
            mw, mh = (mh, mw) if self.info.rotation in (90, 270) else (mw, mh)
            if mw * mh > dec_w * dec_h:
                read_w, read_h = mw, mh
        # decord's resizer fails on very small outputs; there, decode full size and resize here.
        in_decoder = read_w >= 64 and read_h >= 36
        try:
            if in_decoder:
                vr = decord.VideoReader(self.info.path, width=read_w, height=read_h, num_threads=1)
            else:
                vr = decord.VideoReader(self.info.path, num_threads=1)
        except decord.DECORDError as exc:
            raise VideoError(self.info.path, f"decord cannot open it ({exc})") from exc
        n_src = len(vr)
        if n_src == 0:
            raise VideoError(self.info.path, "has no decodable frames")
        starts = vr.get_frame_timestamp(np.arange(n_src))[:, 0]
        half = 0.5 / max(self.info.source_fps, 1.0)
        ends = vr.get_frame_timestamp(n_src - 1)
        end = max(float(np.ravel(ends)[-1]), float(starts[-1]) + 2 * half)
        deltas = np.diff(starts)
        if len(deltas):
            period = float(np.median(deltas[:64]))
            gaps = np.flatnonzero(deltas > gap_threshold_s(period))
            if len(gaps):
                g = int(gaps[0])
                self.gap = (float(starts[g]), float(starts[g + 1]))
                log.warning("%s: %.1f s with no frame after %.1f s; decoding stops at the gap",
                            self.info.path, self.gap[1] - self.gap[0], self.gap[0])
                n_src, starts = g + 1, starts[: g + 1]
                end = float(starts[-1]) + min(2 * half, period)
        targets = sample_times(end, self.sample_fps)
        # The frame on screen at time t is the last one whose start is <= t (+ half a frame of slack).
        idx = np.clip(np.searchsorted(starts, targets + half, side="right") - 1, 0, n_src - 1)
        if self.gap is not None:
            self.truncated_at = self.gap[0]
        elif float(starts[-1]) + truncation_tolerance_s(self.info.source_fps) < self.info.duration_s:
            self.truncated_at = float(starts[-1])
        for lo in range(0, len(targets), self.chunk_frames):
            sel = idx[lo : lo + self.chunk_frames]
            try:
                frames = vr.get_batch(list(sel)).asnumpy()
            except decord.DECORDError as exc:
                log.warning("%s: decord stopped at %.1f s: %s", self.info.path, targets[lo], exc)
                self.truncated_at = float(targets[lo])
                return
            model = None
            if self.model_size is not None:
                import cv2

                big = frames
                if big.shape[1:3] != (mh, mw):
                    big = np.stack([cv2.resize(f, (mw, mh), interpolation=cv2.INTER_AREA) for f in frames])
                model = np.stack([_centre_crop(_rotate(f, self.info.rotation), model_crop) for f in big])
            if frames.shape[1:3] != (dec_h, dec_w):
                import cv2

                frames = np.stack([cv2.resize(f, (dec_w, dec_h), interpolation=cv2.INTER_AREA) for f in frames])
            if self.info.rotation:
                frames = np.stack([_rotate(f, self.info.rotation) for f in frames])
            yield FrameChunk(frames, targets[lo : lo + self.chunk_frames].copy(),
                             np.arange(lo, lo + len(sel), dtype=np.int32), model)
            self.decoded_s = (lo + len(sel)) / self.sample_fps


BACKENDS: dict[str, type[VideoSource]] = {"decord": DecordSource, "pyav": PyAVSource, "nvdec": NvdecSource}


def available_backends() -> list[str]:
    out = []
    for name, module in (("decord", "decord"), ("pyav", "av")):
        try:
            __import__(module)
            out.append(name)
        except ImportError:
            pass
    if "pyav" in out:
        from av.codec.hwaccel import hwdevices_available

        if "cuda" in hwdevices_available():  # FFmpeg built with it; whether a GPU is there shows on opening
            out.append("nvdec")
    return out


class FallbackSource(VideoSource):
    """Decodes with the first backend of ``order`` that yields frames; records which one and why.

    A backend that fails (raises, or yields no frame) before its first chunk hands the clip to the
    next one; one that fails later has already passed frames on, so the clip ends there (truncated).
    """

    def __init__(self, info: VideoInfo, sample_fps: float, width: int, chunk_frames: int, order: list[str], why: str,
                 model_input: tuple[int, int] | None = None):
        super().__init__(info, sample_fps, width, chunk_frames, model_input)
        self.order = order
        self.backend = order[0]
        self.why = why  # how the backend was chosen, and any fallback (status records keep it)

    def chunks(self) -> Iterator[FrameChunk]:
        problems: list[str] = []
        for name in self.order:
            src = BACKENDS[name](self.info, self.sample_fps, self.size[0], self.chunk_frames, self.model_input)
            src.size = self.size
            self.backend = name
            yielded = False
            try:
                for chunk in src.chunks():
                    yielded = True
                    yield chunk
            except Exception as exc:  # a backend's own failure: the next one may read the clip
                if yielded:
                    log.warning("%s: %s stopped at %.1f s: %s", self.info.path, name, src.decoded_s, exc)
                    self.truncated_at = src.decoded_s
                    self.decoded_s = src.decoded_s
                    return
                problems.append(f"{name}: {getattr(exc, 'problem', exc)}")
            else:
                if yielded:
                    self.truncated_at, self.gap, self.decoded_s = src.truncated_at, src.gap, src.decoded_s
                    return
                problems.append(f"{name}: no frame decoded")
            if name != self.order[-1]:
                nxt = self.order[self.order.index(name) + 1]
                log.warning("%s: %s failed (%s); falling back to %s", self.info.path, name, problems[-1], nxt)
                self.why += f"; {problems[-1]}, so {nxt} decoded it"
        raise VideoError(self.info.path, "no backend could decode a frame (" + "; ".join(problems) + ")")


def open_video(path: str | Path, sample_fps: float = 5.0, width: int = 320, chunk_frames: int = 64,
               backend: str = "auto", model_input: tuple[int, int] | None = None, hwaccel: str = "none") -> VideoSource:
    """Probe a clip and open it with ``backend`` (``"auto"``: PyAV, then decord), falling back to the other.

    ``model_input`` (short side, long side kept): chunks also carry each sampled frame at that size
    (:attr:`FrameChunk.model`), for a video model fed from this decode instead of decoding again.
    ``hwaccel="cuda"`` (or ``backend="nvdec"``): NVDEC first (:class:`NvdecSource`), the CPU
    backends after it.
    """
    info = probe(path)
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose one of {sorted(BACKENDS)} or 'auto'")
    names = available_backends()
    first = "pyav" if backend == "auto" else backend
    order = [first] + [b for b in ("pyav", "decord") if b != first and b in names]
    why = "decode.backend=auto: PyAV first" if backend == "auto" else f"decode.backend={backend}"
    if hwaccel == "cuda" or backend == "nvdec":
        order = [b for b in order if b != "nvdec"] or ["pyav"]  # the CPU backends, after NVDEC where there is one
        if "nvdec" in names:
            order.insert(0, "nvdec")
            why += "; decode.hwaccel=cuda: NVDEC first"
        else:
            why += "; decode.hwaccel=cuda, but this FFmpeg has no cuda device: CPU decoding"
    if info.rotation and "decord" in order:
        # decord ignores the display matrix of rotated (phone) footage; PyAV honours it.
        order = [b for b in order if b != "decord"] or ["pyav"]
        why += f"; decord skipped (it ignores the {info.rotation} degree rotation)"
    return FallbackSource(info, sample_fps, width, chunk_frames, order, why, model_input)


def read_range(path: str | Path, t_start: float, t_end: float, n_frames: int, width: int = 256) -> npt.NDArray[np.uint8]:
    """Re-decode ``n_frames`` evenly spread over ``[t_start, t_end)`` (for keyframes, reels, video models).

    Returns ``(n_frames, H, W, 3)`` uint8.
    """
    import av

    info = probe(path)
    w, h = output_size(info.width, info.height, width)
    dec_w, dec_h = (h, w) if info.rotation in (90, 270) else (w, h)
    targets = np.linspace(t_start, max(t_start, t_end - 1e-3), n_frames)
    out: list[npt.NDArray[np.uint8]] = []
    with av.open(info.path) as container:  # the local copy when ``path`` is a URI
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if t_start > 1.0 and stream.time_base is not None:
            container.seek(int(max(0.0, t_start - 1.0) / stream.time_base), stream=stream, backward=True)
        k = 0
        last = None
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * frame.time_base)
            while k < n_frames and t >= targets[k]:
                if last is None:
                    last = _rotate(frame.to_ndarray(width=dec_w, height=dec_h, format="rgb24"), info.rotation)
                out.append(last)
                k += 1
            last = None
            if k >= n_frames:
                break
    if not out:
        raise VideoError(path, f"no frames decodable between {t_start:.1f} s and {t_end:.1f} s")
    while len(out) < n_frames:
        out.append(out[-1])
    return np.stack(out)
