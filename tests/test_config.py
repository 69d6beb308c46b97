from pathlib import Path

import pytest

from handclust.config import ConfigError, load_config, with_overrides


def test_defaults_are_valid():
    cfg = load_config()
    assert cfg.decode.sample_fps == 5.0
    assert cfg.cluster.min_cluster_size is None  # chosen from the data


def test_yaml_file_then_overrides_win(tmp_path: Path):
    p = tmp_path / "c.yaml"
    p.write_text("segment:\n  min_segment_s: 4\ncluster:\n  knn_k: 7\n")
    cfg = load_config(p, ["segment.min_segment_s=5", "cluster.modalities=[scene, motion]"])
    assert cfg.segment.min_segment_s == 5
    assert cfg.cluster.knn_k == 7
    assert cfg.cluster.modalities == ("scene", "motion")


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("segment.min_segmnt_s=3", "segment.min_segmnt_s"),
        ("decode.sample_fps=-1", "decode.sample_fps"),
        ("cluster.modalities=[scene, smell]", "cluster.modalities"),
        ("segment.max_segment_s=1", "max_segment_s"),
        ("novalue", "key=value"),
    ],
)
def test_bad_key_or_value_names_it(override: str, needle: str):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(None, [override])


def test_bad_yaml_file_is_named(tmp_path: Path):
    p = tmp_path / "bad.yaml"
    p.write_text("segment: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_config_is_frozen_and_overridable():
    cfg = load_config()
    with pytest.raises(Exception):
        cfg.decode.sample_fps = 3  # type: ignore[misc]
    assert with_overrides(cfg, ["decode.sample_fps=3"]).decode.sample_fps == 3


def test_a_typo_in_ray_concurrency_stops_the_run_naming_the_stages(short_clip: Path, tmp_path: Path):
    """Before, an unknown stage name was ignored: that stage ran as one actor for the whole cluster."""
    from click.testing import CliRunner

    from handclust.cli import cli

    r = CliRunner().invoke(cli, ["run", str(short_clip.parent), "--out", str(tmp_path / "out"), "--no-progress",
                                 "--set", "runner=ray", "--set", "ray.concurrency={sceen: 2}"])
    assert r.exit_code == 2
    assert "'sceen'" in r.output and "the stages of this run are scene, motion" in r.output
    assert "Traceback" not in r.output


def test_ray_concurrency_for_a_stage_switched_off_is_accepted(tmp_path: Path):
    """A shared job config sizes the pose pool; a run with pose off must still start."""
    from handclust.config import RunConfig
    from handclust.io.storage import OutputStore
    from handclust.progress import Progress
    from handclust.runtime.ray_runner import RayRunner

    cfg = with_overrides(RunConfig(), ["runner=ray", "pose.enabled=false", "ray.concurrency={pose: 4, scene: 2}"])
    runner = RayRunner(cfg, OutputStore(tmp_path / "out"), Progress(enabled=False))
    assert [s.name for s in runner.stages] == ["scene", "motion"]
