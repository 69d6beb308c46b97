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

    def read_table(self, rel: str) -> pa.Table:
        return pq.read_table(self.path(rel), filesystem=self.fs)

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

    def read_dataset(self, rel_dir: str, schema: pa.Schema) -> pa.Table:
        """All ``*.parquet`` parts under ``rel_dir`` concatenated (empty table with ``schema`` if none).

        A column that a part lacks (written by an earlier version, e.g. before hand propagation) is
        read as nulls, so a run resumed or re-evaluated after an upgrade keeps its finished clips.
        """
        parts = [self.read_table(f"{rel_dir}/{n}") for n in self.list(rel_dir, ".parquet")]
        parts = [_with_columns(p, schema).select(schema.names).cast(schema) for p in parts]
        return pa.concat_tables(parts) if parts else schema.empty_table()


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
