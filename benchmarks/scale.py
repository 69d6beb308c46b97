"""The post-stream path at scale, measured: time and peak memory of every step after the clips are
committed, on synthetic descriptors (data: synthetic, planted activities; not footage).

For each size a fresh subprocess writes a run as the runners leave it (per-clip ``segments/``,
``frames/`` (4 rows per clip) and ``status/``, via :func:`handclust.synthetic.footage_v1.planted_segments_table`),
then times the steps of the real code path:

    ledger          clip_job.Ledger + pipeline.clips_table (statuses read in bulk), clips.parquet
    compaction      pipeline.compact_outputs (per-clip files -> ~128 MB parts)
    read_segments / clustering / map_2d / write_tables / ablations / evaluation / timelines
                    activities.build_activities (its own timings: the clustering step reads the
                    descriptors itself; clustering = fusion + HDBSCAN + kNN graph + temporal model)
    report          report.write_report(reel=False)

Peak memory per step is the process's resident peak during that step (VmHWM, reset before each
step through /proc/self/clear_refs). The growth exponent of a step is the log-log slope of its
time over the number of segments (least squares over the sizes measured). CPU backends
(scikit-learn HDBSCAN, faiss-cpu, PCA map): ``cluster.backend=cpu``, labels off.

Widths: ``default`` (the default config: scene 135, motion 52, ego 16, rhythm 8, pose 17) at every
size; ``gpu`` (cluster_configs/job.yaml: DINOv2-small scene 768, V-JEPA-2 video 1024, fused) only
up to ``--gpu-max`` segments. Planted activities grow with the corpus (``max(12, n / 10k)``), so the
number found (``k``) also measures whether K keeps up above ``cluster.max_fit_segments``.

    python benchmarks/scale.py                                  # the full run (hours on 2 cores)
    python benchmarks/scale.py --sizes 20000 50000 --gpu-max 0   # a quick run (a few minutes)

Writes benchmarks/results/scale.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, os, shutil, sys, tempfile, time
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

n, n_clips, widths_name, workdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
from handclust import schema
from handclust.activities import build_activities
from handclust.runtime.clip_job import Ledger, status_rel
from handclust.config import load_config
from handclust.io.footage import Clip
from handclust.pipeline import clips_table, compact_outputs
from handclust.progress import Progress
from handclust.io.storage import OutputStore
from handclust.synthetic.footage_v1 import DEFAULT_WIDTHS, GPU_JOB_WIDTHS, planted_segments_table

def peak_reset():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

def peak_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")

steps = {}
def step(name, fn):
    peak_reset()
    t0 = time.perf_counter()
    out = fn()
    steps[name] = {"s": time.perf_counter() - t0, "peak_rss_mib": peak_mib()}
    return out

widths = DEFAULT_WIDTHS if widths_name == "default" else GPU_JOB_WIDTHS
base = ["runner=local", "labels.enabled=false", "report.enabled=false", "progress=false", "cluster.backend=cpu",
        "cluster.map_method=pca", "cluster.where=driver"]
cfg = load_config("cluster_configs/job.yaml" if widths_name == "gpu" else None,
                  base + (["ray.address=null", "decode.hwaccel=none", "scene.device=cpu", "video.device=cpu",
                           "cost.node=local"] if widths_name == "gpu" else []))
activities = max(12, n // 10_000)
out = tempfile.mkdtemp(dir=workdir)
store = OutputStore(out)
t0 = time.perf_counter()
seg, truth = planted_segments_table(n, n_clips, n_activities=activities, widths=widths, seed=0)
ids = seg.column("clip_id")
bounds = np.flatnonzero(np.r_[True, np.asarray(pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))), True]) if n > 1 else [0, n]
clips = []
fp = "synthetic"
from concurrent.futures import ThreadPoolExecutor
def commit(i):
    a, b = int(bounds[i]), int(bounds[i + 1])
    part = seg.slice(a, b - a)
    cid = part.column("clip_id")[0].as_py()
    store.write_table(f"frames/{cid}.parquet", schema.table({
        "clip_id": [cid] * 4, "frame_idx": np.arange(4, dtype=np.int32), "t": np.arange(4) * 0.5, "fresh": np.ones(4, bool),
        **{k: np.zeros(4, np.float32) for k in ("motion_dt", "flow_mag_mean", "flow_mag_p90", "ego_tx", "ego_ty", "ego_rotation",
                                                "ego_scale", "ego_residual", "ego_ratio", "ego_inliers")},
        "flow_direction_hist": np.zeros((4, 8), np.float32), "flow_grid": np.zeros((4, 16), np.float32),
        "scene_embedding": np.zeros((4, 8), np.float32), "hand_source": np.zeros(4, np.int8)}, schema.FRAMES))
    store.write_table(f"segments/{cid}.parquet", part)
    dur = float(part.column("t_end")[-1].as_py())
    store.write_json(status_rel(cid), {"clip_id": cid, "path": f"/synthetic/{cid}.mp4", "size_bytes": 1, "phase": None,
                                       "status": "ok", "fingerprint": fp, "duration_s": dur, "n_frames": 4,
                                       "n_segments": b - a, "source_fps": 2.0, "effective_fps": 2.0})
    return Clip(cid, f"/synthetic/{cid}.mp4", 1, None)
with ThreadPoolExecutor(8) as pool:
    clips = list(pool.map(commit, range(len(bounds) - 1)))
setup_s = time.perf_counter() - t0
del seg
def ledger():
    led = Ledger.read(store, [c.clip_id for c in clips])
    tbl = clips_table(store, clips, led)
    store.write_table("clips.parquet", tbl)
    return tbl
clips_tbl = step("ledger", ledger)
step("compaction", lambda: compact_outputs(store, min_files=1))
timings = {}
peak_reset()
t0 = time.perf_counter()
res = build_activities(store, cfg, clips_tbl, None, Progress(enabled=False), timings)
total_activities = time.perf_counter() - t0
activities_peak = peak_mib()
for k in ("read_segments", "clustering", "map_2d", "write_tables", "ablations", "evaluation", "timelines"):
    if k in timings:
        steps[k] = {"s": timings[k]}
steps["activities_total"] = {"s": total_activities, "peak_rss_mib": activities_peak}
from handclust.reporting.report import write_report
step("report", lambda: write_report(out, reel=False, progress=False))
from handclust.core.metrics import agreement
order = np.argsort(np.asarray(res.clusters.column("segment_id").to_pylist(), dtype=object), kind="stable")
print(json.dumps({"segments": n, "clips": len(clips), "widths": widths_name, "dims": sum(widths.values()),
                  "planted_activities": activities, "k": res.summary.get("activities"),
                  "noise_rate": res.summary.get("noise_rate"), "max_fit_segments": cfg.cluster.max_fit_segments,
                  "setup_s": setup_s, "steps": steps,
                  "post_stream_s": sum(v["s"] for k, v in steps.items() if k in ("ledger", "compaction", "activities_total", "report")),
                  "peak_rss_mib": max(v.get("peak_rss_mib", 0) for v in steps.values()),
                  "objects_after": {d: len(os.listdir(os.path.join(out, d))) for d in ("segments", "frames", "status", "timelines")}}))
shutil.rmtree(out, ignore_errors=True)
"""

STEPS = ("ledger", "compaction", "read_segments", "clustering", "map_2d", "write_tables", "ablations", "evaluation",
         "timelines", "report", "activities_total")


def run_size(n: int, clips: int, widths: str, workdir: str, timeout_s: float) -> dict[str, object] | None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(clips), widths, workdir], capture_output=True, text=True,
                             timeout=timeout_s, env=env, cwd=Path(__file__).resolve().parents[1])
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        raise RuntimeError(f"size {n} ({widths}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def exponents(rows: list[dict[str, object]]) -> dict[str, float]:
    """Per step, the log-log slope of its time over segments (needs two sizes or more)."""
    out: dict[str, float] = {}
    for name in (*STEPS, "post_stream"):
        pts = [(float(r["segments"]), float(r["post_stream_s"]) if name == "post_stream" else float(r["steps"][name]["s"]))  # type: ignore[index]
               for r in rows if name == "post_stream" or name in r["steps"]]  # type: ignore[operator]
        pts = [(x, max(y, 1e-3)) for x, y in pts]
        if len({x for x, _ in pts}) >= 2:
            out[name] = round(float(np.polyfit(np.log([x for x, _ in pts]), np.log([y for _, y in pts]), 1)[0]), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--segments-per-clip", type=int, default=100, help="clips = segments / this, within 1k-30k when sizes allow")
    ap.add_argument("--gpu-max", type=int, default=300_000, help="also the GPU job config's widths up to this many segments (0: never)")
    ap.add_argument("--widths", choices=["both", "default", "gpu"], default="both", help="which widths to run at each size")
    ap.add_argument("--timeout-s", type=float, default=4 * 3600)
    ap.add_argument("--workdir", default=None, help="where the synthetic runs are written (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scale.json")
    args = ap.parse_args()
    import tempfile

    workdir = args.workdir or tempfile.mkdtemp(prefix="handclust-scale-")
    Path(workdir).mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, object]]] = {"default": [], "gpu": []}

    def write() -> dict[str, object]:
        """The results so far (written after every size: a long run stopped midway keeps what it measured)."""
        result = {
            "what": "the post-stream path (ledger, compaction, clustering step with ablations, evaluation, timelines, report) "
                    "on synthetic planted descriptors; CPU backends; labels off",
            "data": "synthetic (handclust.synthetic.footage_v1.planted_segments_table), not footage",
            "host": platform.node(), "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M"),
            "command": " ".join(["python", "benchmarks/scale.py", *sys.argv[1:]]),
            "runs": results,
            "growth_exponents": {w: exponents(rows) for w, rows in results.items() if len(rows) >= 2},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        return result

    for n in sorted(args.sizes):
        clips = int(np.clip(n // args.segments_per_clip, min(1000, max(n // 20, 2)), 30_000))
        for widths in ("default", "gpu"):
            if (widths == "gpu" and n > args.gpu_max) or args.widths not in ("both", widths):
                continue
            t0 = time.time()
            row = run_size(n, clips, widths, workdir, args.timeout_s)
            if row is None:
                print(f"{n} {widths}: did not finish within {args.timeout_s:.0f} s", flush=True)
                continue
            results[widths].append(row)
            write()
            print(f"{n} segments, {clips} clips, {widths} widths: post-stream {row['post_stream_s']:.1f} s, "
                  f"peak {row['peak_rss_mib']:.0f} MiB, k={row['k']} of {row['planted_activities']} planted "
                  f"({time.time() - t0:.0f} s with setup)", flush=True)
    result = write()
    print(json.dumps(result["growth_exponents"], indent=2))


if __name__ == "__main__":
    main()
