"""Find the clips of a run: a directory (recursive) or a manifest (CSV / Parquet / TXT of paths).

A clip's id is a stable hash of its resolved path and size, so the same file keeps its id across
runs (resume) and a replaced file gets a new one.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from handclust.video import VIDEO_EXTENSIONS

_NAMESPACE = uuid.UUID("6f1d2c1e-8b1a-4c53-9a51-2f0c1b7e9d10")


class FootageError(ValueError):
    """The footage argument names nothing usable; the message says what to pass instead."""


@dataclass(frozen=True)
class Clip:
    clip_id: str
    path: str
    size_bytes: int
    phase: str | None


def clip_id_for(path: str | Path, size_bytes: int) -> str:
    return uuid.uuid5(_NAMESPACE, f"{Path(path).resolve()}|{size_bytes}").hex[:16]


def parse_phase(path: str | Path, pattern: str) -> str | None:
    m = re.search(pattern, Path(path).name, flags=re.IGNORECASE)
    if not m:
        return None
    return (m.group(1) if m.groups() else m.group(0)).lower()


def _manifest_paths(manifest: Path) -> list[Path]:
    suffix = manifest.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        tbl = pq.read_table(manifest)
        if "path" not in tbl.column_names:
            raise FootageError(f"manifest {manifest} has no 'path' column (columns: {tbl.column_names})")
        raw = [str(p) for p in tbl.column("path").to_pylist() if p]
    elif suffix == ".csv":
        import csv

        with manifest.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and "path" not in rows[0]:
            raise FootageError(f"manifest {manifest} has no 'path' column in its header")
        raw = [r["path"] for r in rows if r.get("path")]
    else:
        raw = [ln.strip() for ln in manifest.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    # Relative entries are relative to the manifest, so a manifest travels with its footage.
    return [p if p.is_absolute() else manifest.parent / p for p in map(Path, raw)]


def find_clips(footage: str | Path | list[str | Path], phase_pattern: str) -> list[Clip]:
    """Clips under a directory, in a manifest, or in an explicit list of paths; sorted by path.

    Paths that do not exist are still returned (size 0) so the run records them as errors.
    """
    if isinstance(footage, list | tuple):
        paths = [Path(p) for p in footage]
    else:
        root = Path(footage)
        if root.is_dir():
            paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not paths:
                raise FootageError(f"no video files under {root} (looked for {', '.join(VIDEO_EXTENSIONS)}); "
                                   "point at the folder with the clips, or pass a manifest")
        elif root.is_file() and root.suffix.lower() in (".csv", ".parquet", ".txt"):
            paths = _manifest_paths(root)
            if not paths:
                raise FootageError(f"manifest {root} lists no clips")
        elif root.is_file():
            paths = [root]
        else:
            raise FootageError(f"{root} does not exist: pass a folder of clips or a manifest (.csv/.parquet/.txt)")
    clips = {}
    for p in paths:
        size = p.stat().st_size if p.exists() else 0
        c = Clip(clip_id_for(p, size), str(p.resolve()), size, parse_phase(p, phase_pattern))
        clips[c.clip_id] = c
    return sorted(clips.values(), key=lambda c: c.path)
