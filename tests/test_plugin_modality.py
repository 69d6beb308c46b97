"""A learned modality is one plugin: the toy modality below (its own torch encoder stage writing a frame
column, its config section, its descriptor, its install, model check and cost key) lives in this file only
and is registered with one call (handclust/modalities/registry.py, ``modalities.register`` / ``added``).
From that call on, config, the frames and segments schemas, the install check, the model check, the
fusion, the ablations and the cost estimate know it, and a run with the local runner computes it;
docs/ARCHITECTURE.md, "How to add a modality", walks through this file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq
import pytest
from pydantic import Field

from handclust import schema
from handclust.config import ConfigError, EncoderSection, RunConfig, load_config
from handclust.modalities import registry as modalities
from handclust.modalities.descriptors import Description, SegmentFrames
from handclust.modalities.encoders.base import EncoderStage
from handclust.stages import Batch

# --------------------------------------------------------------------------- the plugin: everything it is


class ToyConfig(EncoderSection):
    """Toy learned modality: a fixed random 8x8 convolution per frame, mean-pooled over the image."""

    width: int = Field(8, ge=1, le=64, description="channels of the convolution: the width of toy_emb and desc_toy")
    seed: int = Field(0, description="draws the convolution's weights")


class ToyEncoder(EncoderStage):
    """Frame stage. Batch in: ``frame`` ``(n, H, W, 3)`` uint8. Batch out: adds ``toy_emb`` ``(n, width)`` float32."""

    name = "toy"
    section = "toy"

    def __init__(self, cfg: ToyConfig, sample_fps: float):
        super().__init__(cfg, cfg.batch_size)
        self.dim = cfg.width

    def load(self) -> Any:
        import torch

        g = torch.Generator().manual_seed(self.cfg.seed)
        return torch.randn(self.dim, 3, 8, 8, generator=g).to(self.device, self.dtype)

    def forward(self, frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device, self.dtype).permute(0, 3, 1, 2) / 255
        with torch.inference_mode():
            y = torch.relu(torch.nn.functional.conv2d(x, self.model, stride=8)).mean(dim=(2, 3))
        return y.float().cpu().numpy()

    def __call__(self, batch: Batch) -> Batch:
        return {**batch, "toy_emb": self.run_batches(batch["frame"], self.dim)}


def toy_stage(cfg: RunConfig) -> ToyEncoder:
    return ToyEncoder(cfg.toy, cfg.decode.sample_fps)  # type: ignore[attr-defined]  (a section added at registration)


def describe_toy(seg: SegmentFrames) -> Description | None:
    """``desc_toy``: the unit-length mean of the segment's ``toy_emb`` rows; None when the stage did not run."""
    v = seg.frames.get("toy_emb")
    if v is None or not np.shape(v)[-1]:
        return None
    mean = np.asarray(v[seg.a:seg.b], np.float64).mean(axis=0)
    return Description(mean / max(float(np.linalg.norm(mean)), 1e-9))


TOY = modalities.Modality(
    "toy", describe_toy, config=ToyConfig, frame_stage=toy_stage,
    frame_columns={"toy_emb": modalities.FrameColumn(lambda cfg: cfg.toy.width)},
    extras=modalities.Extra(("torch",), "encoders"), check=modalities.stage_check(toy_stage), cost="toy_cnn",
    doc="mean of a fixed random convolution's pooled channels, unit length")

# --------------------------------------------------------------------------- the tests

ON = ["toy.enabled=true"]


@pytest.fixture
def toy() -> Iterator[modalities.Modality]:
    with modalities.added(TOY) as (m,):
        yield m


def test_registering_a_learned_modality_adds_its_config_section_columns_and_install_until_it_is_removed():
    from handclust.extras import MissingExtraError, check_install
    from handclust.runtime.plan import descriptor_dims, feature_fingerprint

    default = load_config()
    before = feature_fingerprint(default)
    with pytest.raises(ConfigError, match="unknown config key 'toy'"):
        load_config(None, ON)
    with modalities.added(TOY):
        cfg = load_config(None, [*ON, "toy.width=5"])
        assert cfg.toy.width == 5 and cfg.toy.enabled  # type: ignore[attr-defined]
        assert "toy" in modalities.fusion_modalities(cfg)  # enabled with fuse: fused, as video and tools are
        with pytest.raises(ConfigError, match="toy.width"):
            load_config(None, ["toy.width=0"])
        assert schema.FRAMES.field("toy_emb").type == schema.VECTOR
        assert schema.SEGMENTS.names.index("desc_toy") > schema.SEGMENTS.names.index("desc_pose")
        assert descriptor_dims(cfg)["toy"] == 5
        assert "toy" not in descriptor_dims(default)  # off by default
        assert feature_fingerprint(cfg) != before and feature_fingerprint(default) == before
        assert "toy_emb" in schema.OPTIONAL_VECTORS  # written empty when the modality is off
        # Its install is checked before any clip: a plugin naming a package that is not there stops the run at once.
        missing = modalities.Modality("toy_missing", describe_toy, section="toy", cost="toy_cnn",
                                      extras=modalities.Extra(("handclust_toy_no_such_module",), "toy"))
        with modalities.added(missing):
            with pytest.raises(MissingExtraError, match=r"toy.enabled=true needs handclust_toy_no_such_module.*handclust\[toy\]"):
                check_install(cfg)
            check_install(default)  # off: not needed
        with pytest.raises(ValueError, match="already written by modality 'toy'"):
            modalities.register(modalities.Modality("toy2", describe_toy, frame_columns={"toy_emb": modalities.FrameColumn(3)}))
    assert "toy" not in RunConfig.model_fields and "toy_emb" not in schema.FRAMES.names
    assert "desc_toy" not in schema.SEGMENTS.names and feature_fingerprint(default) == before
    with pytest.raises(ConfigError, match="unknown config key 'toy'"):
        load_config(None, ON)


def test_the_estimate_names_a_registered_modalitys_cost_key(toy):
    from click.testing import CliRunner

    from handclust.cli import cli
    from handclust.cost import estimate

    r = CliRunner().invoke(cli, ["estimate", "--hours", "10", "--encoders", "dinov2,toy_cnn"])
    assert r.exit_code == 0, r.output
    assert "encoders: dinov2, toy_cnn" in r.output and "toy_cnn: not counted: no rate for toy_cnn" in r.output
    # Counted once a rate for it is known: it then costs GPU time beside DINOv2.
    from handclust import cost

    alone = estimate(10, "aws-g6.xlarge", encoders=("dinov2",))
    cost.ASSUMED_GPU["toy_cnn_frames_per_s"] = {"L4": 100.0}
    try:
        both = estimate(10, "aws-g6.xlarge", encoders=("dinov2", "toy_cnn"))
    finally:
        del cost.ASSUMED_GPU["toy_cnn_frames_per_s"]
    assert both.rates["gpu"] < alone.rates["gpu"] and "toy_cnn_frames_per_s" in both.sources


@pytest.mark.slow
def test_a_learned_modality_in_one_file_runs_end_to_end(footage_dir: Path, tmp_path: Path, toy):
    from handclust import discover

    out = tmp_path / "run"
    discover(footage_dir, out=out, progress=False,
             overrides=["runner=local", "scene.encoder=histogram", "pose.enabled=false", "report.reel=false", *ON])

    # Its frame column is in every clip's frames table, as its stage computed it; its descriptor in every segments table.
    parts = sorted((out / "frames").glob("*.parquet"))
    assert parts and len(parts) == len(list((out / "segments").glob("*.parquet")))
    frames = pq.read_table(parts[0])
    emb = schema.vectors(frames, "toy_emb")
    assert emb.shape == (frames.num_rows, 8) and np.isfinite(emb).all() and emb.std(axis=0).max() > 0
    seg = pq.read_table(out / "segments" / parts[0].name)
    desc = schema.vectors(seg, "desc_toy")
    assert desc.shape == (seg.num_rows, 8)
    cfg = load_config(None, ON)
    fi = np.asarray(frames.column("frame_idx"))
    for i in (0, seg.num_rows - 1):
        a, b = np.searchsorted(fi, [seg.column("frame_start")[i].as_py(), seg.column("frame_end")[i].as_py()])
        want = describe_toy(SegmentFrames({"toy_emb": emb}, int(a), int(b), cfg.decode.sample_fps, cfg.descriptor))
        assert want is not None
        np.testing.assert_allclose(desc[i], want.vector, rtol=1e-5)
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["toy"]["enabled"] is True
    assert run["encoders"]["toy"]["encoder"] == "toy" and run["encoders"]["toy"]["device"] == "cpu"
    assert "model_check" in run["timings"]
    # Fused with a weight of its own, evaluated on its own, and counted in the run's cost by its key.
    weights = run["clustering"]["fusion_weights"]
    assert set(weights) == {"scene", "motion", "ego", "rhythm", "toy"} and weights["toy"] >= 0
    ev = json.loads((out / "eval.json").read_text())
    rows = {a["name"]: a for a in ev["ablations"]}
    assert rows["toy only"]["modalities"] == ["toy"] and "toy" in rows["fusion (this run)"]["modalities"]
    assert "toy only" in set(pq.read_table(out / "ablations.parquet").column("variant").to_pylist())
    assert "toy_cnn" in run["cost"]["estimated"]["sources"]
