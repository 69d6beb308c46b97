"""Find the clips of a run: a directory (recursive) or a manifest (CSV / Parquet / TXT of paths).

A clip's id is a stable hash of what makes it this clip: its resolved path, size, modification
time and a fingerprint of a few sampled byte ranges (:func:`content_fingerprint`: 3 reads of 16 KiB,
range requests on object stores). The same file keeps its id across runs (resume; copies that keep
the modification time too, e.g. ``cp -p``, ``rsync -a``), and a file replaced by another, even of the
same size, gets a new one, so it is processed again and its old rows leave the run.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from handclust.errors import FootageError as FootageError  # defined with every error in handclust/errors.py
from handclust.io import layout
from handclust.io.remote import is_uri
from handclust.io.video import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".parquet", ".txt")

_NAMESPACE = uuid.UUID("6f1d2c1e-8b1a-4c53-9a51-2f0c1b7e9d10")


@dataclass(frozen=True)
class Clip:
    clip_id: str
    path: str
    size_bytes: int
    phase: str | None
    mtime_ns: int = 0  # modification time when found (0: unknown)
    fingerprint: str = ""  # content_fingerprint when found ("" for a missing file)


SAMPLE_BYTES = 16 << 10  # per sampled range


def sample_offsets(size: int) -> list[int]:
    """Where the fingerprint reads: the start, the middle and the end (the MP4 header and index live at the ends)."""
    if size <= 3 * SAMPLE_BYTES:
        return [0]
    return [0, size // 2 - SAMPLE_BYTES // 2, size - SAMPLE_BYTES]


def fingerprint_of(size: int, ranges: list[bytes]) -> str:
    h = hashlib.blake2b(str(size).encode(), digest_size=10)
    for r in ranges:
        h.update(r)
    return h.hexdigest()


def content_fingerprint(path: str | Path) -> tuple[int, int, str]:
    """``(size, mtime_ns, fingerprint)`` of a local file or an object-store URI; ``(0, 0, "")`` when
    it does not exist. Reads :data:`SAMPLE_BYTES` at each of :func:`sample_offsets` (whole files up
    to 48 KiB), so it costs three small reads (range requests on a store) whatever the clip's size."""
    if is_uri(path):
        from handclust.io import remote

        return remote.content_fingerprint(str(path), sample_offsets, SAMPLE_BYTES, fingerprint_of)
    p = Path(path)
    try:
        st = p.stat()
        with p.open("rb") as f:
            ranges = []
            for off in sample_offsets(st.st_size):
                f.seek(off)
                ranges.append(f.read(SAMPLE_BYTES if st.st_size > 3 * SAMPLE_BYTES else st.st_size))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return 0, 0, ""
    return st.st_size, st.st_mtime_ns, fingerprint_of(st.st_size, ranges)


def clip_id_for(path: str | Path, size_bytes: int, mtime_ns: int = 0, fingerprint: str = "") -> str:
    name = str(path) if is_uri(path) else str(Path(path).resolve())
    key = f"{name}|{size_bytes}" + (f"|{mtime_ns}|{fingerprint}" if fingerprint else "")
    return uuid.uuid5(_NAMESPACE, key).hex[:16]


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
        from handclust.io import remote

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
            from handclust.io import remote

            out.append(remote.join(name, entry))
        else:
            out.append(str(Path(name).parent / entry))
    return out


def _uri_footage(footage: str, skip: Sequence[str] = ()) -> list[str]:
    from handclust.io import remote

    if PurePosixPath(footage.split("?", 1)[0]).suffix.lower() in MANIFEST_SUFFIXES:
        try:
            return _manifest_paths(footage)
        except FileNotFoundError as exc:
            raise FootageError(f"manifest {footage} does not exist on the store") from exc
    try:
        every = remote.list_files(footage, ())
    except OSError as exc:
        raise FootageError(str(exc)) from exc
    listed = None
    if every is not None:
        videos = [u for u in every if PurePosixPath(u.split("?", 1)[0]).suffix.lower() in VIDEO_EXTENSIONS]
        listed = without_outputs(videos, output_folders(every, [s.split("?", 1)[0] for s in skip if is_uri(s)]), footage)
    if listed is None:
        if PurePosixPath(footage).suffix.lower() in VIDEO_EXTENSIONS:
            return [footage]
        raise FootageError(f"{footage} does not exist: pass a folder of clips or a manifest (.csv/.parquet/.txt)")
    if not listed:
        raise FootageError(f"no video files under {footage} (looked for {', '.join(VIDEO_EXTENSIONS)})")
    return listed


# A folder holding one of these is a HandClust output folder (run.json beside clips.parquet, or a run's
# lock): its report reel and excerpts are not footage.
OUTPUT_MARKERS = (".handclust-lock.json", layout.CLIPS)


def output_folders(files: list[str], skip: Sequence[str] = ()) -> list[str]:
    """The folders among the parents of ``files`` (all files of a footage folder, '/'-separated)
    that are HandClust output folders (:data:`OUTPUT_MARKERS`), plus those in ``skip`` (this run's ``--out``)."""
    names = set(files)
    found = {f.rsplit("/", 1)[0] for f in files if f.rsplit("/", 1)[-1] in OUTPUT_MARKERS
             and (f.endswith(OUTPUT_MARKERS[0]) or f"{f.rsplit('/', 1)[0]}/run.json" in names)}
    return sorted(found | {s.rstrip("/") for s in skip})


def without_outputs(paths: list[str], folders: list[str], footage: str) -> list[str]:
    """``paths`` less those inside ``folders``, saying once what was left out and why."""
    inside = [p for p in paths if any(p.startswith(f + "/") for f in folders)]
    if inside:
        where = sorted({f for f in folders if any(p.startswith(f + "/") for p in inside)})
        log.warning("%s: skipped %d video file(s) under %s: HandClust output (report reel and excerpts), not footage",
                    footage, len(inside), ", ".join(where))
    return [p for p in paths if p not in set(inside)]


def find_clips(footage: str | Path | list[str | Path], phase_pattern: str, skip: Sequence[str] = ()) -> list[Clip]:
    """Clips under a directory, in a manifest, or in an explicit list of paths; sorted by path.

    Any of these may be a URI (s3://, gs://): folders are listed recursively, manifests are read
    from the store, and clips named by URIs are fetched when they are decoded (:mod:`handclust.io.remote`).
    Paths that do not exist are still returned (size 0) so the run records them as errors.
    Under a folder, HandClust output folders (this run's ``skip``, i.e. its ``--out``, and any other
    run's, :func:`output_folders`) are left out with a warning: a run never reads its own reel as a clip.
    """
    if isinstance(footage, list | tuple):
        paths = [str(p) for p in footage]
    elif is_uri(footage):
        paths = _uri_footage(str(footage), skip)
    else:
        root = Path(footage)
        if root.is_dir():
            files = sorted(str(p) for p in root.resolve().rglob("*") if p.is_file())
            outputs = output_folders(files, [str(Path(s).resolve()) for s in skip if not is_uri(s)])
            if str(root.resolve()) in outputs:
                raise FootageError(f"{root} is a HandClust output folder (it holds a run's clips.parquet or lock), not a "
                                   "footage folder: give the folder of the clips, and an --out outside it or in a subfolder")
            paths = without_outputs([p for p in files if Path(p).suffix.lower() in VIDEO_EXTENSIONS], outputs, str(root))
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
    # The identity reads are small but one round trip each on a store: many at once there.
    with ThreadPoolExecutor(max_workers=16 if any(is_uri(p) for p in paths) else 1) as pool:
        identities = list(pool.map(content_fingerprint, paths))
    clips = {}
    for raw, (size, mtime_ns, fp) in zip(paths, identities, strict=True):
        name = raw if is_uri(raw) else str(Path(raw).resolve())
        c = Clip(clip_id_for(raw, size, mtime_ns, fp), name, size, parse_phase(raw, phase_pattern), mtime_ns, fp)
        clips[c.clip_id] = c
    return sorted(clips.values(), key=lambda c: c.path)


GROUND_TRUTH_FILE = "ground_truth.parquet"  # written next to sample footage (handclust.synthetic)


def clip_folders(paths: Mapping[str, str]) -> dict[str, str]:
    """Clip id -> the folder it sits in, one level below the folder all the clips share
    (``footage/site_a/day1/x.mp4`` -> ``site_a``; a clip directly in the shared folder -> ``""``):
    the layout a user gave their footage, which ``cluster.split_groups_folders`` tries first. Paths
    may be URIs (``s3://bucket/site_a/x.mp4``)."""
    parents = {c: PurePosixPath(str(p).split("?", 1)[0].replace("\\", "/")).parent.parts for c, p in paths.items()}
    if not parents:
        return {}
    common = list(next(iter(parents.values())))
    for parts in parents.values():
        n = 0
        while n < min(len(common), len(parts)) and common[n] == parts[n]:
            n += 1
        common = common[:n]
    return {c: (parts[len(common)] if len(parts) > len(common) else "") for c, parts in parents.items()}


def load_ground_truth(footage_dir: str | Path) -> pa.Table | None:
    """The per-frame truth next to sample footage, or None for real footage."""
    p = Path(footage_dir) / GROUND_TRUTH_FILE
    return pq.read_table(p) if p.is_file() else None
