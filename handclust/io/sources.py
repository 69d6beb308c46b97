"""Where clips come from: :class:`ClipSource`, an object that lists a run's clips and opens one for decoding.

:func:`handclust.discover` takes one as ``video_source``; the default, :class:`FileClips`, is the
path every run took before: :func:`~handclust.io.footage.find_clips` (a folder, a manifest, a list
of paths or URIs) and :func:`~handclust.io.video.open_video` (PyAV / decord / NVDEC as
``decode.backend`` and ``decode.hwaccel`` choose). A source of your own lists :class:`Clip` records
and opens them as a :class:`~handclust.io.video.VideoSource`; with ``runner=ray`` it is pickled to
the decode tasks, so it must pickle (a plain object with plain fields does). Keyframes, reel excerpts
and the hand pass re-decode time ranges of a clip's ``path`` with the default decoders.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from handclust.io.footage import Clip, find_clips
from handclust.io.video import VideoSource, open_video

Footage = str | Path | list[str | Path]


@runtime_checkable
class ClipSource(Protocol):
    """Lists the clips of ``footage`` and opens one for decoding (see the module docstring)."""

    def find(self, footage: Footage, phase_pattern: str, skip: Sequence[str] = ()) -> list[Clip]:
        """The clips to process; ``skip``: folders never to list (the run's own outputs)."""
        ...

    def open(self, path: str, sample_fps: float, width: int, chunk_frames: int, backend: str = "auto",
             model_input: tuple[int, int] | None = None, hwaccel: str = "none") -> VideoSource:
        """One clip opened for decoding at ``sample_fps``, frames ``width`` wide, in chunks of ``chunk_frames``."""
        ...


class FileClips:
    """The default source: :func:`~handclust.io.footage.find_clips` and :func:`~handclust.io.video.open_video`."""

    def find(self, footage: Footage, phase_pattern: str, skip: Sequence[str] = ()) -> list[Clip]:
        return find_clips(footage, phase_pattern, skip=skip)

    def open(self, path: str, sample_fps: float, width: int, chunk_frames: int, backend: str = "auto",
             model_input: tuple[int, int] | None = None, hwaccel: str = "none") -> VideoSource:
        return open_video(path, sample_fps, width, chunk_frames, backend, model_input, hwaccel)
