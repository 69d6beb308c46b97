"""Clips on object stores (s3://, gs://, any URI pyarrow opens): listing, sizes, and a local copy to decode.

Video decoders need a seekable local file, so a clip named by a URI is copied once into a
per-machine cache (``HANDCLUST_CACHE_DIR``, default ``~/.cache/handclust/clips``) and decoded from
there; later readers on the same machine (the V-JEPA-2 stage, keyframes, the reel) reuse the copy.
The cache is bounded (``HANDCLUST_CACHE_GB``, default 20): the least recently used copies go first.
Credentials and endpoints come from the usual environment of the store (``AWS_*``,
``GOOGLE_APPLICATION_CREDENTIALS``, ``AWS_ENDPOINT_URL`` for S3-compatible stores); on a Ray
cluster pass them through ``runtime_env`` env_vars.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

CHUNK = 8 << 20


def is_uri(path: str | Path) -> bool:
    text = str(path)
    return "://" in text and not text.startswith("file://")


def _fs(uri: str):  # -> tuple[pafs.FileSystem, str]
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise OSError(f"cannot open {uri}: {exc}. Check the URI scheme (s3://, gs://) and the store's credentials "
                      "(AWS_* / GOOGLE_APPLICATION_CREDENTIALS environment variables)") from exc


def size_of(uri: str) -> int:
    """Size in bytes, or 0 when the object does not exist (the run then records it as an error)."""
    import pyarrow.fs as pafs

    fs, path = _fs(uri)
    info = fs.get_file_info(path)
    return int(info.size or 0) if info.type == pafs.FileType.File else 0


def content_fingerprint(uri: str, offsets: Callable[[int], list[int]], sample: int,
                        digest: Callable[[int, list[bytes]], str]) -> tuple[int, int, str]:
    """``(size, mtime_ns, fingerprint)`` of an object: one HEAD and a range read per offset
    (:func:`handclust.io.footage.content_fingerprint`); ``(0, 0, "")`` when it does not exist."""
    import pyarrow.fs as pafs

    fs, path = _fs(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        return 0, 0, ""
    size = int(info.size or 0)
    mtime_ns = int(info.mtime_ns or 0)
    with fs.open_input_file(path) as f:
        ranges = [f.read_at(min(sample, size) if size > 3 * sample else size, off) for off in offsets(size)]
    return size, mtime_ns, digest(size, [bytes(r) for r in ranges])


def _scheme_prefix(uri: str) -> str:
    return uri.split("://", 1)[0] + "://"


def list_files(uri: str, suffixes: tuple[str, ...]) -> list[str] | None:
    """URIs of the files under the directory ``uri`` (recursive) ending in ``suffixes`` (all files for
    ``()``); None if not a directory."""
    import pyarrow.fs as pafs

    fs, root = _fs(uri)
    info = fs.get_file_info(root)
    if info.type != pafs.FileType.Directory:
        return None
    sel = pafs.FileSelector(root, recursive=True)
    prefix = _scheme_prefix(uri)
    return sorted(prefix + i.path for i in fs.get_file_info(sel)
                  if i.type == pafs.FileType.File and (not suffixes or PurePosixPath(i.path).suffix.lower() in suffixes))


def read_bytes(uri: str) -> bytes:
    fs, path = _fs(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def join(base_uri: str, rel: str) -> str:
    """``rel`` relative to the folder of ``base_uri`` (a manifest's neighbours)."""
    return base_uri.rsplit("/", 1)[0] + "/" + rel


def cache_dir() -> Path:
    return Path(os.environ.get("HANDCLUST_CACHE_DIR") or Path.home() / ".cache" / "handclust" / "clips")


def cache_limit_bytes() -> int:
    return int(float(os.environ.get("HANDCLUST_CACHE_GB", "20")) * (1 << 30))


def local_copy(uri: str) -> Path:
    """A local file with the bytes of ``uri``, fetched once per machine and reused while it is cached.

    Raises FileNotFoundError naming the URI when the object does not exist.
    """
    import pyarrow.fs as pafs

    fs, path = _fs(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"{uri}: no such object on the store (check the manifest entry and the bucket)")
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(uri.encode()).hexdigest()[:20]
    dest = root / f"{key}{PurePosixPath(path).suffix.lower()}"
    if dest.exists() and dest.stat().st_size == info.size:
        dest.touch()  # recently used: evicted last
        return dest
    tmp = root / f".{key}.{uuid.uuid4().hex[:8]}.part"
    try:
        with fs.open_input_stream(path) as src, tmp.open("wb") as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)
        tmp.replace(dest)  # atomic: a concurrent reader sees the whole file or none
    finally:
        tmp.unlink(missing_ok=True)
    _evict(root, keep=dest)
    return dest


def _evict(root: Path, keep: Path) -> None:
    files = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
    total = sum(p.stat().st_size for p in files)
    limit = cache_limit_bytes()
    for p in sorted(files, key=lambda p: p.stat().st_mtime):
        if total <= limit:
            break
        if p == keep:
            continue
        total -= p.stat().st_size
        p.unlink(missing_ok=True)
        log.debug("clip cache: evicted %s", p)
