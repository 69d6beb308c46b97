"""Where a run's outputs live: a local directory or any filesystem pyarrow opens (s3://, gs://).

Every write goes to a temporary name first and is renamed into place, so a killed run never
leaves a half-written file that a rerun would trust. On object stores a single PUT is already
atomic, so files are written in place there.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def write_table_atomic(tbl: pa.Table, path: str | Path) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(tbl, tmp)
    tmp.replace(p)


class OutputStore:
    """A run's output root. Paths given to methods are relative to the root, '/'-separated."""

    def __init__(self, root: str | Path, create: bool = True):
        root = str(root)
        if "://" in root:
            self.fs, self.root = pafs.FileSystem.from_uri(root)
            self.local = isinstance(self.fs, pafs.LocalFileSystem)
        else:
            self.fs, self.root, self.local = pafs.LocalFileSystem(), str(Path(root).resolve()), True
        self.uri = root
        if create:
            self.fs.create_dir(self.root, recursive=True)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def uri_of(self, rel: str) -> str:
        """How a user names ``rel``: a local path, or the URI with ``rel`` appended (query kept last)."""
        if self.local and "://" not in self.uri:
            return self.path(rel)
        base, sep, query = self.uri.partition("?")
        return f"{base.rstrip('/')}/{rel}{sep}{query}"

    def local_path(self, rel: str) -> Path:
        """A local filesystem path (for matplotlib, video writers); only for local roots."""
        if not self.local:
            raise ValueError(f"{self.uri} is not a local directory; write locally and upload")
        p = Path(self.path(rel))
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def _atomic(self, rel: str) -> tuple[str, str]:
        final = self.path(rel)
        parent = final.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if not self.local:
            return final, final
        name = final.rsplit("/", 1)[1]
        return f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp", final

    def write_table(self, rel: str, tbl: pa.Table) -> None:
        tmp, final = self._atomic(rel)
        with self._removed_on_failure(tmp, final):
            pq.write_table(tbl, tmp, filesystem=self.fs)
        if tmp != final:
            self.fs.move(tmp, final)

    def read_table(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path(rel), columns=columns, filesystem=self.fs)

    def write_bytes(self, rel: str, data: bytes) -> None:
        tmp, final = self._atomic(rel)
        with self._removed_on_failure(tmp, final), self.fs.open_output_stream(tmp) as f:
            f.write(data)
        if tmp != final:
            self.fs.move(tmp, final)

    @contextlib.contextmanager
    def _removed_on_failure(self, tmp: str, final: str) -> Iterator[None]:
        """A write that fails (disk full mid-file) leaves no half-written temporary file behind."""
        try:
            yield
        except BaseException:
            if tmp != final:
                with contextlib.suppress(OSError):
                    self.fs.delete_file(tmp)
            raise

    def move(self, rel: str, to_rel: str) -> None:
        """Rename ``rel`` to ``to_rel`` (replacing it); on object stores a copy and a delete."""
        self.fs.create_dir(self.path(to_rel).rsplit("/", 1)[0], recursive=True)
        self.fs.move(self.path(rel), self.path(to_rel))

    def delete(self, rel: str) -> None:
        """Remove the file ``rel`` if it is there."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, default=_json_default).encode())

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def list(self, rel_dir: str, suffix: str = "") -> list[str]:
        """Names (not paths) of the files directly under ``rel_dir``, temporaries excluded."""
        sel = pafs.FileSelector(self.path(rel_dir), allow_not_found=True)
        names = [i.base_name for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File]
        return sorted(n for n in names if n.endswith(suffix) and not n.startswith("."))

    def read_json_or(self, rel: str, default: Any) -> Any:
        """The parsed JSON at ``rel``, or ``default`` where there is none (one request, not exists + read)."""
        try:
            return self.read_json(rel)
        except FileNotFoundError:
            return default

    def read_json_many(self, rels: list[str]) -> dict[str, Any]:
        """``{rel: parsed JSON}`` of many small files, read by :data:`IO_THREADS` threads (on an
        object store each read is a round trip: 100k of them one after another took hours)."""
        with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
            return dict(zip(rels, pool.map(self.read_json, rels), strict=True))

    def delete_many(self, rels: list[str]) -> None:
        with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
            list(pool.map(lambda r: self.fs.delete_file(self.path(r)), rels))

    def read_dataset(self, rel_dir: str, schema: pa.Schema, columns: list[str] | None = None,
                     clip_ids: list[str] | None = None) -> pa.Table:
        """All ``*.parquet`` parts under ``rel_dir`` as one table with ``schema`` (``columns`` of it
        only, when given; empty if there are no parts), read in parallel by one pyarrow dataset.

        A column that a part lacks (written by an earlier version, e.g. before hand propagation) is
        read as nulls, so a run resumed or re-evaluated after an upgrade keeps its finished clips.
        Per-clip files (``<clip_id>.parquet``) and compacted parts (``part-*.parquet``,
        :func:`compact_clip_tables`) may sit side by side: where a clip has both (it was processed
        again after compaction, or compaction was interrupted) its own file wins. ``clip_ids``:
        only the rows of these clips (per-clip files of other clips are not opened).
        """
        cols = list(columns) if columns is not None else list(schema.names)
        scans = self._dataset_scans(rel_dir, schema, clip_ids)
        if not scans:
            return schema.empty_table().select(cols)
        tables = [dset.to_table(columns=cols, filter=filt) for dset, filt in scans]
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def scan_dataset(self, rel_dir: str, schema: pa.Schema, columns: list[str], clip_ids: list[str] | None = None,
                     batch_rows: int = 16_384) -> Iterator[pa.RecordBatch]:
        """The rows :meth:`read_dataset` returns (the same parts, the same winner where a clip has a
        file and rows in a part), as record batches of at most ``batch_rows`` rows, read ahead
        only a little: a wide column is streamed into its destination instead of being held whole
        as a table first. Batch order is not promised; key rows by their columns. One file at a time
        (a compacted part's row group holds a whole column chunk of 10-20k rows: two in flight
        raised the peak of reading 30k x 1,024 float32 by ~0.1 GB)."""
        for dset, filt in self._dataset_scans(rel_dir, schema, clip_ids):
            yield from dset.to_batches(columns=columns, filter=filt, batch_size=batch_rows, batch_readahead=2,
                                       fragment_readahead=1)

    def _dataset_scans(self, rel_dir: str, schema: pa.Schema, clip_ids: list[str] | None) -> list[tuple[Any, Any]]:
        """``[(pyarrow dataset, filter)]`` whose rows together are the folder's rows (see :meth:`read_dataset`)."""
        names = self.list(rel_dir, ".parquet")
        singles = {n[: -len(".parquet")] for n in names if not n.startswith(PART_PREFIX)}
        if clip_ids is not None:
            want = set(clip_ids)
            index = read_part_index(self, rel_dir)
            # Parts the index says hold none of these clips are not opened (a part missing from the index is).
            names = [n for n in names if (n[: -len(".parquet")] in want if not n.startswith(PART_PREFIX)
                                          else n not in index or not want.isdisjoint(index[n]))]
        if not names:
            return []
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        def dataset(files: list[str]) -> Any:
            return ds.dataset([self.path(f"{rel_dir}/{n}") for n in files], schema=schema, format="parquet", filesystem=self.fs)

        parts = [n for n in names if n.startswith(PART_PREFIX)]
        filt = None
        if clip_ids is not None:
            filt = pc.field("clip_id").isin(pa.array(sorted(want), pa.string()))
        if parts and singles:
            # Rows of a compacted part whose clip also has its own (newer) file are stale.
            stale = ~pc.field("clip_id").isin(pa.array(sorted(singles), pa.string()))
            rest = [n for n in names if not n.startswith(PART_PREFIX)]
            return [(dataset(parts), stale if filt is None else stale & filt)] + ([(dataset(rest), filt)] if rest else [])
        return [(dataset(names), filt)]


PART_PREFIX = "part-"  # compacted parts of a per-clip table (frames/, segments/); never a clip id (16 hex digits)
IO_THREADS = 16  # concurrent small-object requests (status records, per-clip tables)
PART_BYTES = 128 * 2**20  # in-memory size of the rows one compacted part holds
# Which clips each compacted part holds: {part file name: [clip ids]}. The leading "_" keeps it out of
# pyarrow / pandas dataset reads of the folder, and it is no *.parquet.
PART_INDEX = "_parts.json"


def read_part_index(store: OutputStore, rel_dir: str) -> dict[str, list[str]]:
    """``{part file: [clip ids]}`` of the compacted parts of ``rel_dir`` ({} before any compaction)."""
    rel = f"{rel_dir}/{PART_INDEX}"
    return dict(store.read_json(rel)) if store.exists(rel) else {}


def clips_with_table(store: OutputStore, rel_dir: str) -> set[str]:
    """Clip ids that have rows in ``rel_dir``: their own file, or a compacted part (one listing and
    one index read, whatever the number of clips)."""
    own = {n[: -len(".parquet")] for n in store.list(rel_dir, ".parquet") if not n.startswith(PART_PREFIX)}
    return own.union(*read_part_index(store, rel_dir).values())


def compact_clip_tables(store: OutputStore, rel_dir: str, schema: pa.Schema, part_bytes: int = PART_BYTES) -> int:
    """Merge the per-clip files of ``rel_dir`` (``<clip_id>.parquet``) into ``part-*.parquet`` files
    of about ``part_bytes`` each, and delete the per-clip files they hold; returns how many were merged.

    Run after the stream, so a run of 100k clips leaves a few hundred objects there, not 100k.
    Memory stays at about one part. Safe to interrupt: a part is written (atomically) before the
    files it holds are deleted, and readers (:meth:`OutputStore.read_dataset`) prefer a clip's own
    file over its rows in a part, so an interrupted compaction reads the same; the next one first
    drops from older parts the rows of clips that have their own file again (processed anew).
    ``pd.read_parquet("OUT/segments")`` reads the same rows as before compaction once it has finished.
    """
    import pyarrow.compute as pc

    names = store.list(rel_dir, ".parquet")
    singles = [n for n in names if not n.startswith(PART_PREFIX)]
    if not singles:
        return 0
    ids = pa.array(sorted(n[: -len(".parquet")] for n in singles), pa.string())
    index = read_part_index(store, rel_dir)
    for part in (n for n in names if n.startswith(PART_PREFIX)):
        rel = f"{rel_dir}/{part}"
        clip_col = pq.read_table(store.path(rel), columns=["clip_id"], filesystem=store.fs).column("clip_id")
        stale = pc.is_in(clip_col, value_set=ids)
        if pc.any(stale).as_py():
            _drop_from_part(store, rel_dir, part, index, pq.read_table(store.path(rel), filesystem=store.fs), stale)
    batch: list[pa.Table] = []
    held: list[str] = []
    size = 0

    def flush() -> None:
        nonlocal size
        if batch:
            name = f"{PART_PREFIX}{uuid.uuid4().hex[:12]}.parquet"
            store.write_table(f"{rel_dir}/{name}", pa.concat_tables(batch))
            index[name] = [n[: -len(".parquet")] for n in held]
            store.write_json(f"{rel_dir}/{PART_INDEX}", index)
            store.delete_many([f"{rel_dir}/{n}" for n in held])  # only once their rows are in a part and indexed
        batch.clear()
        held.clear()
        size = 0

    with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
        step = IO_THREADS * 4
        for a in range(0, len(singles), step):
            chunk = singles[a:a + step]
            for name, tbl in zip(chunk, pool.map(lambda n: store.read_table(f"{rel_dir}/{n}"), chunk), strict=True):
                batch.append(_with_columns(tbl, schema).select(schema.names).cast(schema))
                held.append(name)
                size += batch[-1].nbytes
                if size >= part_bytes:
                    flush()
    flush()
    return len(singles)


def _drop_from_part(store: OutputStore, rel_dir: str, part: str, index: dict[str, list[str]], table: pa.Table,
                    drop: pa.ChunkedArray | pa.Array) -> None:
    """Rewrite the compacted ``part`` of ``rel_dir`` (read as ``table``) without the rows where ``drop``
    is true (deleting it when none are left), and record what it holds now in the part index."""
    import pyarrow.compute as pc

    rel = f"{rel_dir}/{part}"
    keep = table.filter(pc.invert(drop))
    if keep.num_rows:
        store.write_table(rel, keep)
        index[part] = sorted(set(keep.column("clip_id").to_pylist()))
    else:
        store.fs.delete_file(store.path(rel))
        index.pop(part, None)
    store.write_json(f"{rel_dir}/{PART_INDEX}", index)


def take_clips_out_of_parts(store: OutputStore, rel_dir: str, keep: set[str], aside_dir: str,
                            own_moved: set[str] | None = None) -> set[str]:
    """Move the rows of every clip not in ``keep`` out of the compacted parts of ``rel_dir``: each such
    clip's rows are written to ``aside_dir/<clip_id>.parquet`` (so that it can be restored as a
    per-clip file), then dropped from its part, the same rewrite :func:`compact_clip_tables` does for
    stale rows. Clips in ``own_moved`` had their own file (which wins over part rows) moved there
    already: their part rows are only dropped. Returns the clip ids taken out.

    Without this a removed clip's rows stayed in a part, and ``OUT/segments`` globs still read them."""
    import pyarrow.compute as pc

    index = read_part_index(store, rel_dir)
    taken: set[str] = set()
    for part, held in list(index.items()):
        gone = sorted(set(held) - keep)
        if not gone:
            continue
        table = store.read_table(f"{rel_dir}/{part}")
        drop = pc.is_in(table.column("clip_id"), value_set=pa.array(gone, pa.string()))
        for cid in gone:
            if cid not in (own_moved or set()):  # written before the part loses them: an interruption loses no rows
                rows = table.filter(pc.equal(table.column("clip_id"), cid))
                if rows.num_rows:
                    store.write_table(f"{aside_dir}/{cid}.parquet", rows)
        _drop_from_part(store, rel_dir, part, index, table, drop)
        taken.update(gone)
    return taken


def _with_columns(table: pa.Table, schema: pa.Schema) -> pa.Table:
    for f in schema:
        if f.name not in table.column_names:
            table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
    return table


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
