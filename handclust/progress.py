"""Progress for long work: tqdm bars and one-line notes on stderr, or nothing when disabled."""

from __future__ import annotations

import sys
from typing import Any


class _NullBar:
    def update(self, n: float = 1) -> None:
        pass

    def close(self) -> None:
        pass


class Progress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def bar(self, total: float | None, desc: str, unit: str = "it") -> Any:
        if not self.enabled:
            return _NullBar()
        from tqdm.auto import tqdm

        # disable=None: bars on a terminal, none in logs (the per-clip lines say enough there).
        return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True, disable=None,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}]")

    def say(self, message: str) -> None:
        if self.enabled:
            print(message, file=sys.stderr, flush=True)
