"""The modality registry: every per-segment descriptor HandClust computes, fuses and ablates, in one place.

A modality is one :class:`Modality` entry: its name, the function that describes a segment
(:mod:`handclust.modalities.descriptors`), the frame or segment stage that makes the columns it reads, the
config section that switches it, whether it is sparse, and how evaluation and the report name
it. Config validation, the stage plan (:mod:`handclust.runtime.plan`), the segments schema, the segment
describer, fusion inputs, ablations and activity profiles iterate over :func:`registered`;
none of them lists modalities by hand. docs/ARCHITECTURE.md, "How to add a modality", walks
through adding one; ``tests/test_modalities.py`` adds one in a test through :func:`registered` alone.

The registry sits above the config and the pure cores (its entries hold their functions), so
:mod:`handclust.config` and :mod:`handclust.schema` cannot import it. They keep two plain tables
that only this module writes, :data:`handclust.config.MODALITY_SECTIONS` and
:data:`handclust.schema.MODALITY_COLUMNS` / :data:`~handclust.schema.OBSERVED_INDEX`, and
``handclust/__init__`` imports this module, so every process that imports handclust has them
filled before any config is validated.

A modality registered at run time (not in :data:`BUILTIN`) lives in the process that registered
it: the local runner sees it; Ray workers compute its descriptor (the segment describer carries
its function), but a clustering task on a worker does not know a sparse one's ``observed_index``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from handclust import config, schema
from handclust.config import RunConfig
from handclust.modalities.descriptors import (
    DescribeFn,
    describe_ego,
    describe_motion,
    describe_pose,
    describe_rhythm,
    describe_scene,
    describe_tools,
    describe_video,
)
from handclust.modalities.profiles import pose_profile, tools_profile

ProfileFn = Callable[[pa.Table, npt.NDArray[np.integer], RunConfig], dict[str, Any]]
StageFactory = Callable[[RunConfig], Any]


@dataclass(frozen=True)
class Modality:
    """One modality. Only ``name`` and one of ``describe`` / ``segment_stage`` are required.

    - ``name``: what ``cluster.modalities``, ``unmeasured``, ``run.json`` (fusion weights) and
      ``eval.json`` call it; its segment column is ``desc_<name>`` (:attr:`column`).
    - ``describe``: ``SegmentFrames -> Description | None``, the descriptor of one segment from its
      clip's frame columns (None: the clip has none of them, the column is written empty).
    - ``section``: the config section whose ``enabled`` computes it and ``fuse`` adds it to the
      fusion (``video``, ``tools``, ``pose``). None: always computed, fused when named in
      ``cluster.modalities``.
    - ``frame_stage``: ``RunConfig -> stage`` adding the frame columns it reads (a modality that
      reads another one's columns has none); ``segment_stage``: a stage on a clip's segment rows
      that writes the column itself (e.g. one that needs the segment's time range), instead of ``describe``.
    - ``observed_index``: sparse modality: the vector element that is 0 where the segment saw
      nothing of it; fusion weighs it by the share of segments that saw something. None: dense
      (rows it could not measure are listed in ``unmeasured`` instead).
    - ``ablation``: the name of its evaluation variant on its own ("" -> "<name> only").
    - ``label``: how the report names it (None: ``name``).
    - ``profile``: ``(segments, cluster labels, cfg) -> dict`` merged into ``eval.json``: what each
      activity shows of this modality (top tools, hands in view).
    - ``doc``: one line on what the vector holds.
    """

    name: str
    describe: DescribeFn | None = None
    section: str | None = None
    frame_stage: StageFactory | None = None
    segment_stage: StageFactory | None = None
    observed_index: int | None = None
    ablation: str = ""
    label: str | None = None
    profile: ProfileFn | None = None
    doc: str = ""

    @property
    def column(self) -> str:
        return f"desc_{self.name}"

    @property
    def ablation_name(self) -> str:
        return self.ablation or f"{self.name} only"

    @property
    def report_label(self) -> str:
        return self.label or self.name

    def computed(self, cfg: RunConfig) -> bool:
        """Whether a run with ``cfg`` computes this modality's descriptor."""
        return self.section is None or bool(getattr(getattr(cfg, self.section), "enabled", True))


# --------------------------------------------------------------------------- stage factories


def _scene_stage(cfg: RunConfig) -> Any:
    from handclust.modalities.features.scene import scene_encoder

    encoder = scene_encoder(cfg.scene).encoder  # scene.encoder=auto resolved (on the driver, where stages are built)
    if encoder == "efficientnet":  # learned: no torch import until setup()
        from handclust.modalities.encoders.efficientnet import EfficientNetFrameEncoder

        return EfficientNetFrameEncoder(cfg.scene, cfg.decode.sample_fps)
    if encoder == "dinov2":
        from handclust.modalities.encoders.dinov2 import DinoFrameEncoder

        return DinoFrameEncoder(cfg.scene, cfg.decode.sample_fps)
    from handclust.modalities.features.scene import HistogramSceneEncoder

    return HistogramSceneEncoder(cfg.scene, cfg.decode.sample_fps)


def _motion_stage(cfg: RunConfig) -> Any:
    from handclust.modalities.features.motion import MotionFeatures

    return MotionFeatures(cfg.flow, cfg.decode.sample_fps)


def _video_stage(cfg: RunConfig) -> Any:
    from handclust.modalities.encoders.vjepa2 import VJEPAWindowEncoder

    return VJEPAWindowEncoder(cfg.video, cfg.decode.sample_fps)


def _tools_stage(cfg: RunConfig) -> Any:
    from handclust.modalities.encoders.owlv2 import OwlToolPresence

    return OwlToolPresence(cfg.tools, cfg.decode.sample_fps)


def _pose_stage(cfg: RunConfig) -> Any:
    from handclust.modalities.features.keypoints import HandPoseKeypoints

    return HandPoseKeypoints(cfg.pose, cfg.decode.sample_fps)


# --------------------------------------------------------------------------- the registry

# In this order: the segments table's desc_* columns, the ablation table, `unmeasured`.
BUILTIN: tuple[Modality, ...] = (
    Modality("scene", describe_scene, frame_stage=_scene_stage,
             doc="mean scene embedding of the segment, unit length (EfficientNet-Lite0, histogram pyramid or DINOv2)"),
    Modality("motion", describe_motion, frame_stage=_motion_stage,
             doc="log flow speed, direction histogram and flow grid: mean and std over measured frames"),
    Modality("ego", describe_ego, doc="head motion (ego-motion fit on the flow): mean and std over measured frames"),
    Modality("rhythm", describe_rhythm, doc="flow-rhythm band powers, strength, strength x log period"),
    Modality("video", describe_video, section="video", frame_stage=_video_stage,
             doc="V-JEPA-2, mean over the segment's frames of their window's vector; empty when video is off"),
    Modality("tools", describe_tools, section="tools", frame_stage=_tools_stage, profile=tools_profile,
             doc="mean over scored frames of the per-prompt max OWLv2 score; empty when tools are off"),
    Modality("pose", describe_pose, section="pose", frame_stage=_pose_stage, observed_index=0, profile=pose_profile,
             doc="hand / body keypoint summary (features/keypoints.POSE_DESCRIPTOR); empty when pose is off"),
)

_REGISTRY: dict[str, Modality] = {}


def registered() -> tuple[Modality, ...]:
    """Every registered modality, in registration order."""
    return tuple(_REGISTRY.values())


def get(name: str) -> Modality:
    return _REGISTRY[name]


def register(modality: Modality) -> Modality:
    """Add a modality: from now on it is described, written, validated, fused (when configured) and ablated."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", modality.name):
        raise ValueError(f"modality name {modality.name!r}: use lower-case letters, digits and _ (it names a column)")
    if modality.name in _REGISTRY:
        raise ValueError(f"modality {modality.name!r} is already registered")
    if (modality.describe is None) == (modality.segment_stage is None):
        raise ValueError(f"modality {modality.name!r}: give exactly one of describe and segment_stage")
    field = RunConfig.model_fields.get(modality.section or "")
    if modality.section is not None and not hasattr(field.default if field else None, "enabled"):
        raise ValueError(f"modality {modality.name!r}: section {modality.section!r} is not a config section with `enabled`")
    _REGISTRY[modality.name] = modality
    config.MODALITY_SECTIONS[modality.name] = modality.section
    schema.MODALITY_COLUMNS[modality.name] = modality.column
    if modality.observed_index is not None:
        schema.OBSERVED_INDEX[modality.name] = modality.observed_index
    return modality


def unregister(name: str) -> None:
    """Remove a modality added by :func:`register` (built-in ones stay)."""
    if name in {m.name for m in BUILTIN}:
        raise ValueError(f"modality {name!r} is built in and cannot be removed")
    _REGISTRY.pop(name, None)
    config.MODALITY_SECTIONS.pop(name, None)
    schema.MODALITY_COLUMNS.pop(name, None)
    schema.OBSERVED_INDEX.pop(name, None)


@contextlib.contextmanager
def added(*modalities: Modality) -> Iterator[tuple[Modality, ...]]:
    """Register ``modalities`` for the duration of a ``with`` block (tests, notebooks)."""
    done: list[str] = []
    try:
        for m in modalities:
            register(m)
            done.append(m.name)
        yield modalities
    finally:
        for name in reversed(done):
            unregister(name)


for _m in BUILTIN:
    register(_m)


# --------------------------------------------------------------------------- what the rest iterates


def computed(cfg: RunConfig) -> tuple[Modality, ...]:
    """The modalities a run with ``cfg`` computes."""
    return tuple(m for m in registered() if m.computed(cfg))


def fusion_modalities(cfg: RunConfig) -> tuple[str, ...]:
    """Modalities fused for clustering: ``cluster.modalities``, plus each switched modality enabled with ``fuse``."""
    out = list(cfg.cluster.modalities)
    for m in registered():
        section = getattr(cfg, m.section) if m.section else None
        if section is not None and section.enabled and getattr(section, "fuse", False) and m.name not in out:
            out.append(m.name)
    return tuple(out)


def switch_sections() -> tuple[str, ...]:
    """Config sections that switch a modality on (video, tools, pose)."""
    return tuple(dict.fromkeys(m.section for m in registered() if m.section))


def frame_stages(cfg: RunConfig) -> list[Any]:
    """Per-frame stages of the modalities ``cfg`` computes, in registry order."""
    return [m.frame_stage(cfg) for m in computed(cfg) if m.frame_stage is not None]


def segment_stages(cfg: RunConfig) -> list[Any]:
    """Stages that add descriptor columns to a clip's segment rows (after segmentation), in order."""
    return [m.segment_stage(cfg) for m in computed(cfg) if m.segment_stage is not None]


def describers() -> list[tuple[str, DescribeFn]]:
    """``(name, describe)`` of every modality described from frame columns, for the segment describer."""
    return [(m.name, m.describe) for m in registered() if m.describe is not None]


def extra_names(cfg: RunConfig) -> list[str]:
    """Computed modalities beyond the built-in ones (they change what a clip's segments hold: resume fingerprint)."""
    builtin = {m.name for m in BUILTIN}
    return [m.name for m in computed(cfg) if m.name not in builtin]


def present(segments: pa.Table) -> list[str]:
    """Modalities whose descriptor column exists in ``segments`` and holds non-empty vectors."""
    out = []
    for m in registered():
        if m.column not in segments.column_names or segments.num_rows == 0:
            continue
        first = segments.column(m.column)[0].as_py()
        if first is not None and len(first) > 0:
            out.append(m.name)
    return out


def fusion_inputs(segments: pa.Table, names: Sequence[str],
                  ) -> tuple[dict[str, npt.NDArray[np.float32]], dict[str, npt.NDArray[np.bool_]]]:
    """What fusion takes for ``names``: each modality's ``(n_segments, dim)`` descriptors, and per
    modality the rows that could measure it (from ``unmeasured``; {} for runs without it)."""
    vectors = {m: schema.vectors(segments, get(m).column) for m in names}
    return vectors, schema.measured_masks(segments, list(names))


def profiles(segments: pa.Table, labels: npt.NDArray[np.integer], cfg: RunConfig) -> dict[str, Any]:
    """Per-activity summaries of the computed modalities that have one (``eval.json``)."""
    out: dict[str, Any] = {}
    for m in computed(cfg):
        if m.profile is not None and m.column in segments.column_names:
            out.update(m.profile(segments, labels, cfg))
    return out


def label(name: str) -> str:
    """How the report names a modality (unknown names, e.g. of an older run, as they are)."""
    return _REGISTRY[name].report_label if name in _REGISTRY else name
