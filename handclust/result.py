"""What a run returns (:class:`RunResult`) and raises when the runner itself fails
(:class:`RunnerError`): the one module both runners, the activities step and the API share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from handclust import schema
from handclust.errors import RunnerError as RunnerError  # defined with every error in handclust/errors.py
from handclust.io.storage import OutputStore


@dataclass
class RunResult:
    """What a run produced. Tables are pyarrow; call ``.to_pandas()`` for pandas."""

    out: str
    clips: pa.Table
    segments: pa.Table
    clusters: pa.Table
    summary: dict[str, Any]
    evaluation: dict[str, Any] = field(default_factory=dict)

    def frames(self) -> pa.Table:
        return OutputStore(self.out).read_dataset("frames", schema.FRAMES)
