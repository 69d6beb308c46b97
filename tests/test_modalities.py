"""A modality added through the registry alone (handclust/modalities/registry.py; no other edit) reaches every
place a modality goes: config validation, the segments schema and table, the resume fingerprint,
the fusion (a weight in run.json) and the ablations. docs/ARCHITECTURE.md walks through this example."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from handclust import schema
from handclust.config import ConfigError, load_config
from handclust.modalities import registry as modalities
from handclust.modalities.descriptors import Description, SegmentFrames
from handclust.runtime.plan import descriptor_dims, feature_fingerprint


def describe_head_jerk(seg: SegmentFrames) -> Description:
    """How unsteadily the head moves: log mean and std of the change of head translation between
    measured frames (from the ego-motion columns the motion stage already writes)."""
    m = seg.measured
    if len(m) < 2:
        return Description(np.zeros(2), measured=False)
    step = np.hypot(np.diff(seg.frames["ego_tx"][m]), np.diff(seg.frames["ego_ty"][m]))
    return Description(np.log1p([step.mean(), step.std()]))


HEAD_JERK = modalities.Modality("head_jerk", describe_head_jerk, doc="log mean / std of the head's change of translation")
WITH_HEAD_JERK = ["cluster.modalities=[scene, motion, ego, rhythm, head_jerk]"]


@pytest.fixture
def head_jerk() -> Iterator[modalities.Modality]:
    with modalities.added(HEAD_JERK) as (m,):
        yield m


def test_registering_a_modality_makes_config_schema_and_fingerprint_know_it_until_it_is_removed():
    default = load_config()
    before = feature_fingerprint(default)
    with pytest.raises(ConfigError, match="unknown modality 'head_jerk'"):
        load_config(None, WITH_HEAD_JERK)
    with modalities.added(HEAD_JERK):
        cfg = load_config(None, WITH_HEAD_JERK)
        assert modalities.fusion_modalities(cfg)[:5] == ("scene", "motion", "ego", "rhythm", "head_jerk")
        assert schema.SEGMENTS.names[-4:] == ["desc_head_jerk", "hand_looked", "hand_detected", "hand_propagated"]
        assert descriptor_dims(cfg)["head_jerk"] == 2
        # Clips described without it must not be resumed as if they had it.
        assert feature_fingerprint(default) != before
        with pytest.raises(ValueError, match="already registered"):
            modalities.register(HEAD_JERK)
    assert "desc_head_jerk" not in schema.SEGMENTS.names
    assert feature_fingerprint(default) == before
    assert "head_jerk" not in {m.name for m in modalities.registered()}
    with pytest.raises(ConfigError, match="unknown modality"):
        load_config(None, WITH_HEAD_JERK)
    with pytest.raises(ValueError, match="built in"):
        modalities.unregister("pose")


@pytest.mark.slow
def test_a_modality_added_in_a_test_is_described_fused_and_ablated(footage_dir: Path, tmp_path: Path, head_jerk):
    from handclust import discover

    out = tmp_path / "run"
    discover(footage_dir, out=out, progress=False,
             overrides=["runner=local", "pose.enabled=false", "report.reel=false", *WITH_HEAD_JERK])

    # The descriptor column is in every clip's segments, as the function computes it from the stored frames.
    parts = sorted((out / "segments").glob("*.parquet"))
    assert parts
    for part in parts:
        assert "desc_head_jerk" in pq.read_schema(part).names
    seg = pq.read_table(parts[0])
    vec = schema.vectors(seg, "desc_head_jerk")
    assert vec.shape == (seg.num_rows, 2) and np.isfinite(vec).all() and vec.any()
    frames = pq.read_table(out / "frames" / parts[0].name).to_pydict()
    frames = {k: np.asarray(frames[k], np.float64) for k in ("frame_idx", "ego_tx", "ego_ty", "flow_mag_mean")}
    cfg = load_config(None, WITH_HEAD_JERK)
    for i in (0, seg.num_rows - 1):
        a, b = np.searchsorted(frames["frame_idx"], [seg.column("frame_start")[i].as_py(), seg.column("frame_end")[i].as_py()])
        want = describe_head_jerk(SegmentFrames(frames, int(a), int(b), cfg.decode.sample_fps, cfg.descriptor)).vector
        np.testing.assert_allclose(vec[i], want, rtol=1e-5)

    # It was fused, with a weight of its own, and evaluated on its own.
    run = json.loads((out / "run.json").read_text())
    weights = run["clustering"]["fusion_weights"]
    assert set(weights) == {"scene", "motion", "ego", "rhythm", "head_jerk"}
    assert weights["head_jerk"] >= 0
    ev = json.loads((out / "eval.json").read_text())
    rows = {a["name"]: a for a in ev["ablations"]}
    assert rows["head_jerk only"]["modalities"] == ["head_jerk"]
    assert "head_jerk" in rows["fusion (this run)"]["modalities"]
    variants = set(pq.read_table(out / "ablations.parquet").column("variant").to_pylist())
    assert "head_jerk only" in variants
