"""Held frames: which sampled frames show a new source image.

A low-frame-rate source (a frame every 2 s) sampled at 5 fps, or the same footage re-encoded at
30 fps by repeating each image, gives runs of identical sampled frames. Optical flow between two
copies of one image is 0, which is not a still camera but no measurement at all. So each sampled
frame is compared with the last *distinct* frame before it: it is ``fresh`` when it differs by
more than encoder noise, and motion is then measured against that distinct frame over the time
between the two (``motion_dt``), not over one sample period.

The rule, :func:`is_fresh`: mean absolute difference of the two frames' grey images, area-downscaled
to :data:`HELD_WIDTH` pixels wide, of at least :data:`HELD_MAX_DIFF` grey levels. Measured on
H.264 (libx264, 320x180, sampled at 5 fps from the decoded video):

- repeated images: exactly 0.00 (a true 0.5 fps source decodes to the same picture; a re-encode
  codes repeats as skipped blocks), except at a keyframe inside a hold, which re-quantises the
  image: 0.3-1.0 at crf 23, up to 2-5 at crf 30-38 (such a frame is taken as fresh and measures
  near-zero motion; see docs/user-guide.md, How it works);
- the sample footage's near-still ``idle`` views (head drift of a few pixels, sensor noise
  mostly coded away): 0.06-0.16 at the 1st-5th percentile, 34 % of pairs below 0.5;
- a textured scene panned at 0.5 px/s: 0.3 and more; a still scene where only a small hand
  moves: 0.03-0.4.

So the threshold sits just above exact repetition: 0.5 (the first guess) would call a fifth of
the sample footage's idle frames held and miss hand-only motion altogether.

Comparing with the last distinct frame, not the previous sampled one, means slow motion that
stays under the threshold from one sample to the next still accumulates until it is measured,
over the longer time step it took.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

HELD_WIDTH = 80  # px: the comparison's image width, so the rule means the same at any decode size
HELD_MAX_DIFF = 0.1  # grey levels (0-255), mean over the downscaled image


def held_signature(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """The small grey image two frames are compared by: ``(H, W, 3)`` RGB -> ``(h, HELD_WIDTH)`` float32."""
    import cv2

    return _grey_signature(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY))


def _grey_signature(grey: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    import cv2

    h, w = grey.shape[:2]
    tw = min(HELD_WIDTH, w)
    th = max(1, round(h * tw / max(w, 1)))
    return cv2.resize(grey, (tw, th), interpolation=cv2.INTER_AREA).astype(np.float32)


def frame_difference(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    """Mean absolute grey-level difference of two signatures (inf when their shapes differ)."""
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).mean())


def is_fresh(signature: npt.NDArray[np.float32], last_distinct: npt.NDArray[np.float32] | None,
             max_diff: float = HELD_MAX_DIFF) -> bool:
    """Whether a frame shows a new image, given the signature of the last distinct frame (None: first frame)."""
    return last_distinct is None or frame_difference(signature, last_distinct) >= max_diff


class HeldFrameTracker:
    """Follows one clip's sampled frames in order and says, per frame, what its motion is measured against.

    Feed every sampled frame of a clip, in order, across chunk boundaries; the state is the last
    distinct frame, so the answer never depends on how the clip was chunked.
    """

    def __init__(self, max_diff: float = HELD_MAX_DIFF):
        self.max_diff = max_diff
        self._sig: npt.NDArray[np.float32] | None = None
        self._grey: npt.NDArray[np.uint8] | None = None
        self._t = float("nan")

    def step(self, frame: npt.NDArray[np.uint8], t: float) -> tuple[bool, npt.NDArray[np.uint8] | None, float]:
        """``(fresh, previous distinct frame in grey or None, seconds since it)`` for the next frame.

        The previous distinct frame (``(H, W)`` uint8 grey: what optical flow compares) is None for
        a held frame (nothing new to measure) and for the clip's first frame, or when the frame size
        changes. Each frame is turned grey once, for the freshness test and as the next one's previous.
        """
        import cv2

        grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        sig = _grey_signature(grey)
        if not is_fresh(sig, self._sig, self.max_diff):
            return False, None, float("nan")
        prev, dt = self._grey, t - self._t
        if prev is not None and prev.shape != grey.shape:
            prev = None
        self._sig, self._grey, self._t = sig, grey, t  # its own array: not the whole chunk kept alive
        return True, prev, (dt if prev is not None else float("nan"))


def fill_held(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Rows of ``x`` ``(n,)`` or ``(n, d)`` without a measurement (NaN) take the next measured row.

    A measurement at a fresh frame is the mean velocity since the last distinct frame, so it is
    the value of every held frame in between; rows after the last measurement keep it, and a
    signal with no measurement at all becomes zeros. Gives the uniformly sampled signal the
    segment detectors and the rhythm FFT expect.
    """
    x = np.array(x, np.float64)
    bad = np.isnan(x) if x.ndim == 1 else np.isnan(x).any(axis=1)
    if not bad.any():
        return x
    good = np.flatnonzero(~bad)
    if not len(good):
        return np.zeros_like(x)
    nxt = np.searchsorted(good, np.arange(len(x)))  # the first measured row at or after each row
    x[bad] = x[good[np.minimum(nxt, len(good) - 1)]][bad]
    return x
