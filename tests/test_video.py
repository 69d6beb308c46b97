"""Video input: sampling by timestamp, both backends, rotation, and every kind of bad file."""

from pathlib import Path

import numpy as np
import pytest

from handclust.video import VideoError, open_video, probe, read_range


def _write(path: Path, frames: list[np.ndarray], fps: int = 10, pts: list[int] | None = None, rotation: int = 0) -> Path:
    import av

    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        if pts is not None:
            s.codec_context.time_base = s.time_base = __import__("fractions").Fraction(1, 1000)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            if pts is not None:
                vf.pts = pts[i]
                vf.time_base = s.time_base
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _numbered(n: int, h: int = 64, w: int = 96) -> list[np.ndarray]:
    """Frames whose brightness encodes their index (index * 8)."""
    return [np.full((h, w, 3), (i * 8) % 256, np.uint8) for i in range(n)]


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_samples_at_fixed_rate_by_timestamp(tmp_path: Path, backend: str):
    p = _write(tmp_path / "a.mp4", _numbered(30), fps=10)  # 3 s
    src = open_video(p, sample_fps=5, width=48, backend=backend)
    chunks = list(src.chunks())
    frames = np.concatenate([c.frames for c in chunks])
    t = np.concatenate([c.t for c in chunks])
    assert frames.shape == (15, 32, 48, 3)  # resized on decode, aspect kept
    assert np.allclose(t, np.arange(15) / 5)
    # Every second source frame: brightness 0, 16, 32, ...
    assert np.allclose(frames[:, 16, 24, 0], np.arange(15) * 16, atol=6)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_chunks_bound_memory(tmp_path: Path, backend: str):
    p = _write(tmp_path / "a.mp4", _numbered(40), fps=10)
    src = open_video(p, sample_fps=10, width=48, chunk_frames=7, backend=backend)
    sizes = [len(c.frames) for c in src.chunks()]
    assert max(sizes) <= 7 and sum(sizes) == 40


def test_variable_frame_rate_follows_timestamps(tmp_path: Path):
    # 10 frames in the first second, then 2 frames over the next 2 seconds: sampling must follow pts.
    pts = [i * 100 for i in range(10)] + [1000, 2000, 2900]
    p = _write(tmp_path / "vfr.mp4", _numbered(13), fps=10, pts=pts)
    src = open_video(p, sample_fps=2, width=48, backend="pyav")
    frames = np.concatenate([c.frames for c in src.chunks()])
    got = np.round(frames[:, 16, 24, 0] / 8).astype(int).tolist()
    assert got[:4] == [0, 5, 10, 10]  # t=0, 0.5, 1.0, 1.5 s -> frames 0, 5, 10 (shown 1..2 s), 10


def test_rotation_metadata_is_applied(tmp_path: Path):
    import subprocess

    import imageio_ffmpeg

    frames = [np.zeros((64, 96, 3), np.uint8) for _ in range(5)]
    for f in frames:
        f[:8, :, :] = 255  # a white band along the top edge
    p = _write(tmp_path / "rot.mp4", frames)
    rotated = tmp_path / "rot90.mp4"  # same stream, display matrix says: rotate 90 degrees
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-display_rotation", "90",
                    "-i", str(p), "-c", "copy", str(rotated)], check=True)
    info = probe(rotated)
    assert info.rotation == 90
    assert (info.width, info.height) == (64, 96)
    for backend in ("pyav", "auto"):
        frame = next(iter(open_video(rotated, sample_fps=5, width=64, backend=backend).chunks())).frames[0]
        assert frame.shape[:2] == (96, 64), backend
        # The top band is now along a side edge (portrait), not the top.
        assert frame[:, :6].mean() > 200 or frame[:, -6:].mean() > 200, backend


def test_read_range_redecodes_a_time_span(short_clip: Path):
    frames = read_range(short_clip, 2.0, 6.0, 8, width=160)
    assert frames.shape == (8, 90, 160, 3)
    assert frames.std() > 0


def _file(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: d / "missing.mp4", "file not found"),
        (lambda d: _file(d / "empty.mp4", b""), "empty"),
        (lambda d: _file(d / "junk.mp4", b"\x00garbage" * 500), "not a readable video"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path: Path, make, needle: str):
    p = make(tmp_path)
    with pytest.raises(VideoError, match=needle) as err:
        probe(p)
    assert str(p) in str(err.value)  # names the file


def test_audio_only_file_is_named(tmp_path: Path):
    import av

    p = tmp_path / "voice.m4a"
    with av.open(str(p), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=16000)
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        fr.sample_rate = 16000
        for _ in range(20):
            for pkt in s.encode(fr):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    with pytest.raises(VideoError, match="no video stream"):
        probe(p)
