"""Cluster entry point: discover activities with the Ray runner on the cluster this job runs in.

    ray job submit --address http://HEAD:8265 --working-dir . \\
        --runtime-env-json "$(python jobs/discover.py --runtime-env)" -- \\
        python jobs/discover.py --config cluster_configs/job.yaml \\
        --footage s3://bucket/site-a/manifest.parquet --out s3://bucket/runs/site-a

``--runtime-env`` (run on the submitting machine) prints the job's runtime_env: the Gemini key
(``GEMINI_API_KEY`` / ``GOOGLE_API_KEY``) set there, as env_vars, so that it reaches the job's driver
(which hands it to the labelling tasks) without being baked into the image or typed on a command line.
Object-store credentials are not forwarded: the nodes' instance role / service account reads the
buckets (a forwarded personal key would override it).

Only parses arguments and calls :func:`handclust.discover` with ``runner=ray``; Ray is joined
through ``RAY_ADDRESS``, which ``ray job submit`` sets for the job's driver. Footage may be a local
(shared) folder or manifest, or a URI: clips on an object store are fetched by the worker that
decodes them (:mod:`handclust.io.remote`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

# What the job's driver needs from the submitter's environment: the labelling key (handclust.reporting.labelling.api_key).
FORWARDED = ("GEMINI_API_KEY", "GOOGLE_API_KEY")


def runtime_env(environ: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    """The job's runtime_env: ``env_vars`` with those of :data:`FORWARDED` that are set in ``environ``."""
    env = os.environ if environ is None else environ
    return {"env_vars": {k: env[k] for k in FORWARDED if env.get(k)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime-env", action="store_true",
                        help="print the job's runtime_env JSON from this (the submitting) machine's environment, for "
                             "`ray job submit --runtime-env-json`, and exit")
    parser.add_argument("--config", help="handclust YAML config (e.g. cluster_configs/job.yaml)")
    parser.add_argument("--footage", help="folder, or manifest (.parquet/.csv/.txt; local path or URI)")
    parser.add_argument("--out", help="output root: a directory or s3://, gs:// URI")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, repeatable (e.g. --set ray.max_attempts=5)")
    args = parser.parse_args(argv)
    if args.runtime_env:
        env = runtime_env()
        if not {"GEMINI_API_KEY", "GOOGLE_API_KEY"} & set(env["env_vars"]):
            print("jobs/discover.py: no GEMINI_API_KEY in this environment: the job will name no activities "
                  "(export GEMINI_API_KEY=... before this command to name them)", file=sys.stderr)
        print(json.dumps(env))
        return 0
    missing = [f"--{k}" for k in ("config", "footage", "out") if not getattr(args, k)]
    if missing:
        parser.error(f"{', '.join(missing)} required (or --runtime-env)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from handclust import discover
    from handclust.config import ConfigError
    from handclust.io.footage import FootageError
    from handclust.io.run_lock import OutputBusyError
    from handclust.pipeline import no_clip_message

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
