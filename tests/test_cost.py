import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from handclust import cost
from handclust.cost import HEADS, NODES, estimate

REPO_RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def test_cost_scales_with_hours_and_nodes_split_wall_time():
    a = estimate(100, "aws-g6.xlarge", 1, ("dinov2",), head=False)
    b = estimate(200, "aws-g6.xlarge", 4, ("dinov2",), head=False)
    clips_a = a.node_hours - a.clustering_hours
    clips_b = b.node_hours - b.clustering_hours
    assert clips_b == pytest.approx(2 * clips_a)
    assert b.wall_hours - b.clustering_hours == pytest.approx((a.wall_hours - a.clustering_hours) * 2 / 4)
    assert a.usd == pytest.approx(a.node_hours * NODES["aws-g6.xlarge"].usd_per_hour)


def test_head_node_and_clustering_task_are_counted():
    e = estimate(2000, "aws-g6.xlarge", 8, ("dinov2",))
    assert e.head == HEADS["aws"] and e.head_hours == pytest.approx(e.wall_hours)
    assert e.usd == pytest.approx(e.node_hours * e.node.usd_per_hour + e.head_hours * HEADS["aws"].usd_per_hour)
    assert e.segments == 2000 * 3600 // 8 and e.clustering_hours > 0  # 900k segments: minutes, not zero
    assert e.clustering_hours < e.wall_hours and "clustering" in e.sources and "head" in e.sources
    assert estimate(2000, "gcp-g2-standard-8", 8).head == HEADS["gcp"]
    assert estimate(2000, "aws-g6.xlarge", 8, ("dinov2",), head=False).usd < e.usd


def test_heavier_encoders_make_the_gpu_the_bottleneck():
    light = estimate(100, "aws-g4dn.xlarge", 1, ())
    heavy = estimate(100, "aws-g4dn.xlarge", 1, ("dinov2", "vjepa2", "owlv2"))
    assert light.bottleneck == "cpu"
    assert heavy.bottleneck == "gpu" and heavy.usd > light.usd
    assert all(k in heavy.sources for k in ("vjepa2_windows_per_s", "owlv2_frames_per_s", "cpu", "price"))


def test_price_override_and_bad_input():
    assert estimate(10, "aws-g5.xlarge", usd_per_hour=0.3).node.usd_per_hour == 0.3
    with pytest.raises(ValueError, match="unknown node type"):
        estimate(10, "my-laptop")
    with pytest.raises(ValueError, match="unknown encoder"):
        estimate(10, encoders=("clip",))


def _encoders_json(gpu: str) -> dict:
    """As benchmarks/encoders.py writes it with --device cuda (one row per model in `results`)."""
    row = {"device": "cuda", "dtype": "bfloat16", "batch_size": 64}
    return {"device": "cuda", "gpu": gpu, "dtype": "bfloat16", "results": [
        {**row, "model": "dinov2-small", "stage": "scene", "unit": "frames/s", "value": 1234.5},
        {**row, "model": "dinov2-base", "stage": "scene", "unit": "frames/s", "value": 400.0},
        {**row, "model": "vjepa2-vitl-fpc64-256", "stage": "video", "unit": "windows/s", "value": 20.0, "windows": 32},
        {**row, "model": "owlv2-base-patch16", "stage": "tools", "unit": "frames/s", "value": 33.0},
    ]}


@pytest.fixture
def results(tmp_path, monkeypatch):
    d = tmp_path / "results"
    d.mkdir()
    for name in ("throughput_cpu.json", "clustering_cpu.json", "encoders_cpu.json", "scale.json"):
        if (REPO_RESULTS / name).is_file():
            shutil.copy(REPO_RESULTS / name, d / name)
    monkeypatch.setattr(cost, "RESULTS", d)
    return d


def test_a_gpu_benchmark_file_makes_the_estimate_measured(results):
    before = estimate(100, "aws-g6.xlarge", 1, ("dinov2", "vjepa2", "owlv2"))
    assert all(before.sources[k].startswith("assumed") for k in cost.ASSUMED_GPU)  # a CPU result is no GPU measurement
    (results / "encoders_cuda.json").write_text(json.dumps(_encoders_json("NVIDIA L4")))
    e = estimate(100, "aws-g6.xlarge", 1, ("dinov2", "vjepa2", "owlv2"))
    assert all(e.sources[k].startswith("measured: encoders_cuda.json") for k in cost.ASSUMED_GPU), e.sources
    g = cost.gpu_rates("L4", {})
    assert g["dinov2_frames_per_s"] == 1234.5 and g["owlv2_frames_per_s"] == 33.0  # dinov2-small: the default model
    assert g["vjepa2_windows_per_s"] == 20.0
    # V-JEPA-2 embeds every 16-frame window of the 5 fps decode: 3600 / 3.2 = 1125 windows per footage hour.
    only = estimate(100, "aws-g6.xlarge", 1, ("vjepa2",))
    assert only.rates["gpu"] == pytest.approx(3600 / (1125 / 20.0)), only.rates  # footage hours per L4 hour
    # A result written before windows were the unit (segments/s, with windows_per_s beside it) still counts.
    old = _encoders_json("NVIDIA L4")
    old["results"][2] = {**old["results"][2], "unit": "segments/s", "value": 5.0, "windows_per_s": 20.0}
    (results / "encoders_cuda.json").write_text(json.dumps(old))
    assert cost.gpu_rates("L4", {})["vjepa2_windows_per_s"] == 20.0
    # The L4 file is not a measurement of an L40S, a T4 or an A100 80GB.
    assert cost.gpu_matches("L4", "NVIDIA L4") and not cost.gpu_matches("L4", "NVIDIA L40S")
    assert not cost.gpu_matches("A100-40GB", "NVIDIA A100-SXM4-80GB") and cost.gpu_matches("A100-40GB", "NVIDIA A100-SXM4-40GB")
    t4 = estimate(100, "aws-g4dn.xlarge", 1, ("dinov2",))
    assert t4.sources["dinov2_frames_per_s"].startswith("assumed")


def test_estimate_cli_list_without_hours_and_a_clear_error_without():
    from handclust.cli import cli

    r = CliRunner().invoke(cli, ["estimate", "--list"])
    assert r.exit_code == 0 and "aws-g6.xlarge" in r.output and "head" in r.output, r.output
    r = CliRunner().invoke(cli, ["estimate"])
    assert r.exit_code == 2 and "--hours" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["estimate", "--hours", "100", "--node", "aws-g6.xlarge", "--nodes", "2"])
    assert r.exit_code == 0 and "head" in r.output and "clustering" in r.output, r.output


@pytest.mark.slow
def test_dtype_auto_never_picks_bfloat16_without_it(monkeypatch):
    import torch

    from handclust.modalities.encoders.device import DeviceError, cuda_has_bf16, resolve_dtype

    assert not cuda_has_bf16((7, 5)) and not cuda_has_bf16((7, 0)) and cuda_has_bf16((8, 9)) and cuda_has_bf16((9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))  # a T4
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    assert resolve_dtype("auto", "cuda", "scene.dtype") == torch.float16
    with pytest.raises(DeviceError, match="scene.dtype=float16"):
        resolve_dtype("bfloat16", "cuda", "scene.dtype")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 9))  # an L4
    assert resolve_dtype("auto", "cuda", "scene.dtype") == torch.bfloat16
    assert resolve_dtype("auto", "cpu", "scene.dtype") == torch.float32


def _clip(path: Path, size: tuple[int, int], fps: int = 10) -> Path:
    import numpy as np

    from handclust.synthetic.footage_v1 import Mp4Writer

    path.parent.mkdir(parents=True, exist_ok=True)
    with Mp4Writer(path, fps, size) as out:
        for k in range(fps):
            out.write(np.full((size[1], size[0], 3), 20 * k, dtype=np.uint8))
    return path


def test_sampled_footage_scales_decode_cost_with_its_pixels_per_second(results, tmp_path):
    """Four times the pixels per second (same codec and rate): four times the decode core-hours, the rest
    of the CPU work unchanged; the estimate names the probed clips, and the CLI takes --sample."""
    from handclust.cli import cli

    small = _clip(tmp_path / "small" / "a.mp4", (320, 180))
    _clip(tmp_path / "big" / "b.mp4", (640, 360))
    (tmp_path / "big.txt").write_text(str(tmp_path / "big" / "b.mp4") + "\n")  # a manifest works too
    s_small = cost.probe_sample(tmp_path / "small")
    s_big = cost.probe_sample(tmp_path / "big.txt")
    assert [(c.width, c.height, c.codec) for c in s_big] == [(640, 360, "h264")] and s_small[0].path == str(small.resolve())
    base = estimate(100, "aws-g6.xlarge", 1, ())
    lo = estimate(100, "aws-g6.xlarge", 1, (), sample=s_small)
    hi = estimate(100, "aws-g6.xlarge", 1, (), sample=s_big)
    assert hi.decode_scale == pytest.approx(4 * lo.decode_scale) and hi.decode_core_hours == pytest.approx(4 * lo.decode_core_hours)
    assert base.decode_scale == 1.0 and lo.decode_scale < 1.0  # the benchmark's clip is 1280x720 at 30 fps
    assert lo.node_hours < hi.node_hours  # CPU-bound here: the bigger footage costs more
    assert "b.mp4 640x360 10 fps h264" in hi.sources["decode"] and hi.sample == [s_big[0].path]
    # A codec that costs more to decode per pixel costs more for the same size.
    hevc = [cost.SourceClip("x.mp4", 640, 360, 10.0, "hevc")]
    assert estimate(100, "aws-g6.xlarge", 1, (), sample=hevc).decode_core_hours > hi.decode_core_hours
    r = CliRunner().invoke(cli, ["estimate", "--hours", "100", "--encoders", "none", "--sample", str(tmp_path / "big")])
    assert r.exit_code == 0 and "probed 1 clips" in r.output and "b.mp4" in r.output, r.output
    r = CliRunner().invoke(cli, ["estimate", "--hours", "100", "--sample", str(tmp_path / "nowhere")])
    assert r.exit_code != 0 and "nowhere" in r.output and "Traceback" not in r.output


def test_gemini_price_table_never_undercounts_an_unknown_model():
    i, o, how = cost.gemini_price("gemini-2.5-flash")
    assert (i, o) == cost.GEMINI_USD_PER_MTOK["gemini-2.5-flash"] and cost.GEMINI_PRICES_CHECKED in how
    assert cost.gemini_price("gemini-9-ultra")[:2] == max(cost.GEMINI_USD_PER_MTOK.values(), key=lambda p: p[1])
    assert cost.gemini_price("gemini-2.5-flash", (1.0, 2.0))[:2] == (1.0, 2.0)
    assert cost.gemini_image_tokens(384, 216) == 258 and cost.gemini_image_tokens(1920, 1080) == 258 * 3 * 2


# ---------------------------------------------------------------------------------------------- cluster configs, overheads, advice

CONFIGS = Path(__file__).resolve().parent.parent / "cluster_configs"


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_every_node_type_of_the_shipped_configs_is_priced_cpu_workers_included(name):
    from handclust.cost import load_cluster

    c = load_cluster(CONFIGS / name)
    assert c.head == HEADS[c.provider]  # the head the config starts is the one priced
    assert {w.name for w in c.workers} == {"gpu_worker", "cpu_worker"}
    kinds = {w.name: w.node for w in c.workers}
    assert kinds["gpu_worker"].gpus == 1 and kinds["cpu_worker"].gpus == 0
    assert all(w.max_workers == 16 for w in c.workers) and c.max_workers == 32 and c.idle_timeout_min == 10


def test_a_config_that_is_not_a_launcher_config_gets_a_one_line_fix(tmp_path):
    from handclust.cost import load_cluster

    with pytest.raises(ValueError, match=r"kuberay-rayjob.yaml: not a Ray cluster-launcher config.*--node"):
        load_cluster(CONFIGS / "kuberay-rayjob.yaml")
    odd = tmp_path / "odd.yaml"
    odd.write_text((CONFIGS / "aws.yaml").read_text().replace("g6.4xlarge", "x9.huge"))
    with pytest.raises(ValueError, match=r"odd.yaml: node type gpu_worker is aws-x9.huge, which has no price"):
        load_cluster(odd)


def test_launch_waves_follow_rays_upscaling_limit():
    from handclust.cost import launch_waves

    # max(5, speed x running) per round: 5, 10, 20, 40 nodes after each round at speed 1
    assert [launch_waves(n) for n in (0, 1, 5, 6, 10, 11, 16, 20, 21)] == [0, 1, 1, 2, 2, 3, 3, 3, 4]
    assert launch_waves(16, upscaling_speed=100) == 1


def test_boot_pull_idle_and_post_processing_are_counted_and_called_assumed():
    from handclust.cost import Overheads

    oh = Overheads.assumed("aws", idle_min=10)
    bare = estimate(1000, "aws-g6.4xlarge", 8, ("dinov2", "vjepa2"), head=False)
    full = estimate(1000, "aws-g6.4xlarge", 8, ("dinov2", "vjepa2"), head=False, overheads=oh)
    setup_h = 2 * (oh.boot_min + oh.pull_min) / 60  # 8 workers: two launch waves
    assert full.setup_hours == pytest.approx(setup_h) and full.post_hours > oh.post_fixed_min / 60
    assert "measured" in full.sources["post"] and "scale.json" in full.sources["post"]  # the steps after clustering
    assert full.wall_hours == pytest.approx(bare.wall_hours + setup_h + full.post_hours)
    per_node = (oh.boot_min + oh.pull_min + oh.idle_min) / 60
    assert full.node_hours == pytest.approx(bare.node_hours + 8 * per_node + full.post_hours)
    for k in ("boot", "image_pull", "post"):
        assert full.sources[k].startswith("assumed")
    assert full.sources["idle"].startswith("given")
    assert "boot + image pull" in cost.render(full)


def _candidates(hours, cluster, encs):
    from handclust.cost import Overheads

    oh = Overheads.assumed(cluster.provider, cluster.idle_timeout_min, cluster.upscaling_speed)
    gpu = next(w for w in cluster.workers if w.node.gpus)
    return [estimate(hours, gpu.node, n, encs, head=cluster.head, overheads=oh) for n in range(1, gpu.max_workers + 1)]


def test_a_deadline_gets_the_cheapest_mix_that_meets_it_within_max_workers():
    from handclust.cost import load_cluster, recommend

    c = load_cluster(CONFIGS / "gcp.yaml")
    encs = ("dinov2", "vjepa2")
    r = recommend(10_000, c, encs, deadline_h=48)
    assert r.meets and r.best.wall_hours <= 48 and r.best.nodes <= 16 and r.best.node.gpus == 1
    ok = [e for e in _candidates(10_000, c, encs) if e.wall_hours <= 48]
    assert r.best.usd <= min(e.usd for e in ok) + 1e-6
    tight = recommend(10_000, c, encs, deadline_h=2)  # not possible on 16 GPUs: say so, show the fastest
    assert not tight.meets and "no mix" in tight.note and tight.best.nodes == 16
    assert tight.best.wall_hours == pytest.approx(min(e.wall_hours for e in _candidates(10_000, c, encs)))
    with pytest.raises(ValueError, match="exactly one"):
        recommend(10, c, encs)


def test_a_budget_gets_the_fastest_mix_within_it():
    from handclust.cost import load_cluster, recommend

    c = load_cluster(CONFIGS / "aws.yaml")
    encs = ("dinov2",)
    cheapest = min(_candidates(2000, c, encs), key=lambda e: e.usd)
    r = recommend(2000, c, encs, budget_usd=cheapest.usd * 1.5)
    assert r.meets and r.best.usd <= cheapest.usd * 1.5 and r.best.wall_hours <= cheapest.wall_hours
    broke = recommend(2000, c, encs, budget_usd=1.0)
    assert not broke.meets and "cheapest" in broke.note


def test_cpu_workers_are_recommended_where_cpu_work_limits_the_gpu_nodes(results):
    """With a GPU fast enough that the GPU node's 16 vCPUs (decode, flow, pose) are the bottleneck, the
    advice adds CPU workers; with no GPU encoder the CPU worker type alone is a candidate."""
    from handclust.cost import load_cluster, recommend

    (results / "encoders_cuda_l4.json").write_text(json.dumps(_encoders_json("NVIDIA L4")))
    c = load_cluster(CONFIGS / "aws.yaml")
    gpu_only = estimate(10_000, "aws-g6.4xlarge", 16, ("dinov2",))
    assert gpu_only.bottleneck == "cpu"
    r = recommend(10_000, c, ("dinov2",), deadline_h=gpu_only.wall_hours * 0.8)
    assert r.best.cpu_node is not None and r.best.cpu_node.name == "aws-c7i.8xlarge" and r.best.cpu_nodes >= 1
    assert r.best.nodes + r.best.cpu_nodes <= c.max_workers and r.best.cpu_node_hours > 0
    assert r.best.sources["dinov2_frames_per_s"].startswith("measured")
    plain = recommend(10_000, c, (), deadline_h=48)
    assert {plain.best.node.name, *(a.node.name for a in plain.alternatives)} == {"aws-g6.4xlarge", "aws-c7i.8xlarge"}


def test_estimate_cli_recommends_for_a_deadline_and_checks_max_workers():
    from handclust.cli import cli

    cfg = str(CONFIGS / "gcp.yaml")
    r = CliRunner().invoke(cli, ["estimate", "--hours", "10000", "--encoders", "dinov2,vjepa2", "--config", cfg, "--deadline-h", "48"])
    assert r.exit_code == 0, r.output
    assert "recommendation for 10,000 h" in r.output and "gcp-g2-standard-16" in r.output and "boot + image pull" in r.output
    assert "measured: benchmarks/results/throughput_cpu.json" in r.output or "assumed" in r.output
    assert "image_pull: assumed" in r.output and "dinov2_frames_per_s:" in r.output
    r = CliRunner().invoke(cli, ["estimate", "--hours", "10000", "--config", cfg, "--budget-usd", "500", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["goal"] == "budget $500"
    r = CliRunner().invoke(cli, ["estimate", "--hours", "100", "--config", cfg, "--nodes", "17"])
    assert r.exit_code != 0 and "max_workers 16" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["estimate", "--hours", "100", "--config", cfg, "--nodes", "4"])
    assert r.exit_code == 0 and "4 x gcp-g2-standard-16" in r.output and "boot + image pull" in r.output, r.output


def test_the_estimate_reads_the_packaged_rates_which_match_the_benchmarks():
    """The same command gives the same numbers installed from a wheel as from a checkout: the rates
    ship in handclust/rates, and they are the benchmarks' current results (rerun a benchmark: copy
    its JSON there too, or this fails)."""
    assert cost.RESULTS == cost.PACKAGED_RATES and cost.PACKAGED_RATES.parent == Path(cost.__file__).resolve().parent
    shipped = sorted(p.name for p in cost.PACKAGED_RATES.glob("*.json"))
    assert {"throughput_cpu.json", "clustering_cpu.json", "encoders_cpu.json", "efficientnet_cpu.json", "scale.json"} <= set(shipped)
    for name in shipped:
        assert (cost.PACKAGED_RATES / name).read_bytes() == (REPO_RESULTS / name).read_bytes(), (
            f"handclust/rates/{name} differs from benchmarks/results/{name}: copy the new measurement into the package")
    e = estimate(100, "aws-g6.xlarge", 1, ("dinov2",))
    assert "handclust/rates/throughput_cpu.json (packaged)" in e.sources["cpu"]


def test_the_clustering_time_comes_from_the_whole_step_measured_at_the_runs_widths(results):
    """10,000 h is 4.5M segments: the clustering step's time is scale.json's whole step (read, fuse,
    HDBSCAN, kNN, assignment) at the learned encoders' widths, grown at least linearly past the
    largest measured size, and labelled an upper bound; not the narrow fuse + HDBSCAN benchmark
    scaled linearly (17 min at 4.5M, when 100k segments at these widths took 11 min)."""
    runs = json.loads((results / "scale.json").read_text())["runs"]
    largest = max(runs["gpu"], key=lambda r: r["segments"])
    fastest = min(r["steps"]["clustering"]["s"] for r in runs["gpu"] if r["segments"] == largest["segments"])
    e = estimate(10_000, "aws-g6.4xlarge", 16, ("dinov2", "vjepa2"))
    assert e.segments == 4_500_000
    assert e.clustering_hours * 3600 >= fastest * 4_500_000 / largest["segments"] * 0.999
    assert "scale.json" in e.sources["clustering"] and "upper bound" in e.sources["clustering"]
    assert "gpu widths" in e.sources["clustering"]
    # The CPU defaults' narrower descriptors read their own rows, and cluster faster.
    cpu = estimate(10_000, "aws-g6.4xlarge", 16, ())
    assert "default widths" in cpu.sources["clustering"] and cpu.clustering_hours < e.clustering_hours
    # Without scale.json the narrow benchmark is still used, and says what it leaves out.
    (results / "scale.json").unlink()
    old = estimate(10_000, "aws-g6.4xlarge", 16, ("dinov2", "vjepa2"))
    assert "clustering_cpu.json" in old.sources["clustering"] and "narrow" in old.sources["clustering"]
