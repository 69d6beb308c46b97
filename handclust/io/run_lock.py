"""One writer per output folder: a lock object in ``OUT`` held while a command writes there.

``handclust run``, ``assign``, ``evaluate`` and ``report`` hold ``OUT/.handclust-lock.json`` while
they write into ``OUT``. It records the holder (host, pid, command, start time) and a heartbeat the
holder refreshes every :func:`heartbeat_s` seconds. A second command into the same folder is refused
with :class:`OutputBusyError` naming the holder, before it reads or writes anything there.

The lock is taken with a create-if-absent write, so two runs started at the same moment cannot both
win:

- local folders: the record written whole, then hard-linked into place (``link`` fails when the lock exists);
- ``s3://`` (and S3-compatible stores): a conditional PUT (``If-None-Match: *``) through boto3, and
  every later change (heartbeat, taking over a stale lock) a PUT with ``If-Match`` on the ETag read;
- other stores pyarrow opens (``gs://``) or S3 without boto3: write, wait, read back and keep the lock
  only if the record read back is ours (two writers within the wait can both see their own; the log
  says so once).

**Stale rule.** A lock is stale, and the next command takes it over, when its heartbeat is older than
``HANDCLUST_LOCK_STALE_S`` seconds (default 600), or when its holder ran on this host and its pid is
no longer alive (a killed run). The holding process may take the lock again (nested calls: ``run``
writes its report while holding it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from handclust.errors import OutputBusyError as OutputBusyError  # defined with every error in handclust/errors.py
from handclust.io import layout
from handclust.io.storage import OutputStore

log = logging.getLogger(__name__)

LOCK_NAME = layout.LOCK
DEFAULT_STALE_S = 600.0
_SETTLE_S = 1.0  # best-effort stores: how long to wait before reading our write back


def stale_after_s() -> float:
    return float(os.environ.get("HANDCLUST_LOCK_STALE_S") or DEFAULT_STALE_S)


def heartbeat_s() -> float:
    """How often the holder refreshes its heartbeat: well inside the stale time."""
    return max(0.2, min(30.0, stale_after_s() / 5))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OSError:
        return False
    return True


def is_stale(record: dict[str, Any], now: float | None = None) -> str | None:
    """Why the lock ``record`` no longer holds (``None``: it holds)."""
    now = time.time() if now is None else now
    beat = float(record.get("heartbeat_at") or record.get("started_at") or 0.0)
    if now - beat > stale_after_s():
        return f"no heartbeat for {now - beat:.0f} s (stale after {stale_after_s():.0f} s, HANDCLUST_LOCK_STALE_S)"
    if record.get("host") == socket.gethostname():
        pid = int(record.get("pid") or 0)
        if pid <= 0 or not _pid_alive(pid):
            return f"its process {pid} on this host is gone"
        if pid == os.getpid() and record.get("token") not in _HELD_TOKENS:
            return "left by an earlier command in this process"
    return None


def describe(record: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(record.get("started_at") or 0)))
    beat = time.time() - float(record.get("heartbeat_at") or record.get("started_at") or 0)
    return (f"`handclust {record.get('command', '?')}` on host {record.get('host', '?')}, pid {record.get('pid', '?')}, "
            f"started {started}, last heartbeat {beat:.0f} s ago")


# ------------------------------------------------------------------ backends


class _Backend(Protocol):
    kind: str

    def create(self, body: bytes, token: str) -> str | None: ...  # tag, or None when a lock exists
    def read(self) -> tuple[dict[str, Any], str] | None: ...  # (record, tag), None when absent
    def replace(self, body: bytes, token: str, tag: str) -> str | None: ...  # new tag, None when tag no longer matches
    def delete(self, tag: str) -> None: ...


def _parse(data: bytes) -> dict[str, Any]:
    try:
        rec = json.loads(data)
        return rec if isinstance(rec, dict) else {}
    except ValueError:  # a torn or hand-edited lock: no heartbeat, so stale
        return {}


class _LocalBackend:
    kind = "local"

    def __init__(self, path: str):
        self.path = path

    def create(self, body: bytes, token: str) -> str | None:
        # Written whole under a temporary name, then hard-linked into place: link() fails when the
        # lock exists (create-if-absent), and a reader never sees a half-written record (which it
        # would have to call stale).
        tmp = f"{self.path}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(body)
            os.link(tmp, self.path)
        except FileExistsError:
            return None
        except OSError:  # a filesystem without hard links: exclusive create, then write
            return self._create_exclusive(body, token)
        finally:  # also when the write failed (a full disk): no temporary left behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return token

    def _create_exclusive(self, body: bytes, token: str) -> str | None:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        return token

    def read(self) -> tuple[dict[str, Any], str] | None:
        try:
            with open(self.path, "rb") as f:
                rec = _parse(f.read())
        except FileNotFoundError:
            return None
        return rec, str(rec.get("token", ""))

    def replace(self, body: bytes, token: str, tag: str) -> str | None:
        # Move the lock aside (atomic: of two takers only one moves a given file), check it is the one
        # we read, then create ours; a lock that turns out to be another's is put back.
        aside = f"{self.path}.{uuid.uuid4().hex[:8]}.aside"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return None
        try:
            with open(aside, "rb") as f:
                moved = _parse(f.read())
            if str(moved.get("token", "")) != tag:
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.path)
                return None
            return self.create(body, token)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(aside)

    def refresh(self, body: bytes, token: str, tag: str) -> str | None:
        cur = self.read()
        if cur is None or cur[1] != tag:
            return None
        tmp = f"{self.path}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(body)
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return token

    def delete(self, tag: str) -> None:
        cur = self.read()
        if cur is not None and cur[1] == tag:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


class _S3Backend:
    """Conditional PUTs on S3 (and S3-compatible stores that support them) through boto3."""

    kind = "s3"

    def __init__(self, uri: str, bucket: str, key: str):
        from urllib.parse import parse_qs, urlsplit

        import boto3

        query = {k: v[-1] for k, v in parse_qs(urlsplit(uri).query).items()}
        kwargs: dict[str, Any] = {}
        if query.get("endpoint_override"):
            ep = query["endpoint_override"]
            kwargs["endpoint_url"] = ep if "://" in ep else f"{query.get('scheme', 'https')}://{ep}"
        if query.get("region"):
            kwargs["region_name"] = query["region"]
        self.client = boto3.client("s3", **kwargs)
        self.bucket, self.key = bucket, key

    def _precondition(self, exc: Exception) -> bool:
        """True for a condition that did not hold (the lock exists, changed or is gone); any other error
        of the S3 API is raised as one ``OSError`` naming the object, as pyarrow raises its own."""
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409", "NoSuchKey", "404"):
            return True
        raise OSError(f"s3://{self.bucket}/{self.key}: the lock object could not be written ({exc}); check the "
                      "bucket and the store's credentials (AWS_* environment variables)") from None

    def create(self, body: bytes, token: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            r = self._call(self.client.put_object, Bucket=self.bucket, Key=self.key, Body=body, IfNoneMatch="*")
        except ClientError as exc:
            if self._precondition(exc):
                return None
            raise  # not reached: _precondition raises the others
        return str(r["ETag"])

    def read(self) -> tuple[dict[str, Any], str] | None:
        from botocore.exceptions import ClientError

        try:
            r = self._call(self.client.get_object, Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if self._precondition(exc):
                return None
            raise  # not reached: _precondition raises the others
        return _parse(r["Body"].read()), str(r["ETag"])

    def replace(self, body: bytes, token: str, tag: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            r = self._call(self.client.put_object, Bucket=self.bucket, Key=self.key, Body=body, IfMatch=tag)
        except ClientError as exc:
            if self._precondition(exc):
                return None
            raise  # not reached: _precondition raises the others
        return str(r["ETag"])

    refresh = replace

    def _call(self, method: Any, **kwargs: Any) -> Any:
        """``method(**kwargs)``; errors below the S3 API (no credentials, no connection) as one ``OSError``."""
        from botocore.exceptions import BotoCoreError

        try:
            return method(**kwargs)
        except BotoCoreError as exc:
            raise OSError(f"s3://{self.bucket}/{self.key}: {exc}; check the store's endpoint and credentials "
                          "(AWS_* environment variables)") from None

    def delete(self, tag: str) -> None:
        cur = self.read()
        if cur is not None and cur[1] == tag:
            self._call(self.client.delete_object, Bucket=self.bucket, Key=self.key)


class _StoreBackend:
    """Any pyarrow filesystem: no create-if-absent, so write, wait and read back (best effort)."""

    kind = "best-effort"

    def __init__(self, store: OutputStore):
        self.store = store

    def _settled(self, token: str) -> str | None:
        time.sleep(_SETTLE_S)
        cur = self.read()
        return token if cur is not None and cur[1] == token else None

    def create(self, body: bytes, token: str) -> str | None:
        if self.store.exists(LOCK_NAME):
            return None
        self.store.write_bytes(LOCK_NAME, body)
        return self._settled(token)

    def read(self) -> tuple[dict[str, Any], str] | None:
        if not self.store.exists(LOCK_NAME):
            return None
        try:
            rec = _parse(self.store.read_bytes(LOCK_NAME))
        except FileNotFoundError:  # released between the two calls
            return None
        return rec, str(rec.get("token", ""))

    def replace(self, body: bytes, token: str, tag: str) -> str | None:
        cur = self.read()
        if cur is None or cur[1] != tag:
            return None
        self.store.write_bytes(LOCK_NAME, body)
        return self._settled(token)

    def refresh(self, body: bytes, token: str, tag: str) -> str | None:
        cur = self.read()
        if cur is None or cur[1] != tag:
            return None
        self.store.write_bytes(LOCK_NAME, body)
        return token

    def delete(self, tag: str) -> None:
        cur = self.read()
        if cur is not None and cur[1] == tag:
            with contextlib.suppress(FileNotFoundError):
                self.store.fs.delete_file(self.store.path(LOCK_NAME))


_warned_best_effort = False


def _backend(store: OutputStore) -> Any:
    global _warned_best_effort
    if store.local:
        if not os.path.isdir(store.root):
            raise FileNotFoundError(f"{store.uri} does not exist: is it the --out of an earlier `handclust run`?")
        return _LocalBackend(store.path(LOCK_NAME))
    if store.uri.startswith("s3://"):
        try:
            bucket, _, _ = store.root.partition("/")
            return _S3Backend(store.uri, bucket, store.path(LOCK_NAME)[len(bucket) + 1:])
        except ImportError:
            pass
    if not _warned_best_effort:
        _warned_best_effort = True
        log.warning("%s: this store has no create-if-absent write here (install handclust[s3], i.e. boto3, for s3://), so the lock on it is "
                    "best effort: two commands started within %.0f s of each other may both write", store.uri, _SETTLE_S)
    return _StoreBackend(store)


# ------------------------------------------------------------------ the lock


_HELD: dict[str, _Held] = {}
_HELD_TOKENS: set[str] = set()
_GUARD = threading.Lock()


@dataclass
class _Held:
    backend: Any
    record: dict[str, Any]
    tag: str
    depth: int = 1
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    lost: str | None = None


def _body(record: dict[str, Any]) -> bytes:
    return json.dumps(record, indent=2).encode()


def _acquire(store: OutputStore, command: str) -> _Held:
    backend = _backend(store)
    now = time.time()
    token = uuid.uuid4().hex
    record = {"command": command, "host": socket.gethostname(), "pid": os.getpid(), "started_at": now,
              "heartbeat_at": now, "token": token, "out": store.uri}
    for _ in range(3):  # a lock that vanishes or changes between our read and our write: look again
        tag = backend.create(_body(record), token)
        if tag is not None:
            return _Held(backend, record, tag)
        cur = backend.read()
        if cur is None:
            continue
        holder, holder_tag = cur
        why = is_stale(holder)
        if why is None:
            raise OutputBusyError(
                f"{store.uri} is in use by {describe(holder)}; wait for it to finish or choose another output folder "
                f"(a lock whose holder is gone goes stale after {stale_after_s():.0f} s, or at once when its process on "
                f"this host has died; to free it by hand delete {store.uri_of(LOCK_NAME)})")
        tag = backend.replace(_body(record), token, holder_tag)
        if tag is not None:
            log.warning("%s: took over a stale lock (%s; it was %s)", store.uri, why, describe(holder))
            return _Held(backend, record, tag)
    raise OutputBusyError(f"{store.uri}: could not take the lock {store.uri_of(LOCK_NAME)} (other commands keep "
                          "taking it); run one command at a time into a folder")


def _beat(held: _Held, uri: str) -> None:
    while not held.stop.wait(heartbeat_s()):
        rec = {**held.record, "heartbeat_at": time.time()}
        try:
            tag = held.backend.refresh(_body(rec), rec["token"], held.tag)
        except Exception as exc:  # a store hiccup: keep the lock, try at the next beat
            log.warning("%s: could not refresh the lock's heartbeat (%s)", uri, exc)
            continue
        if tag is None:
            held.lost = "another command took the lock over (this one was silent past the stale time)"
            log.warning("%s: %s", uri, held.lost)
            return
        held.record, held.tag = rec, tag


def _remove_stale_temp_files(store: OutputStore) -> None:
    """Half-written files (``.<name>.<id>.tmp``, renamed into place when complete) left by a command
    killed mid-write (SIGKILL, power loss). Readers never see them (hidden names), and with the lock
    held no other command is writing, so every one is stale. Local folders only: object stores are
    written in one request, without a temporary name."""
    if not store.local:
        return
    root = Path(store.path(""))
    for p in root.rglob(".*.tmp"):
        with contextlib.suppress(OSError):
            p.unlink()
            log.info("removed a half-written file a killed command left: %s", p)


@contextlib.contextmanager
def hold(store: OutputStore, command: str) -> Iterator[None]:
    """Hold the lock on ``store`` for ``command`` (``run``, ``assign``, ``evaluate``, ``report``).

    Raises :class:`OutputBusyError` when another live command holds it. Nested use in the same
    process (``run`` writing its report) shares the lock.
    """
    key = store.uri_of(LOCK_NAME)
    with _GUARD:
        held = _HELD.get(key)
        if held is not None:
            held.depth += 1
        else:
            held = _acquire(store, command)
            _HELD[key] = held
            _remove_stale_temp_files(store)
            _HELD_TOKENS.add(held.record["token"])
            held.thread = threading.Thread(target=_beat, args=(held, store.uri), name="handclust-lock", daemon=True)
            held.thread.start()
    try:
        yield
    finally:
        with _GUARD:
            held.depth -= 1
            if held.depth == 0:
                del _HELD[key]
                held.stop.set()
                if held.thread is not None:
                    held.thread.join(timeout=10)
                _HELD_TOKENS.discard(held.record["token"])
                with contextlib.suppress(Exception):  # an unreadable store: the lock goes stale instead
                    held.backend.delete(held.tag)
