"""Peak memory of processing one clip vs the clip's length: it must not grow with length.

Frames stream through in chunks (decode.chunk_frames); only per-frame feature rows are kept.
Each length runs in a fresh subprocess; the figure is the peak of memory allocated while the clip
is processed (tracemalloc: Python and numpy buffers, which hold the frames), next to the process's
peak RSS (which includes imports and decoder buffers).
Writes benchmarks/results/memory_cpu.json.

    python benchmarks/memory.py [--minutes 0.5 2 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import resource, sys, time, tracemalloc
from pathlib import Path
from handclust.config import load_config
from handclust.io.footage import find_clips
from handclust.pipeline import LocalRunner
from handclust.progress import Progress
from handclust.io.storage import OutputStore
cfg = load_config(None, ["progress=false"])
runner = LocalRunner(cfg, OutputStore(sys.argv[2]), Progress(enabled=False))
runner._setup()
clip = find_clips([Path(sys.argv[1])], cfg.phase.pattern)[0]
tracemalloc.start()
t0 = time.perf_counter()
st = runner.process_clip(clip)
assert st["status"] == "ok", st
_, peak = tracemalloc.get_traced_memory()
print(peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t0)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, nargs="+", default=[0.5, 2.0, 4.0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "memory_cpu.json")
    args = ap.parse_args()
    from handclust.synthetic.footage_v1 import render_clip

    work = Path(tempfile.mkdtemp(prefix="hc-mem-"))
    rows = []
    for m in args.minutes:
        clip = work / f"01_production_{m:g}min.mp4"
        render_clip(clip, "production", m * 60, seed=5, fps=15, size=(640, 360))
        out = subprocess.run([sys.executable, "-c", CHILD, str(clip), str(work / f"out{m:g}")], capture_output=True, text=True, check=True)
        traced, rss, secs = out.stdout.split()
        row = {"minutes": m, "python_heap_peak_mib": int(traced) / 2**20, "process_rss_peak_mib": int(rss) / 1024, "seconds": float(secs)}
        rows.append(row)
        print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"clip": "640x360 15 fps H.264", "chunk_frames": 64, "when": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
