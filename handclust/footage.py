"""Find the clips of a run: a directory (recursive) or a manifest (CSV / Parquet / TXT of paths).

A clip's id is a stable hash of its resolved path and size, so the same file keeps its id across
runs (resume) and a replaced file gets a new one.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from handclust.remote import is_uri
from handclust.video import VIDEO_EXTENSIONS

MANIFEST_SUFFIXES = (".csv", ".parquet", ".txt")

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
    name = str(path) if is_uri(path) else str(Path(path).resolve())
    return uuid.uuid5(_NAMESPACE, f"{name}|{size_bytes}").hex[:16]


def parse_phase(path: str | Path, pattern: str) -> str | None:
    m = re.search(pattern, PurePosixPath(str(path).split("?", 1)[0]).name if is_uri(path) else Path(path).name, flags=re.IGNORECASE)
    if not m:
        return None
    return (m.group(1) if m.groups() else m.group(0)).lower()


def _text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FootageError(f"manifest {name} is not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); "
                           "save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 IN > OUT`)") from None


def _manifest_paths(manifest: str | Path) -> list[str]:
    """Clip paths listed in a manifest (local file or URI); entries may be local paths or URIs."""
    name = str(manifest)
    suffix = PurePosixPath(name).suffix.lower()
    if is_uri(name):
        from handclust import remote

        data = remote.read_bytes(name)
    else:
        data = Path(name).read_bytes()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            tbl = pq.read_table(pa.BufferReader(data))
        except (pa.ArrowInvalid, OSError) as exc:
            raise FootageError(f"manifest {name} is not a readable Parquet file ({exc}); write it with pandas/pyarrow, "
                               "or list the clips in a .csv (with a 'path' column) or .txt (one path a line)") from None
        if "path" not in tbl.column_names:
            raise FootageError(f"manifest {name} has no 'path' column (columns: {tbl.column_names})")
        raw = [str(p) for p in tbl.column("path").to_pylist() if p]
    elif suffix == ".csv":
        import csv
        import io

        rows = list(csv.DictReader(io.StringIO(_text(data, name))))
        if rows and "path" not in rows[0]:
            raise FootageError(f"manifest {name} has no 'path' column in its header")
        raw = [r["path"] for r in rows if r.get("path")]
    else:
        raw = [ln.strip() for ln in _text(data, name).splitlines() if ln.strip() and not ln.startswith("#")]
    # Relative entries are relative to the manifest, so a manifest travels with its footage.
    out = []
    for entry in raw:
        if is_uri(entry) or Path(entry).is_absolute():
            out.append(entry)
        elif is_uri(name):
            from handclust import remote

            out.append(remote.join(name, entry))
        else:
            out.append(str(Path(name).parent / entry))
    return out


def _uri_footage(footage: str) -> list[str]:
    from handclust import remote

    if PurePosixPath(footage.split("?", 1)[0]).suffix.lower() in MANIFEST_SUFFIXES:
        try:
            return _manifest_paths(footage)
        except FileNotFoundError as exc:
            raise FootageError(f"manifest {footage} does not exist on the store") from exc
    try:
        listed = remote.list_files(footage, VIDEO_EXTENSIONS)
    except OSError as exc:
        raise FootageError(str(exc)) from exc
    if listed is None:
        if PurePosixPath(footage).suffix.lower() in VIDEO_EXTENSIONS:
            return [footage]
        raise FootageError(f"{footage} does not exist: pass a folder of clips or a manifest (.csv/.parquet/.txt)")
    if not listed:
        raise FootageError(f"no video files under {footage} (looked for {', '.join(VIDEO_EXTENSIONS)})")
    return listed


def find_clips(footage: str | Path | list[str | Path], phase_pattern: str) -> list[Clip]:
    """Clips under a directory, in a manifest, or in an explicit list of paths; sorted by path.

    Any of these may be a URI (s3://, gs://): folders are listed recursively, manifests are read
    from the store, and clips named by URIs are fetched when they are decoded (:mod:`handclust.remote`).
    Paths that do not exist are still returned (size 0) so the run records them as errors.
    """
    if isinstance(footage, list | tuple):
        paths = [str(p) for p in footage]
    elif is_uri(footage):
        paths = _uri_footage(str(footage))
    else:
        root = Path(footage)
        if root.is_dir():
            paths = [str(p) for p in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)]
            if not paths:
                raise FootageError(f"no video files under {root} (looked for {', '.join(VIDEO_EXTENSIONS)}); "
                                   "point at the folder with the clips, or pass a manifest")
        elif root.is_file() and root.suffix.lower() in MANIFEST_SUFFIXES:
            paths = _manifest_paths(root)
            if not paths:
                raise FootageError(f"manifest {root} lists no clips")
        elif root.is_file():
            paths = [str(root)]
        else:
            raise FootageError(f"{root} does not exist: pass a folder of clips or a manifest (.csv/.parquet/.txt)")
    clips = {}
    for raw in paths:
        if is_uri(raw):
            from handclust import remote

            size, name = remote.size_of(raw), raw
        else:
            p = Path(raw)
            size, name = (p.stat().st_size if p.exists() else 0), str(p.resolve())
        c = Clip(clip_id_for(raw, size), name, size, parse_phase(raw, phase_pattern))
        clips[c.clip_id] = c
    return sorted(clips.values(), key=lambda c: c.path)
