"""One writer per output folder (issue 21, item 3): a run, assign, evaluate or report into a folder
another command is writing is refused with one line naming the holder; a lock whose holder died or
went silent is taken over. Local folders and S3 (moto's server) alike."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from handclust.io.run_lock import LOCK_NAME, OutputBusyError, hold
from handclust.io.storage import OutputStore

HANDCLUST = [str(Path(sys.executable).with_name("handclust"))]

# A process that takes the lock on argv[1] and holds it for argv[2] seconds, or exits 3 when refused.
HOLDER = """
import sys, time
from handclust.io.run_lock import OutputBusyError, hold
from handclust.io.storage import OutputStore
start = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
while time.time() < start:
    time.sleep(0.001)
try:
    with hold(OutputStore(sys.argv[1]), "run"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
except OutputBusyError as exc:
    print("busy", exc, flush=True)
    sys.exit(3)
"""


def holder(out: str, seconds: float, start: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, out, str(seconds), str(start)], stdout=subprocess.PIPE, text=True)


def wait_held(p: subprocess.Popen) -> None:
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "held"


def lock_record(store: OutputStore) -> dict:
    return json.loads(store.read_bytes(LOCK_NAME))


def check_lock_rules(out: str) -> None:
    """The rules on any store: a live holder refuses with its host and pid; a dead one on this host
    is taken over; a silent one on another host after HANDCLUST_LOCK_STALE_S; released on exit."""
    store = OutputStore(out)
    p = holder(out, 60)
    try:
        wait_held(p)
        with pytest.raises(OutputBusyError) as err, hold(store, "evaluate"):
            pass
        msg = str(err.value)
        assert "\n" not in msg and f"pid {p.pid}" in msg and socket.gethostname() in msg and "`handclust run`" in msg, msg
        assert lock_record(store)["pid"] == p.pid  # the refused command left the holder's lock alone
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with hold(store, "evaluate"):  # its process is gone: stale at once
        assert lock_record(store)["pid"] == os.getpid()
        with hold(store, "report"):  # nested in the same process: shared
            pass
        assert store.exists(LOCK_NAME)
    assert not store.exists(LOCK_NAME)  # released

    now = time.time()
    foreign = {"command": "run", "host": "another-node", "pid": 1, "started_at": now - 50, "heartbeat_at": now - 5, "token": "x"}
    store.write_bytes(LOCK_NAME, json.dumps(foreign).encode())
    with pytest.raises(OutputBusyError, match="another-node"), hold(store, "run"):
        pass
    store.write_bytes(LOCK_NAME, json.dumps({**foreign, "heartbeat_at": now - 700}).encode())  # default stale: 600 s
    with hold(store, "run"):
        assert lock_record(store)["host"] == socket.gethostname()


def check_one_of_many_wins(out: str, n: int = 4) -> None:
    """Started at the same instant, exactly one process gets the lock."""
    start = time.time() + 2.0  # after every interpreter has started
    procs = [holder(out, 3.0, start) for _ in range(n)]
    codes = [p.wait(timeout=60) for p in procs]
    assert sorted(codes) == [0] + [3] * (n - 1), codes


def test_lock_on_a_local_folder(tmp_path: Path):
    check_lock_rules(str(tmp_path / "out"))


def test_lock_is_taken_by_one_of_several_at_once_locally(tmp_path: Path):
    check_one_of_many_wins(str(tmp_path / "out"))


def test_heartbeat_keeps_a_long_command_holding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """With a short stale time the holder's heartbeat keeps its lock fresh; the others stay refused."""
    monkeypatch.setenv("HANDCLUST_LOCK_STALE_S", "1")
    out = str(tmp_path / "out")
    p = holder(out, 4)
    try:
        wait_held(p)
        time.sleep(2.5)
        rec = lock_record(OutputStore(out))
        assert time.time() - rec["heartbeat_at"] < 1.0 and rec["pid"] == p.pid
        with pytest.raises(OutputBusyError), hold(OutputStore(out), "run"):
            pass
    finally:
        p.kill()
        p.wait()


@pytest.fixture
def s3_uri(s3_bucket):
    root = s3_bucket("handclust-lock")
    return lambda prefix: f"{root}/{prefix}"


def test_lock_on_s3(s3_uri):
    check_lock_rules(s3_uri("runs/a"))


def test_lock_is_taken_by_one_of_several_at_once_on_s3(s3_uri):
    """A conditional PUT (If-None-Match: *): of four runs started together one writes."""
    check_one_of_many_wins(s3_uri("runs/b"))


def test_a_second_run_into_a_busy_folder_is_refused_in_one_line(tmp_path: Path, short_clip: Path):
    """The issue's case: runs started together into one folder each processed every clip. Now the
    second is refused before it reads or writes anything there, and says who holds the folder."""
    out = tmp_path / "out"
    p = holder(str(out), 60)
    try:
        wait_held(p)
        r = subprocess.run([*HANDCLUST, "run", str(short_clip.parent), "--out", str(out), "--no-progress",
                            "--set", "runner=local"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in r.stderr and f"pid {p.pid}" in lines[0] and "is in use by" in lines[0], r.stderr
        assert sorted(q.name for q in out.iterdir()) == [LOCK_NAME]  # no status/, no run.json: nothing touched
    finally:
        p.kill()
        p.wait()
