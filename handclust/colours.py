"""The colour of an activity, one rule for every picture of a run (report strips, map, reel cards, timelines/)."""

from __future__ import annotations

import functools

NOISE_COLOUR = "#000000"


@functools.lru_cache(maxsize=1024)
def activity_colour(cluster: int) -> str:
    """Hex colour of activity ``cluster``: tab10 for 0-9, tab10's light tints for 10-19, then evenly spread hues.

    No two of the first 20 activities share a colour, and later ones do not wrap onto earlier ones;
    noise (any negative id) is black.
    """
    import colorsys

    import matplotlib
    from matplotlib.colors import to_hex

    c = int(cluster)
    if c < 0:
        return NOISE_COLOUR
    if c < 10:
        return to_hex(matplotlib.colormaps["tab10"](c))
    if c < 20:
        return to_hex(matplotlib.colormaps["tab20"](2 * (c - 10) + 1))
    return to_hex(colorsys.hsv_to_rgb((c * 0.618033988749895) % 1.0, 0.55, 0.85))
