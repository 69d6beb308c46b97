"""Command line: parses arguments and calls the library; nothing else lives here."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

import click

from handclust.config import ConfigError, config_to_dict, load_config
from handclust.io import layout
from handclust.io.footage import FootageError


def _fail(message: str, code: int = 2) -> None:
    """One line (no traceback) on stderr and exit: 2 for usage errors, 1 when the run itself failed."""
    click.echo(click.style("error: ", fg="red", bold=True) + message, err=True)
    sys.exit(code)


def _check_out(out: str, option: str = "--out") -> None:
    """Refuse, before any work, an output that is an existing file or a local folder that cannot be written."""
    if "://" in out and not out.startswith("file://"):
        return
    p = Path(out.removeprefix("file://"))
    if p.exists() and not p.is_dir():
        _fail(f"{option} {out} is an existing file, not a folder: choose a new or existing output folder")
    probe_dir = p
    while not probe_dir.exists() and probe_dir.parent != probe_dir:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        _fail(f"{option} {out}: {probe_dir} is a file, so the folder cannot be created; choose another {option}")
    import tempfile

    try:  # a real write: mode bits say nothing for root, a read-only mount or a full disk
        with tempfile.TemporaryFile(dir=probe_dir, prefix=".handclust-write-check"):
            pass
    except OSError as exc:
        _fail(f"{option} {out}: cannot write to {probe_dir} ({exc.strerror or exc}); choose a writable {option}")



class _RunDir(click.ParamType):
    """An earlier run's output: a local directory that must exist, or an object-store URI (s3://, gs://)."""

    name = "RUN_DIR"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if "://" in text and not text.startswith("file://"):
            return text
        if not Path(text.removeprefix("file://")).is_dir():
            self.fail(f"{text} is not a directory (give the --out of an earlier `handclust run`)", param, ctx)
        return text


RUN_DIR = _RunDir()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="handclust")
def cli(verbose: int) -> None:
    """HandClust: find the activities that repeat across egocentric construction footage.

    \b
    Typical use:
      handclust sample-footage footage/          # make synthetic clips with a known truth
      handclust run footage/ --out runs/demo     # discover activities, write timelines
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("faiss.loader", "matplotlib", "numba", "PIL"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


@cli.command("sample-footage")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--clips", "n_clips", default=4, show_default=True,
              help="Number of clips (v2: masonry and framing, phases and frame rates in a pattern of 4 that repeats).")
@click.option("--minutes", default=1.5, show_default=True, help="Length of each clip.")
@click.option("--seed", default=0, show_default=True)
@click.option("--fps", default=15.0, show_default=True,
              help="Frame rate of the rendered clips (v2: of those not drawn at a low rate).")
@click.option("--size", default="640x360", show_default=True, help="WIDTHxHEIGHT of the rendered clips.")
@click.option("--version", "version", type=click.Choice(["1", "2"]), default="2", show_default=True,
              help="2: two trades, varied bouts, low-fps sources; 1: masonry only, every clip at --fps.")
def sample_footage(out_dir: str, n_clips: int, minutes: float, seed: int, fps: float, size: str, version: str) -> None:
    """Render synthetic helmet-cam clips plus ground_truth.parquet into OUT_DIR."""
    from handclust.synthetic.sample import make_sample_footage

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        _fail(f"--size {size!r}: expected WIDTHxHEIGHT, e.g. 640x360")
    if n_clips < 1 or minutes <= 0:
        _fail("--clips must be >= 1 and --minutes > 0")
    try:
        out = make_sample_footage(out_dir, n_clips=n_clips, minutes=minutes, seed=seed, fps=fps, size=(w, h),
                                  progress=lambda m: click.echo(m, err=True), version=int(version))
    except ValueError as exc:  # e.g. clips too short for three bouts
        _fail(str(exc))
    click.echo(f"wrote {n_clips} clips and ground_truth.parquet to {out}")


@cli.command("run")
@click.argument("footage", type=click.Path())
@click.option("--out", required=True, help="Output directory (or s3://, gs:// URI); rerunning into it resumes.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set segment.min_segment_s=4 (repeatable).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def run(footage: str, out: str, config_path: str | None, overrides: tuple[str, ...], no_progress: bool) -> None:
    """Discover activities in FOOTAGE (a folder of clips, or a .csv/.parquet/.txt manifest).

    Rerunning into the same --out resumes: finished clips are skipped.
    """
    from handclust.io.run_lock import OutputBusyError, hold
    from handclust.io.storage import OutputStore
    from handclust.modalities.encoders import DeviceError, ModelLoadError
    from handclust.pipeline import RunnerError, discover, record_failure

    _check_out(out)
    try:
        cfg = load_config(config_path, list(overrides))
    except ConfigError as exc:
        # Recorded where the run would have written (docs/user-guide.md: a failed start says why in
        # run.json), unless another command is writing there.
        store = OutputStore(out)
        with contextlib.suppress(OutputBusyError), hold(store, "run"):
            record_failure(store, None, footage, exc, overrides=list(overrides))
        _fail(str(exc))
        return
    try:
        result = discover(footage, out=out, config=cfg, progress=not no_progress)
    except (ConfigError, FootageError, ModelLoadError, DeviceError, OutputBusyError) as exc:
        _fail(str(exc))
        return
    except RunnerError as exc:
        _fail(f"{exc} (recorded in {OutputStore(out, create=False).uri_of('run.json')})", code=1)
        return
    except OSError as exc:  # the disk filled up, or the folder became read-only, mid-run
        _fail(f"could not write the outputs to {out}: {exc.strerror or exc} ({getattr(exc, 'filename', None) or out}); "
              "free space or choose another --out, then rerun the same command to resume", code=1)
        return
    s = result.summary
    click.echo("")
    n_quarantined = len(s.get("quarantined", []))
    click.echo(f"clips        {s['clips_ok']} ok, {s['clips_failed']} failed"
               + (f", {n_quarantined} quarantined" if n_quarantined else "") + f" (of {s['clips_total']})")
    for f in s["failed"]:
        click.echo(f"  failed     {f['error']}")
    store = OutputStore(out, create=False)
    for row in result.clips.to_pylist():
        if row["status"] == "quarantined":
            click.echo(f"  quarantined {row['error']}\n              to retry it: delete "
                       f"{store.uri_of('status/' + row['clip_id'] + '.json')} and rerun")
    click.echo(f"footage      {s['hours_processed']:.2f} h")
    click.echo(f"segments     {s['segments']}")
    click.echo(f"activities   {s.get('activities', 0)}"
               + (f", found in {s['clip_groups']} groups of clips clustered apart (run.json clip_groups)"
                  if s.get("clip_groups", 1) > 1 else ""))
    if s.get("noise_rate") is not None:
        click.echo(f"noise        {100 * s['noise_rate']:.1f} % of segments (assigned to their nearest activity in timelines)")
    if s.get("ray_cluster"):
        click.echo(f"ray          {s['ray_cluster']}")
    if s.get("backends"):
        click.echo("backends     " + ", ".join(f"{k}={v}" for k, v in s["backends"].items()))
    if s.get("labels"):
        lab = s["labels"]
        click.echo(f"labels       {lab['labelled']} named, {lab['failed']} failed, {lab['skipped']} skipped"
                   + (f" ({lab['errors'][0]})" if lab["errors"] else ""))
    if "ground_truth_ari" in s:
        click.echo(f"vs truth     ARI {s['ground_truth_ari']:.2f}, NMI {s['ground_truth_nmi']:.2f}"
                   + (f", MoF {s['ground_truth_mof']:.2f}" if "ground_truth_mof" in s else "") + " (frame level)")
    click.echo(f"wall time    {s['wall_time_s']:.1f} s")
    click.echo(f"outputs      {s['out']}  (clips.parquet, segments/, clusters.parquet, timelines/, run.json)")
    if s.get("report"):
        click.echo(f"report       {s['report']}")
    elif s.get("report_error"):
        click.echo(f"report       not written ({s['report_error']}); retry with `handclust report {s['out']}`")
    if s["clips_ok"] == 0:
        from handclust.pipeline import no_clip_message

        _fail(no_clip_message(s), code=1)


@cli.command("config")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config to resolve.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def show_config(config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Print the resolved config as YAML (a starting point for --config files)."""
    import yaml

    try:
        cfg = load_config(config_path, list(overrides))
    except ConfigError as exc:
        _fail(str(exc))
        return
    click.echo(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


@cli.command("estimate")
@click.option("--hours", type=float, help="Hours of footage to process (required unless --list).")
@click.option("--node", default=None, help="Node type (see --list) [default: aws-g6.xlarge; with --config its first worker type].")
@click.option("--nodes", default=1, show_default=True, help="Number of GPU worker nodes.")
@click.option("--encoders", default="dinov2", show_default=True,
              help="Comma list: efficientnet,dinov2,vjepa2,owlv2 or a registered modality's cost key (or 'none'); efficientnet is CPU work.")
@click.option("--price", type=float, help="Your USD per node hour (spot, committed use).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--list", "list_nodes", is_flag=True, help="List known node types and prices.")
@click.option("--no-head", is_flag=True, help="Leave out the CPU head node (e.g. a head that is up anyway).")
@click.option("--sample", metavar="MANIFEST_OR_DIR",
              help="Probe a few clips of your footage: decode cost scales with their pixels per second and codec.")
@click.option("--sample-clips", default=5, show_default=True, help="How many clips --sample probes (spread over the list).")
@click.option("--config", "cluster_config", type=click.Path(dir_okay=False),
              help="A cluster-launcher YAML (cluster_configs/aws.yaml, gcp.yaml): its worker types, max_workers, head and "
                   "idle timeout; node boot, image pull, idle and post-processing time are then counted.")
@click.option("--deadline-h", type=float, help="Recommend the cheapest worker mix of --config that finishes within this many hours.")
@click.option("--budget-usd", type=float, help="Recommend the fastest worker mix of --config that costs at most this.")
def estimate_cmd(hours: float | None, node: str | None, nodes: int, encoders: str, price: float | None, as_json: bool, list_nodes: bool,
                 no_head: bool, sample: str | None, sample_clips: int, cluster_config: str | None, deadline_h: float | None,
                 budget_usd: float | None) -> None:
    """Estimate node hours, wall time and cost of a cluster run before submitting it; with --deadline-h or
    --budget-usd, recommend the worker type and count of a cluster config."""
    from handclust.cost import HEADS, NODES, Overheads, estimate, load_cluster, probe_sample, recommend, render, render_recommendation
    from handclust.prices import NodeType

    if list_nodes:
        for n in NODES.values():
            kind = f"{n.gpus} x {n.gpu:10s}" if n.gpus else "CPU worker  "
            click.echo(f"{n.name:22s} {kind} {n.vcpus:4d} vCPU  ${n.usd_per_hour:.3f}/h")
        for h in HEADS.values():
            click.echo(f"{h.name:22s} CPU head    {h.vcpus:4d} vCPU  ${h.usd_per_hour:.3f}/h")
        return
    if hours is None:
        _fail("estimate needs --hours (hours of footage), e.g. handclust estimate --hours 2000; --list shows node types")
        return
    encs = tuple(e.strip() for e in encoders.split(",") if e.strip() and e.strip() != "none")
    try:
        if deadline_h is not None or budget_usd is not None:
            if cluster_config is None:
                shipped = Path(__file__).resolve().parent.parent / "cluster_configs" / "aws.yaml"  # a checkout
                if not shipped.is_file():
                    raise ValueError("--deadline-h / --budget-usd need --config CLUSTER_YAML (e.g. cluster_configs/gcp.yaml)")
                cluster_config = str(shipped)
            if price is not None or node is not None:
                raise ValueError("--deadline-h / --budget-usd choose the node type and count from --config: drop --node / --price")
            cluster = load_cluster(cluster_config)
            probed = probe_sample(sample, sample_clips) if sample else None
            r = recommend(hours, cluster, encs, deadline_h=deadline_h, budget_usd=budget_usd, sample=probed)
            click.echo(json.dumps(r.to_dict(), indent=2) if as_json else render_recommendation(r))
            return
        head: bool | NodeType = not no_head
        overheads = None
        if cluster_config is not None:
            cluster = load_cluster(cluster_config)
            types = {w.node.name: w for w in cluster.workers}
            node = node or cluster.workers[0].node.name
            if node not in types:
                raise ValueError(f"{cluster_config} has no worker type {node}; its worker types: {', '.join(types)}")
            if nodes > min(types[node].max_workers, cluster.max_workers):
                raise ValueError(f"--nodes {nodes} is more than {cluster_config} allows for {node} "
                                 f"(max_workers {types[node].max_workers}); raise it there or ask for fewer")
            head = (cluster.head or False) if not no_head else False
            overheads = Overheads.assumed(cluster.provider, cluster.idle_timeout_min, cluster.upscaling_speed)
        probed = probe_sample(sample, sample_clips) if sample else None
        e = estimate(hours, node or "aws-g6.xlarge", nodes, encs, usd_per_hour=price, head=head, sample=probed, overheads=overheads)
    except ValueError as exc:
        _fail(str(exc))
        return
    click.echo(json.dumps(e.to_dict(), indent=2) if as_json else render(e))


@cli.command("report")
@click.argument("out", type=RUN_DIR)
@click.option("--no-reel", is_flag=True, help="Skip the preview reel (report/reel.mp4).")
def report(out: str, no_reel: bool) -> None:
    """Write OUT/report/index.html (and reel.mp4) for a finished run in OUT."""
    from handclust.io.run_lock import OutputBusyError
    from handclust.io.run_record import RunRecordError
    from handclust.reporting.report import write_report

    try:
        path = write_report(out, reel=not no_reel, progress=True)
    except (FileNotFoundError, OutputBusyError, RunRecordError) as exc:
        _fail(str(exc))
        return
    click.echo(f"report       {path}")


@cli.command("assign")
@click.argument("model_run", type=RUN_DIR)
@click.argument("footage", type=click.Path())
@click.option("--out", required=True, help="Output directory for the new footage's tables and timelines.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override how it runs (runner, ray.*); feature settings come from MODEL_RUN.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def assign_cmd(model_run: str, footage: str, out: str, overrides: tuple[str, ...], no_progress: bool) -> None:
    """Assign new FOOTAGE to the activities of an earlier run in MODEL_RUN, without refitting."""
    from handclust.assign import ModelError, assign
    from handclust.io.run_lock import OutputBusyError
    from handclust.io.run_record import RunRecordError

    _check_out(out)
    try:
        result = assign(model_run, footage, out, overrides=list(overrides), progress=not no_progress)
    except (ConfigError, FootageError, ModelError, OutputBusyError, RunRecordError) as exc:
        _fail(str(exc))
        return
    s = result.summary
    click.echo(f"clips        {s['clips_ok']} ok, {s['clips_failed']} failed (of {s['clips_total']})")
    click.echo(f"segments     {s['segments']} placed into {s['activities']} of the activities of {model_run}"
               + (f", noise {100 * s['noise_rate']:.1f} %" if s.get("noise_rate") is not None else ""))
    if s.get("clip_groups"):
        sent = [list(s["clip_groups"].values()).count(g) for g in range(max(s["clip_groups"].values()) + 1)]
        click.echo("groups       new clips sent to the model's groups of clips: "
                   + ", ".join(f"group {g}: {c}" for g, c in enumerate(sent) if c) + " (run.json summary.clip_groups)")
    if "ground_truth_ari" in s:
        click.echo(f"vs truth     ARI {s['ground_truth_ari']:.2f}, NMI {s['ground_truth_nmi']:.2f}, MoF {s['ground_truth_mof']:.2f}")
    click.echo(f"outputs      {s['out']}  (clips.parquet, segments/, clusters.parquet, timelines/, run.json)")
    if s["clips_ok"] == 0:
        from handclust.pipeline import no_clip_message

        _fail(no_clip_message(s), code=1)


def _print_gt(gt: dict) -> None:
    for key, label in (("per_video", "per-video match"), ("whole_set", "whole-set match")):
        b = gt[key]
        click.echo(f"vs truth     {label:15s}  MoF {b['mof']:.3f}, F1@10/25/50 "
                   f"{b['f1@10']:.3f}/{b['f1@25']:.3f}/{b['f1@50']:.3f}, Edit {b['edit']:.3f}")
    click.echo(f"vs truth     no matching      ARI {gt['ari']:.3f}, NMI {gt['nmi']:.3f}")


@cli.command("evaluate")
@click.argument("out", type=RUN_DIR)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config (default: the run's own).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="e.g. --set phase.pattern='(laying|walking)'")
@click.option("--ground-truth", "footage", type=click.Path(exists=True, file_okay=False),
              help="Folder holding ground_truth.parquet (default: the run's footage folder).")
@click.option("--no-ablations", is_flag=True, help="Skip re-clustering on modality subsets.")
def evaluate_cmd(out: str, config_path: str | None, overrides: tuple[str, ...], footage: str | None, no_ablations: bool) -> None:
    """Recompute OUT/eval.json and OUT/ablations.parquet from a finished run's stored features."""
    from handclust.io.run_lock import OutputBusyError
    from handclust.reporting.evaluation import evaluate

    try:
        ev = evaluate(out, config=config_path, overrides=list(overrides), footage=footage, ablations=not no_ablations)
    except (FileNotFoundError, ValueError, OutputBusyError) as exc:
        _fail(str(exc))
        return
    phase = ev.get("phase", {}).get("duration_weighted")
    click.echo(f"segments     {ev['segments']} in {ev['clips']} clips, k={ev['k']}, noise {100 * ev['noise_rate']:.1f} %")
    if phase:
        click.echo(f"phase        ARI {phase['ari']:.3f}, NMI {phase['nmi']:.3f}, V {phase['v_measure']:.3f} (duration-weighted)")
    if ev.get("ground_truth"):
        _print_gt(ev["ground_truth"])
    if ev.get("ablations"):
        click.echo(f"{'variant':24s} {'k':>3s} {'noise':>6s} {'phase ARI':>9s} {'mixing':>6s}")
        for r in ev["ablations"]:
            pa_ = (r.get("phase") or {}).get("duration_weighted", {}).get("ari", float("nan"))
            click.echo(f"{r['name']:24s} {r['k']:3d} {100 * r['noise_rate']:5.1f}% {pa_:9.3f} {r['cross_clip']['mixing_entropy']:6.2f}")
    from handclust.io.storage import OutputStore

    store = OutputStore(out, create=False)
    click.echo(f"wrote        {store.uri_of('eval.json')}, {store.uri_of('ablations.parquet')}")


@cli.command("segment-features")
@click.argument("features_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for <video>.txt and eval.json.")
@click.option("--fps", type=float, required=True, help="Frame rate of the features (e.g. 15 for Breakfast I3D).")
@click.option("--k", "n_clusters", type=int, help="Fix the number of clusters (default: found by HDBSCAN).")
@click.option("--layout", type=click.Choice(["auto", "frames-first", "features-first"]), default="auto", show_default=True,
              help="Whether rows or columns of each feature file are frames.")
@click.option("--time-weight", type=click.FloatRange(min=0), default=None, show_default="auto",
              help="Weight of relative time within each video as a feature. Default: 0.1 when the activities found "
                   "without time keep an order across videos (a scripted task), else off; 0: always off.")
@click.option("--split-groups/--no-split-groups", default=None, show_default="on (cluster.split_groups)",
              help="Cluster videos that come in groups (places, tasks, trades: their mean features part clearly) "
                   "one group at a time; eval.json lists the groups.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config (segment.*, cluster.*).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def segment_features_cmd(features_dir: str, out: str, fps: float, n_clusters: int | None, layout: str, time_weight: float | None,
                         split_groups: bool | None, config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Segment and cluster precomputed per-frame features (DIR/features/<video>.npy|.txt).

    Writes OUT/<video>.txt with one cluster id per frame; with DIR/groundTruth/ also MoF,
    F1@{10,25,50}, Edit, ARI and NMI in OUT/eval.json.
    """
    from handclust.segment_features import FEATURE_DEFAULTS, FeatureDirError, segment_features

    try:
        cfg = load_config(config_path, [*FEATURE_DEFAULTS, *overrides])
        ev = segment_features(features_dir, out, fps, cfg, n_clusters=n_clusters, layout=layout,  # type: ignore[arg-type]
                              time_weight=time_weight, split_groups=split_groups)
    except (ConfigError, FeatureDirError) as exc:
        _fail(str(exc))
        return
    click.echo(f"videos       {ev['videos']} ({ev['frames']} frames), {ev['segments']} segments, "
               f"k={ev['k']}, noise {100 * ev['noise_rate']:.1f} %")
    if len(ev.get("video_groups", [])) > 1:
        click.echo(f"groups       {len(ev['video_groups'])} groups of videos clustered apart: "
                   + "; ".join(f"{len(g)} ({', '.join(g[:3])}{', ...' if len(g) > 3 else ''})" for g in ev["video_groups"])
                   + (f" ({ev['video_groups_reason']})" if ev.get("video_groups_reason") else ""))
    if ev.get("ground_truth"):
        _print_gt(ev["ground_truth"])
    click.echo(f"wrote        {out}/<video>.txt, {out}/eval.json")


@cli.command("summary")
@click.argument("out", type=RUN_DIR)
def summary(out: str) -> None:
    """Print the summary of an earlier run (a local directory or an s3:// / gs:// URI)."""
    from handclust.io.run_record import RunRecordError, read_run
    from handclust.io.storage import OutputStore

    store = OutputStore(out, create=False)
    if not store.exists(layout.RUN):
        _fail(f"{store.path('run.json')} not found: is {out} a HandClust output directory?")
    try:
        record = read_run(store)
    except RunRecordError as exc:
        _fail(str(exc))
        return
    click.echo(json.dumps(record.get("summary", {}), indent=2))


def main() -> None:
    cli(prog_name="handclust")


if __name__ == "__main__":
    main()
