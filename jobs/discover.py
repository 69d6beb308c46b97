"""Cluster entry point: discover activities with the Ray runner on the cluster this job runs in.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/discover.py --config cluster_configs/job.yaml \\
        --footage s3://bucket/site-a/manifest.parquet --out s3://bucket/runs/site-a

Only parses arguments and calls :func:`handclust.discover` with ``runner=ray``; Ray is joined
through ``RAY_ADDRESS``, which ``ray job submit`` sets for the job's driver. Footage may be a local
(shared) folder or manifest, or a URI: clips on an object store are fetched by the worker that
decodes them (:mod:`handclust.remote`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="handclust YAML config (e.g. cluster_configs/job.yaml)")
    parser.add_argument("--footage", required=True, help="folder, or manifest (.parquet/.csv/.txt; local path or URI)")
    parser.add_argument("--out", required=True, help="output root: a directory or s3://, gs:// URI")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, repeatable (e.g. --set ray.max_attempts=5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from handclust import discover
    from handclust.config import ConfigError
    from handclust.footage import FootageError
    from handclust.pipeline import no_clip_message
    from handclust.run_lock import OutputBusyError

    try:
        result = discover(args.footage, out=args.out, config=args.config,
                          overrides=["runner=ray", *args.overrides], progress=True)
    except (ConfigError, FootageError, OutputBusyError) as exc:  # refused before any work: one line, as the CLI
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.summary, indent=2, default=str))
    if result.summary.get("clips_ok", 0) == 0:  # exit code and run.json's status agree
        print(f"error: {no_clip_message(result.summary)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
