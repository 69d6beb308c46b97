"""Peak object-store use and driver RSS of the Ray runner vs the number of clips: flat in corpus size.

The Ray runner streams every clip through one pipeline and commits each clip by a task of its own
as soon as its rows are through (``ray.clips_per_wave`` runs pipelines of N clips instead). This
runs the same footage (one rendered clip copied N times: distinct paths, so distinct clips) through
the Ray runner for several N, in waves of ``--wave`` clips and as one stream of all N clips (the
default). Each row is a fresh local Ray instance in a child process; a thread polls the object
store's bytes in use every 0.25 s. Small frames (96 x 54, one sampled frame per source frame) make
the feature rows, the part that grows with the corpus, large next to the pixel chunks in flight.
Also records when each clip's status was committed (seconds from the start): spread over the run.
``--long K`` adds a row of K long clips holding as much footage as the most short clips (few long
clips against many short ones: memory must follow the clips in flight, not their length).
Writes benchmarks/results/ray_memory_cpu.json.

    python benchmarks/ray_memory.py [--clips 4 8 16] [--wave 4] [--minutes 1] [--long 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_row(footage: Path, out: Path, wave: int, overrides: list[str]) -> dict[str, object]:
    """Runs in the child: one local Ray instance over ``footage`` in waves of ``wave`` clips."""
    import resource
    import threading

    import pyarrow.parquet as pq
    import ray
    from ray._private import internal_api

    from handclust.config import load_config
    from handclust.io.footage import find_clips
    from handclust.io.storage import OutputStore
    from handclust.progress import Progress
    from handclust.runtime.ray_runner import RayRunner

    cfg = load_config(None, ["runner=ray", "progress=false", "pose.enabled=false", "ray.num_cpus=2",
                             "ray.object_store_memory_mb=1000", "ray.actor_num_cpus=0.3", "decode.width=96",
                             f"ray.clips_per_wave={wave}", *overrides])
    clips = find_clips(footage, cfg.phase.pattern)
    ray.init(address="local", num_cpus=2, object_store_memory=1000 * 2**20, include_dashboard=False, log_to_driver=False)
    state = internal_api.get_state_from_address(ray.get_runtime_context().gcs_address)
    peak = {"used": 0, "spilled": 0}
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.25):
            try:
                s = internal_api.get_memory_info_reply(state).store_stats
            except Exception:  # a missed sample is not a result
                continue
            peak["used"] = max(peak["used"], int(s.object_store_bytes_used))
            peak["spilled"] = max(peak["spilled"], int(s.spilled_bytes_total))

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    threading.Thread(target=poll, daemon=True).start()
    t0 = time.time()
    statuses = RayRunner(cfg, OutputStore(out), Progress(False)).process_clips(clips)
    wall = time.time() - t0
    stop.set()
    commits = sorted((out / "status" / f"{c.clip_id}.json").stat().st_mtime - t0 for c in clips)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ray.shutdown()
    rows = sum(pq.read_metadata(p).num_rows for p in (out / "frames").glob("*.parquet"))
    return {"clips": len(clips), "clips_per_wave": wave, "clips_ok": sum(s.get("status") == "ok" for s in statuses),
            "frame_rows": rows, "object_store_peak_mib": peak["used"] / 2**20, "spilled_mib": peak["spilled"] / 2**20,
            "driver_rss_peak_mib": rss / 1024, "driver_rss_before_run_mib": rss_before / 1024, "wall_s": wall,
            "first_commit_s": commits[0], "last_commit_s": commits[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--wave", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--long", type=int, default=2, help="also K long clips with the footage of the most short ones (0: none)")
    ap.add_argument("--set", action="append", default=[], help="config override for every row, e.g. ray.data_memory_mb=40")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ray_memory_cpu.json")
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # child mode: footage dir
    ap.add_argument("--run-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--one-wave", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one:
        print("ROW " + json.dumps(one_row(args.one, args.run_out, args.one_wave, args.set)))
        return

    from handclust.synthetic.footage_v1 import render_clip

    work = Path(tempfile.mkdtemp(prefix="hc-raymem-"))
    src = work / "source.mp4"
    render_clip(src, "production", args.minutes * 60, seed=5, fps=5.0, size=(96, 54))
    rows = []
    sets = [(n, src, args.minutes, sorted({args.wave, n})) for n in args.clips]
    if args.long:
        minutes = max(args.clips) * args.minutes / args.long
        long_src = work / "long.mp4"
        render_clip(long_src, "production", minutes * 60, seed=5, fps=5.0, size=(96, 54))
        sets.append((args.long, long_src, minutes, [args.long]))
    for n, clip, minutes, waves in sets:
        footage = work / f"footage_{n}_{minutes:g}"
        footage.mkdir()
        for i in range(n):
            shutil.copy(clip, footage / f"{i + 1:03d}_production.mp4")
        for wave in waves:
            r = subprocess.run([sys.executable, __file__, "--one", str(footage), "--run-out", str(work / f"out_{n}_{minutes:g}_{wave}"),
                                "--one-wave", str(wave), *[f"--set={o}" for o in args.set]],
                               capture_output=True, text=True, env={**os.environ, "RAY_TMPDIR": str(work)})
            if r.returncode != 0:
                raise SystemExit(f"{n} clips, waves of {wave}: the child failed:\n{r.stderr[-3000:]}")
            row = {**json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("ROW "))[4:]), "clip_minutes": minutes,
                   "overrides": args.set}
            rows.append(row)
            print(f"{n:3d} clips of {minutes:g} min, waves of {wave:3d}: object store peak {row['object_store_peak_mib']:6.1f} MiB, driver RSS "
                  f"{row['driver_rss_peak_mib']:6.0f} MiB, commits at {row['first_commit_s']:.0f}-{row['last_commit_s']:.0f} s "
                  f"of {row['wall_s']:.0f} s", flush=True)
    result = {"what": "RayRunner.process_clips on a fresh 2-CPU local Ray per row; object store bytes in use polled every 0.25 s",
              "footage": f"one {args.minutes:g} min 96x54 5 fps synthetic clip copied N times (and one long clip copied "
                          f"--long times), sampled at 5 fps, pose off",
              "host": platform.node(), "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d"), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
