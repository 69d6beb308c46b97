"""Video input: sampling by timestamp, both backends, rotation, and every kind of bad file."""

from pathlib import Path

import numpy as np
import pytest

from handclust.io.video import VideoError, open_video, probe, read_range


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
    # The video model's copy is upright too: portrait, short side 48 (no enlarging), the long side cut to 48.
    chunk = next(iter(open_video(rotated, sample_fps=5, width=64, model_input=(48, 48)).chunks()))
    side = chunk.model[0]
    assert side.shape == (48, 48, 3)
    band = side[:, :4].mean() > 200 or side[:, -4:].mean() > 200
    assert band and side[:4].mean() < 100  # the band runs down one side, not across the top


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


def _write_at(path: Path, frames: list[np.ndarray], pts_ms: list[int], rate: object) -> Path:
    """Frames at exactly the given presentation times (ms)."""
    import fractions

    import av

    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        s.codec_context.time_base = s.time_base = fractions.Fraction(1, 1000)
        for f, t in zip(frames, pts_ms, strict=True):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = t, s.time_base
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _decode(src) -> int:
    return sum(len(c.t) for c in src.chunks())


def test_pyav_is_the_default_backend(tmp_path: Path):
    p = _write(tmp_path / "a.mp4", _numbered(20), fps=10)
    src = open_video(p, sample_fps=5, width=48)
    assert _decode(src) == 10 and src.backend == "pyav" and "auto" in src.why


def test_a_failing_backend_falls_back_to_the_other(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """decord rejects a valid 16x16 H.264 clip (`Check failed: from_size == to_size`); PyAV reads it."""
    rng = np.random.default_rng(0)
    p = _write(tmp_path / "tiny.mp4", [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(30)], fps=10)
    src = open_video(p, sample_fps=5, width=320, backend="decord")
    assert _decode(src) == 15 and src.truncated_at is None
    assert src.backend == "pyav" and "decord" in src.why and "so pyav decoded it" in src.why
    assert any("falling back to pyav" in r.getMessage() for r in caplog.records)  # logged, not silent


def test_nvdec_decodes_the_same_frames_or_hands_the_clip_to_cpu_saying_why(short_clip: Path):
    """decode.hwaccel=cuda: NVDEC where the process sees a GPU; without one (CI, CPU nodes of a
    cluster) PyAV on CPU decodes the clip, and the source says what NVDEC answered."""
    from handclust.io.video import available_backends

    assert "nvdec" in available_backends()  # PyAV's FFmpeg ships the cuda device
    plain = open_video(short_clip, sample_fps=5, width=64)
    ref = np.concatenate([c.frames for c in plain.chunks()])
    src = open_video(short_clip, sample_fps=5, width=64, hwaccel="cuda")
    assert src.order[0] == "nvdec" and "NVDEC first" in src.why
    got = np.concatenate([c.frames for c in src.chunks()])
    assert got.shape == ref.shape and src.truncated_at is None
    if src.backend == "nvdec":  # a machine with a GPU: the same pictures (NV12 instead of YUV420P out)
        assert np.abs(got.astype(int) - ref).mean() < 2.0
    else:
        assert src.backend == "pyav" and np.array_equal(got, ref)
        assert "nvdec: NVDEC could not open a CUDA device" in src.why and "so pyav decoded it" in src.why


def test_ray_decode_tasks_see_their_nodes_gpus_only_for_nvdec():
    from handclust.config import load_config
    from handclust.runtime.ray_runner import decode_task_options

    assert decode_task_options(load_config(None, [])) == {}
    env = decode_task_options(load_config(None, ["decode.hwaccel=cuda"]))["runtime_env"]["env_vars"]
    assert env == {"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}  # else Ray sets CUDA_VISIBLE_DEVICES=""


@pytest.mark.parametrize("backend", ["auto", "decord"])
def test_clip_corrupt_in_the_middle_keeps_the_part_before(tmp_path: Path, short_clip: Path, backend: str):
    data = bytearray(short_clip.read_bytes())
    n = len(data)
    data[n // 2 : n // 2 + n // 5] = np.random.default_rng(0).integers(0, 255, n // 5, dtype=np.uint8).tobytes()
    p = tmp_path / "mid.mp4"
    p.write_bytes(bytes(data))
    src = open_video(p, sample_fps=5, width=160, backend=backend)
    frames = _decode(src)
    assert frames >= 10 and src.truncated_at is not None and 2.0 < src.truncated_at < 11.0  # partial, not an error


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_slow_source_ending_one_period_after_its_last_frame_is_complete(tmp_path: Path, backend: str):
    """A 0.5 fps time-lapse: the last frame starts 2 s before the end, as it should."""
    import fractions

    p = _write_at(tmp_path / "slow.mp4", _numbered(10), [2000 * i for i in range(10)], fractions.Fraction(1, 2))
    src = open_video(p, sample_fps=1, width=48, backend=backend)
    assert _decode(src) == 20 and src.truncated_at is None and src.gap is None


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_timestamp_gap_stops_decoding_without_made_up_frames(tmp_path: Path, backend: str):
    """20 frames at 5 fps, 10 minutes with nothing, 20 more: no frames are synthesised across the gap."""
    pts = [200 * i for i in range(20)] + [600_000 + 200 * i for i in range(20)]
    p = _write_at(tmp_path / "gap.mp4", _numbered(40), pts, 5)
    src = open_video(p, sample_fps=5, width=48, backend=backend)
    ts = np.concatenate([c.t for c in src.chunks()])
    assert len(ts) == 20 and ts.max() < 4.0
    assert src.gap is not None and src.gap[0] == pytest.approx(3.8, abs=0.01) and src.gap[1] > 590
    assert src.truncated_at == pytest.approx(3.8, abs=0.01)
