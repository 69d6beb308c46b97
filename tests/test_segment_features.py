"""segment-features input: the nested layout of the action segmentation releases, and feature /
label mismatches that must be a clear error rather than a crash further down."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from handclust.cli import cli
from handclust.segment_features import FeatureDirError, load_feature_dir, read_mapping


def _labels(path: Path, labels: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(labels) + "\n")


def _nested(root: Path, rng: np.random.Generator) -> None:
    """Two tasks sharing a video name, labels with and without .txt, flat and per-task."""
    (root / "features" / "coffee").mkdir(parents=True)
    (root / "features" / "tea").mkdir(parents=True)
    np.savetxt(root / "features" / "coffee" / "P01.txt", rng.normal(size=(30, 8)), fmt="%.4f")  # frames x dims
    np.save(root / "features" / "tea" / "P01.npy", rng.normal(size=(8, 20)).astype(np.float32))  # dims x frames
    np.save(root / "features" / "tea" / "P02.npy", rng.normal(size=(25, 8)).astype(np.float32))
    _labels(root / "groundTruth" / "coffee" / "P01.txt", ["SIL"] * 10 + ["pour_coffee"] * 20)
    _labels(root / "groundTruth" / "tea" / "P01", ["SIL"] * 5 + ["add_teabag"] * 15)  # no .txt
    _labels(root / "groundTruth" / "P02", ["add_teabag"] * 25)  # not under its task
    (root / "mapping").mkdir()
    (root / "mapping" / "mapping.txt").write_text("0 SIL\n1 pour_coffee\n2 add_teabag\n")


def test_nested_layout_is_read_with_unique_names_and_tasks(tmp_path: Path, rng: np.random.Generator):
    _nested(tmp_path, rng)
    videos = {v.name: v for v in load_feature_dir(tmp_path)}
    assert set(videos) == {"coffee_P01", "tea_P01", "P02"}  # the shared name gets its task in front
    assert {n: v.task for n, v in videos.items()} == {"coffee_P01": "coffee", "tea_P01": "tea", "P02": "tea"}
    assert videos["coffee_P01"].features.shape == (30, 8) and videos["tea_P01"].features.shape == (20, 8)
    assert videos["tea_P01"].truth == ["SIL"] * 5 + ["add_teabag"] * 15
    assert videos["P02"].truth == ["add_teabag"] * 25
    assert read_mapping(tmp_path) == {"SIL": 0, "pour_coffee": 1, "add_teabag": 2}


def test_nested_layout_runs_end_to_end(tmp_path: Path, rng: np.random.Generator):
    _nested(tmp_path / "data", rng)
    r = CliRunner().invoke(cli, ["segment-features", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--fps", "5", "--k", "2"])
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "out" / "tea_P01.txt").read_text().split()) == 20
    ev = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert ev["tasks"] == ["coffee", "tea"] and ev["mapping"]["pour_coffee"] == 1
    assert set(ev["ground_truth"]) >= {"per_video", "whole_set", "ari", "nmi", "videos"}
    # the settings that ran are recorded: the segment-features defaults, not the footage ones
    assert ev["config"]["segment"]["place"] == "change" and ev["config"]["segment"]["max_segment_s"] == 4
    assert ev["config"]["cluster"]["merge_single_clip"] is True


def test_a_frame_or_two_of_mismatch_is_trimmed_with_a_note(tmp_path: Path, rng: np.random.Generator,
                                                           caplog: pytest.LogCaptureFixture):
    (tmp_path / "features").mkdir()
    np.save(tmp_path / "features" / "v.npy", rng.normal(size=(52, 16)).astype(np.float32))
    _labels(tmp_path / "groundTruth" / "v.txt", ["a"] * 50)
    with caplog.at_level(logging.INFO, logger="handclust.segment_features"):
        (v,) = load_feature_dir(tmp_path)
    assert v.features.shape == (50, 16) and len(v.truth or []) == 50
    assert "52 feature frames but 50 labels" in caplog.text


def _rows_per_frame(root: Path, rng: np.random.Generator) -> Path:
    """The shape of the crash in issue 9: 917 frames of 64-d features stored one row per frame."""
    (root / "features").mkdir(parents=True)
    path = root / "features" / "P03_cereals.npy"
    np.save(path, rng.normal(size=(917, 64)).astype(np.float32))
    _labels(root / "groundTruth" / "P03_cereals", ["SIL"] * 400 + ["pour_cereals"] * 517)
    return path


def test_wrong_layout_is_an_error_naming_both_shapes_and_the_fix(tmp_path: Path, rng: np.random.Generator):
    path = _rows_per_frame(tmp_path, rng)
    with pytest.raises(FeatureDirError) as err:
        load_feature_dir(tmp_path, layout="features-first")
    msg = str(err.value)
    assert str(path) in msg and "(917, 64)" in msg and "64 frames" in msg and "917 labels" in msg
    assert "--layout frames-first" in msg
    assert len(load_feature_dir(tmp_path, layout="auto")[0].features) == 917  # auto reads it right


def test_labels_matching_neither_axis_are_an_error(tmp_path: Path, rng: np.random.Generator):
    (tmp_path / "features").mkdir()
    np.save(tmp_path / "features" / "v.npy", rng.normal(size=(300, 64)).astype(np.float32))
    _labels(tmp_path / "groundTruth" / "v.txt", ["a"] * 150)  # e.g. labels at half the feature rate
    with pytest.raises(FeatureDirError, match=r"\(300, 64\).*150 labels.*frame rate"):
        load_feature_dir(tmp_path)


def test_cli_prints_the_mismatch_as_one_line_and_exits_2(tmp_path: Path, rng: np.random.Generator):
    _rows_per_frame(tmp_path / "data", rng)
    r = CliRunner().invoke(cli, ["segment-features", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                                 "--fps", "15", "--layout", "features-first"])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--layout frames-first" in lines[0]
    assert isinstance(r.exception, SystemExit)  # handled, not a traceback


def test_clusters_are_shared_across_videos_by_default(tmp_path: Path):
    """A scripted task: each action is in most videos, so a cluster inside one video (a person's
    own way of doing a shared action) joins its shared cluster; without that, one matching over
    all videos scores lower though each video on its own looks as good (synthetic seed 5)."""
    from handclust.config import load_config
    from handclust.segment_features import FEATURE_DEFAULTS, segment_features
    from handclust.synthetic.features import make_feature_set

    d = make_feature_set(tmp_path / "set", n_videos=5, seed=5)
    on = segment_features(d, tmp_path / "on", 15.0)
    off = segment_features(d, tmp_path / "off", 15.0,
                           load_config(None, [*FEATURE_DEFAULTS, "cluster.merge_single_clip=false"]))
    assert "joined the cluster their nearest segments in other clips vote for" in on["clustering"]
    assert on["k"] < off["k"]
    assert on["ground_truth"]["whole_set"]["mof"] >= off["ground_truth"]["whole_set"]["mof"] + 0.08
    assert json.loads((tmp_path / "on" / "eval.json").read_text())["k"] == on["k"]


def test_features_given_as_principal_components_keep_their_geometry(tmp_path: Path):
    """The literature's features are principal components (64-d reduced Fisher vectors): most of
    the variance in the first dims, noise in the rest. Standardising each column lifts the noise
    dims to the weight of the signal ones; the default scales the features as a whole. Measured on
    synthetic seeds 0-2 in principal components: per-video MoF 0.93-0.96 scaled as a whole,
    0.50-0.54 column by column."""
    from handclust.config import load_config
    from handclust.segment_features import FEATURE_DEFAULTS, segment_features
    from handclust.synthetic.features import make_feature_set

    d = make_feature_set(tmp_path / "set", n_videos=5, seed=3, principal_components=True)
    whole = segment_features(d, tmp_path / "whole", 15.0)
    columns = segment_features(d, tmp_path / "columns", 15.0,
                               load_config(None, [*FEATURE_DEFAULTS, "cluster.scaling.features=columns"]))
    assert "scaled as a whole" in whole["fusion"]["features"]["why"]
    assert "scaled as a whole" not in columns["fusion"]["features"]["why"]
    assert whole["ground_truth"]["per_video"]["mof"] >= 0.85
    assert whole["ground_truth"]["per_video"]["mof"] >= columns["ground_truth"]["per_video"]["mof"] + 0.2


def test_scaling_of_an_unknown_modality_is_a_config_error():
    from handclust.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="scaling names unknown modality 'scnee'"):
        load_config(None, ["cluster.scaling.scnee=whole"])
    with pytest.raises(ConfigError, match="scaling"):
        load_config(None, ["cluster.scaling.scene=columnz"])
    assert load_config(None, ["cluster.scaling.scene=whole"]).cluster.scaling == {"scene": "whole"}


def _ordered_or_shuffled(root: Path, rng: np.random.Generator, ordered: bool, n_videos: int = 5) -> None:
    """Five videos of four actions: in one fixed order (a scripted task) or in each video's own order."""
    actions = {a: rng.normal(0, 1, 16) for a in ("take", "pour", "stir", "drink")}
    (root / "features").mkdir(parents=True)
    for v in range(n_videos):
        order = list(actions) if ordered else rng.permutation(list(actions)).tolist()
        labels = [a for a in order for _ in range(int(rng.integers(90, 150)))]
        x = np.stack([actions[a] for a in labels]) + rng.normal(0, 0.5, (len(labels), 16))
        np.save(root / "features" / f"v{v}.npy", x.astype(np.float32))
        _labels(root / "groundTruth" / f"v{v}.txt", labels)


@pytest.mark.parametrize("ordered", [True, False])
def test_relative_time_joins_only_when_the_videos_keep_an_order(tmp_path: Path, ordered: bool):
    """Time at a fixed weight split an action by when it happened in videos of no typical order;
    by default it joins only when the activities found without it keep their place."""
    from handclust.segment_features import segment_features

    _ordered_or_shuffled(tmp_path / "set", np.random.default_rng(3), ordered)
    ev = segment_features(tmp_path / "set", tmp_path / "out", 15.0)
    assert ("time joins at weight 0.1" in ev["time"]) == ordered, ev["time"]
    assert ev["time_weight"] == (0.1 if ordered else 0.0)
    assert ev["ground_truth"]["per_video"]["mof"] > 0.85


def test_k_above_the_number_of_segments_is_said_not_a_traceback(tmp_path: Path):
    """A real desktop-assembly video has 22 actions in 17 segments: --k 23 must not crash."""
    rng = np.random.default_rng(4)
    (tmp_path / "set" / "features").mkdir(parents=True)
    np.save(tmp_path / "set" / "features" / "v0.npy", rng.normal(size=(120, 8)).astype(np.float32))
    r = CliRunner().invoke(cli, ["segment-features", str(tmp_path / "set"), "--out", str(tmp_path / "out"), "--fps", "15",
                                 "--k", "500"])
    assert r.exit_code == 0, r.output
    ev = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert ev["k"] <= ev["segments"] and "asked for more clusters than the" in ev["clustering"]


def _two_places(root: Path, rng: np.random.Generator, offset_sd: float = 3.0, filed: bool = False) -> None:
    """Six videos: three filmed in each of two places (a place offset ``offset_sd``, by default much
    larger than a person's style); each place has its own three actions, in its own order per video.
    ``filed``: each place's videos under features/<place>/."""
    for place in ("yard", "deck"):
        folder = root / "features" / (place if filed else "")
        folder.mkdir(parents=True, exist_ok=True)
        offset = rng.normal(0, offset_sd, 16)
        actions = {f"{place}_{a}": rng.normal(0, 1, 16) for a in ("a", "b", "c")}
        for v in range(3):
            order = rng.permutation(list(actions)).tolist()
            labels = [a for a in order for _ in range(int(rng.integers(60, 90)))]
            x = offset + rng.normal(0, 0.3, 16) + np.stack([actions[a] for a in labels]) + rng.normal(0, 0.4, (len(labels), 16))
            np.save(folder / f"{place}{v}.npy", x.astype(np.float32))
            _labels(root / "groundTruth" / f"{place}{v}.txt", labels)


def test_videos_of_two_places_are_clustered_one_place_at_a_time(tmp_path: Path):
    """Videos whose means part clearly (two places) are clustered one group at a time: eval.json
    lists the groups, no activity spans both, and the CLI says so; --no-split-groups clusters
    them all together."""
    _two_places(tmp_path / "set", np.random.default_rng(7))
    r = CliRunner().invoke(cli, ["segment-features", str(tmp_path / "set"), "--out", str(tmp_path / "out"), "--fps", "15"])
    assert r.exit_code == 0, r.output
    assert "2 groups of videos clustered apart" in r.output
    ev = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert ev["video_groups"] == [["deck0", "deck1", "deck2"], ["yard0", "yard1", "yard2"]]
    labels = {v: set((tmp_path / "out" / f"{v}.txt").read_text().split()) for g in ev["video_groups"] for v in g}
    deck = set().union(*(labels[v] for v in ev["video_groups"][0]))
    yard = set().union(*(labels[v] for v in ev["video_groups"][1]))
    assert deck and yard and not deck & yard
    assert ev["ground_truth"]["per_video"]["mof"] > 0.85
    r = CliRunner().invoke(cli, ["segment-features", str(tmp_path / "set"), "--out", str(tmp_path / "together"), "--fps", "15",
                                 "--no-split-groups"])
    assert r.exit_code == 0, r.output
    assert len(json.loads((tmp_path / "together" / "eval.json").read_text())["video_groups"]) == 1


def _same_work_two_places(root: Path, rng: np.random.Generator, offset_sd: float, filed: dict[str, str] | None) -> None:
    """Eight videos of one task's four actions, four filmed in each of two places whose offset
    (``offset_sd``) is small; ``filed``: video -> the features/ subfolder it is filed in."""
    actions = {a: rng.normal(0, 1, 16) for a in "abcd"}
    offsets = {p: rng.normal(0, offset_sd, 16) for p in ("yard", "deck")}
    for place in ("yard", "deck"):
        for v in range(4):
            name = f"{place}{v}"
            folder = root / "features" / (filed[name] if filed else "")
            folder.mkdir(parents=True, exist_ok=True)
            labels = [a for a in rng.permutation(list(actions)).tolist() for _ in range(int(rng.integers(60, 90)))]
            x = (offsets[place] + rng.normal(0, 0.2, 16) + np.stack([actions[a] for a in labels])
                 + rng.normal(0, 0.4, (len(labels), 16)))
            np.save(folder / f"{name}.npy", x.astype(np.float32))
            _labels(root / "groundTruth" / f"{name}.txt", labels)


def test_videos_filed_by_place_part_as_filed_and_never_by_a_random_filing(tmp_path: Path):
    """Videos filed in a folder per place (features/<place>/) are tried as filed first and part as
    filed; the same videos filed into two folders at random are not parted by their folders (the
    search may still find the places, never the random folders)."""
    from handclust.segment_features import segment_features

    names = [f"{p}{v}" for p in ("yard", "deck") for v in range(4)]
    layouts = {"by place": {n: n[:4] for n in names},
               "at random": dict(zip(names, ["a", "b", "b", "a", "b", "a", "a", "b"], strict=True))}
    ev = {}
    for name, filed in layouts.items():
        _same_work_two_places(tmp_path / name, np.random.default_rng(12), 0.2, filed)
        ev[name] = segment_features(tmp_path / name, tmp_path / f"out-{name}", 15.0)
    assert ev["by place"]["video_groups"] == [["deck0", "deck1", "deck2", "deck3"], ["yard0", "yard1", "yard2", "yard3"]]
    assert "their folders part them (deck: 4, yard: 4 videos" in ev["by place"]["video_groups_reason"]
    assert "their folders (a: 4, b: 4 videos) do not part them" in ev["at random"]["video_groups_reason"]
    for group in ev["at random"]["video_groups"]:
        assert len({v[:4] for v in group}) == 1 or len(ev["at random"]["video_groups"]) == 1


def test_one_task_filmed_by_several_people_stays_one_group(tmp_path: Path):
    """Per-person style alone (each video's own offset, all about equally far apart) is not a group,
    with enough videos (8) that two parts of 3 or more could form."""
    from handclust.segment_features import segment_features

    _ordered_or_shuffled(tmp_path / "set", np.random.default_rng(3), True, n_videos=8)
    for f in (tmp_path / "set" / "features").glob("*.npy"):
        x = np.load(f)
        np.save(f, (x + np.random.default_rng(len(f.name) + int(f.stem[1:])).normal(0, 1, x.shape[1])).astype(np.float32))
    ev = segment_features(tmp_path / "set", tmp_path / "out", 15.0)
    assert len(ev["video_groups"]) == 1 and len(ev["video_groups"][0]) == 8


def test_k_near_the_number_of_segments_keeps_its_activities(tmp_path: Path):
    """A real desktop-assembly video holds 23 actions of about 2 s in 50 s: with --k 23 the temporal
    model (bouts of 60 s, votes from 10 neighbours) left 2 of them. The bout prior starts at most at
    the video's length over k, and the votes come from about one cluster's worth of neighbours."""
    rng = np.random.default_rng(11)
    (tmp_path / "set" / "features").mkdir(parents=True)
    protos = rng.normal(0, 3, (8, 16))
    labels = [a for a in range(8) for _ in range(60)]  # eight actions of 4 s each, once
    x = protos[labels] + rng.normal(0, 0.3, (len(labels), 16))
    np.save(tmp_path / "set" / "features" / "v0.npy", x.astype(np.float32))
    _labels(tmp_path / "set" / "groundTruth" / "v0.txt", [str(a) for a in labels])
    r = CliRunner().invoke(cli, ["segment-features", str(tmp_path / "set"), "--out", str(tmp_path / "out"), "--fps", "15",
                                 "--k", "8"])
    assert r.exit_code == 0, r.output
    found = set((tmp_path / "out" / "v0.txt").read_text().split())
    assert len(found) >= 4, found  # 1 before
    ev = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert ev["ground_truth"]["per_video"]["mof"] > 0.5, ev["ground_truth"]["per_video"]  # 0.125 before


def test_units_of_few_frames_get_neighbours_and_units_of_many_get_none():
    from handclust.segment_features import context_units

    assert context_units(np.array([1, 2, 2, 1, 2]), 4) == 1  # a frame every 2 s: units of 1-2 frames
    assert context_units(np.array([1, 1, 1]), 4) == 2
    assert context_units(np.array([15, 30, 60]), 4) == 0  # 15 fps features: nothing changes
    assert context_units(np.array([1, 2]), 0) == 0  # off


def test_each_unit_is_clustered_beside_its_neighbours_in_its_own_video_only():
    from handclust.segment_features import with_context

    # Two videos of three units each, one dim: 0, 3, 6 and 100, 200, 300.
    desc = np.array([[0.0], [3.0], [6.0], [100.0], [200.0], [300.0]])
    video = np.array([0, 0, 0, 1, 1, 1])
    out = with_context(desc, video, 1)
    assert out.shape == (6, 2)
    np.testing.assert_allclose(out[:, 0], desc[:, 0])  # the unit's own mean is kept
    # Windows of one unit each side, cut at each video's ends, never reaching into the other video.
    np.testing.assert_allclose(out[:, 1], [1.5, 3.0, 4.5, 150.0, 200.0, 250.0])
    assert with_context(desc, video, 0).shape == (6, 1)  # 0: the unit's own mean only


def test_the_neighbour_context_is_recorded_with_the_settings_that_ran(tmp_path: Path):
    from handclust.synthetic.features import make_feature_set

    root = make_feature_set(tmp_path / "set", n_videos=3, seed=0)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["segment-features", str(root), "--out", str(out), "--fps", "15"])
    assert res.exit_code == 0, res.output
    ev = json.loads((out / "eval.json").read_text())
    assert ev["config"]["segment"]["context_frames"] == 4
