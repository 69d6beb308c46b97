"""A real two-node Ray cluster on this machine: a head and a worker started with `ray start`,
inside a private network namespace so nothing listens beyond loopback. Proves the Ray runner
assumes nothing about one node (paths, object store, scheduling) and gives the local tables."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.ray

# Fractional CPUs: with one CPU per node, whole-CPU decode tasks could never fit beside an actor.
DRIVER = r"""
import json, sys, ray
from handclust import discover
res = discover(sys.argv[1], out=sys.argv[2], progress=False, overrides=[
    "runner=ray", "ray.address=127.0.0.1:6390", "ray.decode_num_cpus=0.5", "ray.actor_num_cpus=0.2",
    "report.enabled=false", "evaluation.ablations=false", "pose.enabled=false"])
nodes = [n for n in ray.nodes() if n["Alive"]] if ray.is_initialized() else None
print("RESULT " + json.dumps({"clips_ok": res.summary["clips_ok"], "segments": res.summary["segments"]}))
"""


# Stops what the test started and nothing else: every process in the test's private network
# namespace (Ray's daemons included) except the script's own shell. `ray stop` would end every Ray
# process of the user on the machine: a user's own cluster, other runs, other tests.
STOP_OWN = r"""
stop_own() {
  me=$(readlink /proc/$$/ns/net)
  [ "$me" != "$(readlink /proc/1/ns/net)" ] || { echo "not in a private network namespace" >&2; return 1; }
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" = "$$" ] && continue
    [ "$(readlink "$d/ns/net" 2>/dev/null)" = "$me" ] && kill -9 "$pid" 2>/dev/null
  done
  return 0
}
"""


def _namespaced(script: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["unshare", "-n", "bash", "-c", STOP_OWN + script], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def can_unshare() -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2) for a private network namespace")
    r = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot create a network namespace here (needs root or user namespaces): {r.stderr.strip()}")


def test_two_node_cluster_gives_the_local_tables(can_unshare, footage_dir: Path, tmp_path: Path):
    from handclust import discover

    clips = tmp_path / "clips"
    clips.mkdir()
    for p in sorted(footage_dir.glob("*.mp4"))[:2]:
        shutil.copy(p, clips / p.name)
    local = discover(clips, out=tmp_path / "local", progress=False,
                     overrides=["runner=local", "report.enabled=false", "evaluation.ablations=false", "pose.enabled=false"])
    ray_bin = str(Path(sys.executable).parent / "ray")
    tmp = tempfile.mkdtemp(prefix="hc2n")  # short: Ray's socket paths must fit in 107 bytes
    (Path(tmp) / "driver.py").write_text(DRIVER)
    common = "--num-cpus=1 --object-store-memory=150000000 --node-ip-address=127.0.0.1 --disable-usage-stats"
    script = f"""
set -e
ip link set lo up
export RAY_TMPDIR={tmp} RAY_AUTH_MODE=disabled PYTHONPATH={os.getcwd()}
trap stop_own EXIT
{ray_bin} start --head --port=6390 --include-dashboard=false --temp-dir={tmp} {common} >/dev/null
{ray_bin} start --address=127.0.0.1:6390 {common} >/dev/null
{sys.executable} -c "import ray; ray.init(address='127.0.0.1:6390'); print('NODES', sum(n['Alive'] for n in ray.nodes()))"
{sys.executable} {tmp}/driver.py {clips} {tmp_path / 'two_nodes'}
"""
    try:
        r = _namespaced(script)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "NODES 2" in r.stdout, r.stdout
    result = json.loads(r.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert result["clips_ok"] == 2 and result["segments"] == local.summary["segments"]
    a = pd.read_parquet(tmp_path / "local" / "segments").sort_values(["clip_id", "seg_idx"]).reset_index(drop=True)
    b = pd.read_parquet(tmp_path / "two_nodes" / "segments").sort_values(["clip_id", "seg_idx"]).reset_index(drop=True)
    assert (a.segment_id == b.segment_id).all() and (a.t_start == b.t_start).all()
    ca = pd.read_parquet(tmp_path / "local" / "clusters.parquet").sort_values("segment_id").reset_index(drop=True)
    cb = pd.read_parquet(tmp_path / "two_nodes" / "clusters.parquet").sort_values("segment_id").reset_index(drop=True)
    assert (ca.cluster == cb.cluster).all()


LOCAL_DRIVER = r"""
import json, sys
from handclust import discover
res = discover(sys.argv[1], out=sys.argv[2], progress=False, overrides=[
    "runner=ray", "ray.decode_num_cpus=0.5", "ray.actor_num_cpus=0.2", "labels.enabled=false",
    "report.enabled=false", "evaluation.ablations=false", "pose.enabled=false"])
print("RESULT " + json.dumps({"clips_ok": res.summary["clips_ok"], "ray_cluster": res.summary.get("ray_cluster")}))
"""

COUNT_JOBS = r"""
import os, ray
ray.init(address="127.0.0.1:6391", log_to_driver=False)
from ray._private import state
print("FOREIGN_DRIVERS", sum(1 for j in state.jobs() if j.get("DriverPid") != os.getpid()))
"""


def test_run_never_joins_a_foreign_or_dead_cluster(can_unshare, footage_dir: Path, tmp_path: Path):
    """A `ray start` cluster on the machine (another user's) is left alone, and once it has died
    without `ray stop` its pointer file does not make the next run wait for it (issue 10, defect 1)."""
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(sorted(footage_dir.glob("*.mp4"))[0], clips)
    ray_bin = str(Path(sys.executable).parent / "ray")
    tmp = tempfile.mkdtemp(prefix="hcfc")  # RAY_TMPDIR: the pointer file lands here, not in /tmp/ray
    (Path(tmp) / "driver.py").write_text(LOCAL_DRIVER)
    (Path(tmp) / "jobs.py").write_text(COUNT_JOBS)
    repo = Path(__file__).resolve().parent.parent
    script = f"""
set -e
ip link set lo up
export RAY_TMPDIR={tmp} RAY_AUTH_MODE=disabled PYTHONPATH={repo}
trap stop_own EXIT
{ray_bin} start --head --port=6391 --include-dashboard=false --num-cpus=1 --object-store-memory=150000000 \
    --node-ip-address=127.0.0.1 --disable-usage-stats >/dev/null
test -f {tmp}/ray/ray_current_cluster && echo POINTER_WRITTEN
timeout 300 {sys.executable} {tmp}/driver.py {clips} {tmp_path / 'beside'}
{sys.executable} {tmp}/jobs.py
stop_own  # the foreign cluster dies without `ray stop`: its pointer file stays
test -f {tmp}/ray/ray_current_cluster && echo POINTER_LEFT
timeout 300 {sys.executable} {tmp}/driver.py {clips} {tmp_path / 'after'} || echo "DRIVER_RC $?"
"""
    try:
        r = _namespaced(script, timeout=900)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]
    assert "POINTER_WRITTEN" in out and "POINTER_LEFT" in out, out  # the set-up a bare ray.init() would follow
    results = [json.loads(line.split("RESULT ", 1)[1]) for line in out.splitlines() if line.startswith("RESULT ")]
    assert "DRIVER_RC" not in out, out[-3000:] + r.stderr[-3000:]  # 124: it waited for the dead cluster
    assert len(results) == 2 and all(res["clips_ok"] == 1 for res in results), out
    assert "FOREIGN_DRIVERS 0" in out, out  # the run did not join the stranger's cluster
    assert all("new local Ray instance" in res["ray_cluster"] for res in results), results


def test_job_submitted_as_the_readme_shows_writes_the_local_tables(can_unshare, short_clip: Path, tmp_path: Path):
    """docs/user-guide.md "Scale out on Ray" (the README links it): token auth set up, `ray start --head`, then `ray job submit ...
    -- python jobs/discover.py` through the Jobs API (needs ray[default]); the job's tables equal
    the local runner's (issue 13: the documented submit path failed without ray[default] and a token);
    the Gemini key reaches a job's driver through `--runtime-env-json "$(python jobs/discover.py --runtime-env)"`."""
    from handclust import discover

    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(short_clip, clips / short_clip.name)
    fit = ["pose.enabled=false", "report.enabled=false", "evaluation.ablations=false", "labels.enabled=false"]
    discover(clips, out=tmp_path / "local", progress=False, overrides=["runner=local", "cluster.backend=cpu", *fit])
    repo = Path(__file__).resolve().parent.parent
    bin_dir = Path(sys.executable).parent
    tmp = tempfile.mkdtemp(prefix="hcjs")  # short: Ray's socket paths must fit in 107 bytes
    sets = " ".join(f"--set {s}" for s in [*fit, "ray.decode_num_cpus=0.5", "ray.actor_num_cpus=0.2"])
    # HOME: `ray get-auth-token --generate` writes ~/.ray/auth_token, here inside the test's temp dir.
    script = f"""
set -e
ip link set lo up
unset GEMINI_API_KEY GOOGLE_API_KEY
export HOME={tmp} RAY_TMPDIR={tmp} PATH={bin_dir}:$PATH PYTHONPATH={repo} RAY_USAGE_STATS_ENABLED=0
trap stop_own EXIT
cd {repo}
export RAY_AUTH_MODE=token
ray get-auth-token --generate >/dev/null
ray start --head --num-cpus=2 --object-store-memory=200000000 --node-ip-address=127.0.0.1 \
    --dashboard-host=127.0.0.1 --temp-dir={tmp} >/dev/null
ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
    python jobs/discover.py --config cluster_configs/job-cpu.yaml --footage {clips} --out {tmp_path / 'job'} {sets}
echo SUBMITTED_OK
# The Gemini key reaches the job's driver from the submitter's environment only (docs/cluster-guide.md):
# the head was started without it, and no config or image holds it.
GEMINI_API_KEY=not-a-real-key ray job submit --address http://127.0.0.1:8265 --working-dir . \
    --runtime-env-json "$(GEMINI_API_KEY=not-a-real-key python jobs/discover.py --runtime-env)" -- \
    python -c "from handclust.config import load_config; from handclust.reporting.labelling import api_key; \
print('KEY_SEEN', api_key(load_config('cluster_configs/job.yaml', []).labels))"
RAY_AUTH_MODE=disabled ray job list --address http://127.0.0.1:8265 >/dev/null 2>&1 && echo NO_TOKEN_ACCEPTED || echo NO_TOKEN_REFUSED
"""
    try:
        r = _namespaced(script, timeout=600)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "SUBMITTED_OK" in r.stdout, out[-4000:]
    assert "succeeded" in out, out[-4000:]
    assert "NO_TOKEN_REFUSED" in r.stdout, out[-4000:]  # the dashboard really asks for the token
    assert "KEY_SEEN not-a-real-key" in out, out[-4000:]  # labelling would run on the cluster (issue 22)
    run = json.loads((tmp_path / "job" / "run.json").read_text())
    assert run["config"]["runner"] == "ray" and run["config"]["cluster"]["backend"] == "cpu"
    a = pd.read_parquet(tmp_path / "local" / "segments").sort_values("segment_id").reset_index(drop=True)
    b = pd.read_parquet(tmp_path / "job" / "segments").sort_values("segment_id").reset_index(drop=True)
    assert len(a) > 0 and (a.segment_id == b.segment_id).all() and (a.t_start == b.t_start).all()
    ca = pd.read_parquet(tmp_path / "local" / "clusters.parquet").sort_values("segment_id").reset_index(drop=True)
    cb = pd.read_parquet(tmp_path / "job" / "clusters.parquet").sort_values("segment_id").reset_index(drop=True)
    assert (ca.cluster == cb.cluster).all()
