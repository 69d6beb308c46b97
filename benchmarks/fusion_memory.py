"""Peak host memory of the clustering step's fusion (read the fused descriptors, fuse) at the GPU
job's widths, at two or more sizes, so that the part that grows with the segments (the slope) is
told apart from the part that does not (imports, the 50k-row PCA sample): what 4.5M segments need
is the slope (issue 22, point 6). Data: synthetic planted descriptors
(:func:`handclust.synthetic.footage_v1.planted_segments_table`), not footage.

Each size runs in a fresh subprocess: it writes a run's ``segments/`` (compacted, as after the
stream), then resets the resident peak (VmHWM, /proc/self/clear_refs) and does what
``activities.cluster_and_save`` does up to the fused vectors, with the code on PYTHONPATH: where
``handclust.io.run_tables.SegmentDescriptors`` exists, every column but the fused descriptors,
then the descriptors one modality at a time as fusion takes them; in older trees the whole table
and ``fusion_inputs`` (every modality's array at once). Run it once per tree to compare:

    PYTHONPATH=. python benchmarks/fusion_memory.py --sizes 10000 30000
    PYTHONPATH=/tmp/old python benchmarks/fusion_memory.py --sizes 10000 30000 --label before

Writes (adds its rows to) benchmarks/results/fusion_memory.json.
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

CHILD = r"""
import json, sys, tempfile, time
import numpy as np
import pyarrow.compute as pc
n, n_clips, workdir, job_yaml = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
from handclust import schema
from handclust.config import load_config
from handclust.core.clustering.fusion import fuse
from handclust.io import run_tables
from handclust.io.storage import OutputStore
from handclust.modalities import registry as modalities
from handclust.pipeline import compact_outputs
from handclust.synthetic.footage_v1 import GPU_JOB_WIDTHS, planted_segments_table

def peak_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")

cfg = load_config(job_yaml, ["runner=local", "labels.enabled=false", "cluster.backend=cpu", "ray.address=null",
                                               "decode.hwaccel=none", "scene.device=cpu", "video.device=cpu", "cost.node=local"])
store = OutputStore(tempfile.mkdtemp(dir=workdir))
seg, _ = planted_segments_table(n, n_clips, n_activities=12, widths=GPU_JOB_WIDTHS, seed=0)
ids = seg.column("clip_id").unique().to_pylist()
for cid in ids:
    store.write_table(f"segments/{cid}.parquet", seg.filter(pc.equal(seg.column("clip_id"), cid)))
import pyarrow as pa
clips_tbl = pa.table({"clip_id": ids, "path": [f"/synthetic/{c}.mp4" for c in ids], "status": ["ok"] * len(ids)})
compact_outputs(store, min_files=1)
del seg
names = modalities.fusion_modalities(cfg)
dims = {m: int(GPU_JOB_WIDTHS.get(m, 0)) for m in names}
import gc; gc.collect()
base = peak_mib()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
start = peak_mib()
t0 = time.perf_counter()
if hasattr(run_tables, "SegmentDescriptors"):
    path = "light table + SegmentDescriptors (one modality at a time)"
    cols = {m: modalities.get(m).column for m in names}
    segments = run_tables.ok_segments(store, clips_tbl, columns=[c for c in schema.SEGMENTS.names if c not in cols.values()])
    vectors = run_tables.SegmentDescriptors(store, segments, cols)
    measured = schema.measured_masks(segments, list(cols))
else:
    path = "whole table + fusion_inputs (every modality at once)"
    segments = run_tables.ok_segments(store, clips_tbl)
    vectors, measured = modalities.fusion_inputs(segments, names)
clip_ids = np.asarray(segments.column("clip_id").to_pylist(), dtype=object)
f = fuse(vectors, clip_ids, cfg.cluster, measured)
took = time.perf_counter() - t0
row = {"segments": n, "clips": len(ids), "modalities": list(names), "dims": dims, "fused_dims": sum(dims.values()),
       "largest_modality_dims": max(dims.values()), "path": path, "fuse_s": round(took, 1),
       "rss_before_mib": round(start, 1), "peak_rss_mib": round(peak_mib(), 1),
       "weights": {m: round(s.weight, 4) for m, s in f.scores.items()}}
if "--assign" in sys.argv:  # keep the run and the fitted model for ASSIGN_CHILD, one fresh process per way
    f.save(f"{store.root}/fusion.npz")
    import pyarrow.parquet as pq
    pq.write_table(clips_tbl, f"{store.root}/bench_clips.parquet")
    row["store"] = str(store.root)
print(json.dumps(row))
if "--assign" not in sys.argv:
    import shutil
    shutil.rmtree(store.root, ignore_errors=True)
"""

# `handclust assign`'s fusion of new footage with a fitted model, in a fresh process per way: this
# tree's (the descriptors one modality at a time) or every descriptor column at once (the way before).
ASSIGN_CHILD = r"""
import json, sys, time
import numpy as np
import pyarrow.parquet as pq
root, way = sys.argv[1], sys.argv[2]
from handclust import schema
from handclust.core.clustering.fusion import Fusion
from handclust.io import run_tables
from handclust.io.storage import OutputStore
from handclust.modalities import registry as modalities

def peak_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")

store = OutputStore(root)
f = Fusion.load(f"{root}/fusion.npz")
clips_tbl = pq.read_table(f"{root}/bench_clips.parquet")
names = list(f.transforms)
cols = {m: modalities.get(m).column for m in names}
import gc; gc.collect()
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
start = peak_mib()
t0 = time.perf_counter()
if way == "one modality at a time":
    segs = run_tables.ok_segments(store, clips_tbl, columns=[c for c in schema.SEGMENTS.names if c not in cols.values()])
    vecs = run_tables.SegmentDescriptors(store, segs, cols)
else:
    segs = run_tables.ok_segments(store, clips_tbl)
    vecs, _ = modalities.fusion_inputs(segs, names)
clip_ids = np.asarray(segs.column("clip_id").to_pylist(), dtype=object)
fused = f.transform(vecs, clip_ids, schema.measured_masks(segs, names))
print(json.dumps({"s": round(time.perf_counter() - t0, 1), "rss_before_mib": round(start, 1),
                  "grew_mib": round(peak_mib() - start, 1), "fused": list(fused.shape)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000])
    ap.add_argument("--label", default="this tree", help="which code the rows measure (e.g. a commit)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--assign", action="store_true", help="also `handclust assign`'s fusion of the same segments with the "
                    "fitted model, one modality at a time against every column at once (this tree only)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fusion_memory.json")
    args = ap.parse_args()
    import tempfile

    workdir = args.workdir or tempfile.mkdtemp(prefix="handclust-fusion-memory-")
    result = json.loads(args.out.read_text()) if args.out.exists() else {
        "what": "peak resident memory of reading the fused descriptors and fusing them (the clustering step up to the fused "
                "vectors) at the GPU job's widths (cluster_configs/job.yaml, CPU), per tree",
        "data": "synthetic (handclust.synthetic.footage_v1.planted_segments_table), not footage", "runs": []}
    for n in sorted(args.sizes):
        env = {**os.environ}
        # Run from the work dir: the code measured is the one on PYTHONPATH, not a checkout in the current directory.
        job_yaml = str(Path(__file__).resolve().parents[1] / "cluster_configs" / "job.yaml")
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(max(2, n // 100)), workdir, job_yaml,
                              *(["--assign"] if args.assign else [])], capture_output=True,
                             text=True, env=env, cwd=workdir)
        if out.returncode != 0:
            raise RuntimeError(f"size {n} failed:\n{out.stderr[-3000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        if args.assign:
            row["assign_transform"] = {}
            for way in ("one modality at a time", "every column at once"):
                a = subprocess.run([sys.executable, "-c", ASSIGN_CHILD, row["store"], way], capture_output=True, text=True,
                                   env=env, cwd=workdir)
                if a.returncode != 0:
                    raise RuntimeError(f"assign at size {n} ({way}) failed:\n{a.stderr[-3000:]}")
                row["assign_transform"][way] = json.loads(a.stdout.strip().splitlines()[-1])
            import shutil
            shutil.rmtree(row.pop("store"), ignore_errors=True)
        row.update(label=args.label, host=platform.node(), cpus=os.cpu_count(), when=time.strftime("%Y-%m-%d %H:%M"),
                   pythonpath=env.get("PYTHONPATH", ""), blas_threads=env.get("OPENBLAS_NUM_THREADS", "default"))
        result["runs"].append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"{args.label}: {n} segments: peak {row['peak_rss_mib']:.0f} MiB (from {row['rss_before_mib']:.0f}), "
              f"fuse {row['fuse_s']:.0f} s" + (f"; assign {row['assign_transform']}" if args.assign else ""), flush=True)


if __name__ == "__main__":
    main()
