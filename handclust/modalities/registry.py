"""The modality registry: every per-segment descriptor HandClust computes, fuses and ablates, in one place.

A modality is one :class:`Modality` entry: its name, the function that describes a segment
(:mod:`handclust.modalities.descriptors`), the frame or segment stage that makes the columns it reads, the
config section that switches it, whether it is sparse, and how evaluation and the report name
it. A learned modality (its own model) also declares in the entry the frame columns its stage writes
and their widths (:class:`FrameColumn`), its config section's model, the packages it needs
(:class:`Extra`), its model check and its cost-estimate key. Config validation, the frames and
segments schemas, the install and model checks, the stage plan (:mod:`handclust.runtime.plan`),
the segment describer, fusion inputs, ablations, activity profiles and the cost estimate iterate
over :func:`registered`; none of them lists modalities by hand. docs/ARCHITECTURE.md, "How to add
a modality", walks through adding one; ``tests/test_modalities.py`` adds one read from existing
frame columns and ``tests/test_plugin_modality.py`` a learned one with its own torch stage, each
through one call.

The registry sits above the config and the pure cores (its entries hold their functions), so
:mod:`handclust.config`, :mod:`handclust.schema` and :mod:`handclust.extras` cannot import it. They
keep plain tables that only this module writes: :data:`handclust.config.MODALITY_SECTIONS` (and the
sections :func:`handclust.config.add_section` adds to ``RunConfig``),
:data:`handclust.schema.MODALITY_COLUMNS` / :data:`~handclust.schema.OBSERVED_INDEX` /
:data:`~handclust.schema.MODALITY_FRAME_COLUMNS` / :data:`~handclust.schema.OPTIONAL_SCALARS`, and
:data:`handclust.extras.MODALITY_EXTRAS`; ``handclust/__init__`` imports this module, so every
process that imports handclust has them filled before any config is validated.

A modality registered at run time (not in :data:`BUILTIN`) lives in the process that registered
it: the local runner sees it; Ray workers compute its descriptor (the segment describer carries
its function and the schemas), but a clustering task on a worker does not know a sparse one's
``observed_index``, and a worker validating a config does not know its section.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pydantic import BaseModel

from handclust import config, extras, schema
from handclust.config import PoseConfig, RunConfig, ToolsConfig, VideoConfig
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

log = logging.getLogger(__name__)

ProfileFn = Callable[[pa.Table, npt.NDArray[np.integer], RunConfig], dict[str, Any]]
StageFactory = Callable[[RunConfig], Any]
# (cfg, resolve_devices) -> what run.json's `encoders.<name>` records (None: nothing); raises ModelLoadError / DeviceError.
CheckFn = Callable[[RunConfig, bool], "dict[str, Any] | None"]
Width = int | Callable[[RunConfig], "int | None"] | None


@dataclass(frozen=True)
class FrameColumn:
    """One frame column a modality's frame stage writes.

    - ``width``: a ``list<float32>`` column's width: an int, ``RunConfig -> int``, or None (known once
      the model is loaded, e.g. a checkpoint's hidden size); :func:`handclust.runtime.plan.descriptor_dims`
      describes placeholder frames of these widths.
    - ``dtype``: its Arrow type (``schema.VECTOR``; a scalar type for one number per frame).
    - ``fill``: a scalar column's value when the modality is off (vector columns are written empty).
    - ``stored``: False: only the segment describer reads it; it is not written to ``frames/`` (V-JEPA-2's
      window vectors, one per frame, would repeat each window's vector).
    """

    width: Width = None
    dtype: pa.DataType = schema.VECTOR
    fill: Any = None
    stored: bool = True

    def width_for(self, cfg: RunConfig) -> int | None:
        return self.width(cfg) if callable(self.width) else self.width


@dataclass(frozen=True)
class Extra:
    """The optional install a modality needs, checked before any clip is decoded (:func:`handclust.extras.check_install`).

    ``modules``: import names; ``extra``: the pip extra that brings them (``pip install 'handclust[<extra>]'``);
    ``when``: ``RunConfig -> `` the setting that needs them (``"video.enabled=true"``) or None when this config
    does not; None: ``<section>.enabled=true`` whenever the modality is computed.
    """

    modules: tuple[str, ...]
    extra: str
    when: Callable[[RunConfig], str | None] | None = None


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

    What a learned modality (its own model, frame columns and config section) declares besides:

    - ``config``: its config section's pydantic model (subclass :class:`handclust.config.EncoderSection`);
      registering adds the section ``section`` (default: ``name``) to :class:`~handclust.config.RunConfig`.
    - ``frame_columns``: ``{column: FrameColumn}`` its frame stage writes; stored ones join the frames
      schema (empty when it is off), their widths give :func:`handclust.runtime.plan.descriptor_dims`.
    - ``extras``: the packages it needs (:class:`Extra`), checked before any clip is decoded.
    - ``check``: its model check, ``(cfg, resolve_devices) -> record`` run on the driver before any clip
      (run.json ``encoders.<name>``); :func:`stage_check` makes one from an ``EncoderStage`` frame stage.
    - ``cost``: its key in the cost estimate (``handclust estimate --encoders``, run.json ``cost``): a
      string, or ``RunConfig -> key or None``.
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
    config: type[BaseModel] | None = None
    frame_columns: Mapping[str, FrameColumn] = field(default_factory=dict)
    extras: Extra | None = None
    check: CheckFn | None = None
    cost: str | Callable[[RunConfig], str | None] | None = None

    def __post_init__(self) -> None:
        if self.config is not None and self.section is None:  # a modality with its own section names it after itself
            object.__setattr__(self, "section", self.name)

    def cost_key(self, cfg: RunConfig) -> str | None:
        """Its key in the cost estimate under ``cfg`` (None: nothing to count beyond the CPU pipeline)."""
        return self.cost(cfg) if callable(self.cost) else self.cost

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
        return self.section is None or bool(getattr(section_of(cfg, self.section), "enabled", True))


def section_of(cfg: RunConfig, section: str) -> Any:
    """``cfg.<section>``; for a config validated before the section was registered, the section's defaults."""
    value = getattr(cfg, section, None)
    if value is None:
        info = RunConfig.model_fields.get(section)
        value = info.default if info is not None else None
    return value


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


def stage_check(factory: StageFactory) -> CheckFn:
    """The model check of a modality whose frame stage is an :class:`~handclust.modalities.encoders.base.EncoderStage`:
    the stage's own ``check()`` (checkpoint there, of an accepted type) with the device and dtype asked
    for, resolved here when the stages run on this machine (:meth:`EncoderStage.record`)."""
    def check(cfg: RunConfig, resolve_devices: bool) -> dict[str, Any]:
        return factory(cfg).record(resolve_devices)

    return check


def _scene_check(cfg: RunConfig, resolve_devices: bool) -> dict[str, Any]:
    from handclust.modalities.features.scene import scene_dim, scene_encoder, scene_fps, scene_step

    choice = scene_encoder(cfg.scene)
    # No silent fallback: the log and run.json (encoders.scene.chosen) say which scene encoder runs and why.
    (log.warning if choice.encoder == "histogram" and cfg.scene.encoder == "auto" else log.info)("scene encoder: %s", choice.why)
    if choice.encoder == "histogram":
        return {"encoder": "histogram", "chosen": choice.why, "dim": scene_dim(cfg.scene), "device": "cpu",
                "fps": scene_fps(cfg.scene, "histogram"), "every_nth_frame": scene_step(cfg.scene, "histogram", cfg.decode.sample_fps)}
    return {**_scene_stage(cfg).record(resolve_devices), "chosen": choice.why}


def _pose_check(cfg: RunConfig, resolve_devices: bool) -> dict[str, Any]:
    # MediaPipe: bundled models, CPU only, nothing to resolve.
    from handclust.modalities.features.keypoints import check_mediapipe, idle_step
    from handclust.stages import frame_step

    step = frame_step(cfg.pose.fps, cfg.decode.sample_fps)  # the rate keypoints really run at
    idle = idle_step(cfg.pose, cfg.decode.sample_fps)
    return {**check_mediapipe(cfg.pose), "every_nth_frame": step, "frames_per_s": cfg.decode.sample_fps / step,
            "idle_every_nth_frame": idle, "idle_frames_per_s": cfg.decode.sample_fps / idle,
            "looks": (f"hands and body every {idle} sampled frames; hands every {step} within {idle} frames "
                      "of a found hand" if idle > step else f"hands and body every {step} sampled frames")}


def _scene_width(cfg: RunConfig) -> int | None:
    """``scene_embedding``'s width: EfficientNet-Lite0's, the histogram pyramid's; None for DINOv2 (its checkpoint's)."""
    from handclust.modalities.features.scene import scene_dim, scene_encoder

    encoder = scene_encoder(cfg.scene).encoder  # auto resolved
    if encoder == "efficientnet":
        from handclust.modalities.encoders.efficientnet import DIM

        return DIM
    return None if encoder == "dinov2" else scene_dim(cfg.scene)


def _scene_cost(cfg: RunConfig) -> str | None:
    from handclust.modalities.features.scene import scene_encoder

    encoder = scene_encoder(cfg.scene).encoder
    return encoder if encoder in ("efficientnet", "dinov2") else None


def _pose_width(per_slot: int | None = None, body: bool = False) -> Callable[[RunConfig], int]:
    def width(cfg: RunConfig) -> int:
        from handclust.modalities.features.keypoints import BODY_WIDTH, HAND_SLOT

        if body:
            return BODY_WIDTH if cfg.pose.body else 0
        return cfg.pose.max_hands * (per_slot or HAND_SLOT) if cfg.pose.hands else 0

    return width


_SCALAR = pa.float32()
_LEARNED = ("torch", "transformers")
# What the motion stage writes (and motion_dt, the step decoding gives each frame): ego and rhythm read them too.
_MOTION_COLUMNS = {"motion_dt": FrameColumn(dtype=_SCALAR), "flow_mag_mean": FrameColumn(dtype=_SCALAR),
                   "flow_mag_p90": FrameColumn(dtype=_SCALAR),
                   "flow_direction_hist": FrameColumn(lambda cfg: cfg.flow.direction_bins),
                   "flow_grid": FrameColumn(lambda cfg: cfg.flow.grid * cfg.flow.grid * 2),
                   **{c: FrameColumn(dtype=_SCALAR) for c in ("ego_tx", "ego_ty", "ego_rotation", "ego_scale", "ego_residual",
                                                              "ego_ratio", "ego_inliers")}}


# --------------------------------------------------------------------------- the registry

# In this order: the segments table's desc_* columns, the frames table's optional columns, the ablation
# table, `unmeasured`.
BUILTIN: tuple[Modality, ...] = (
    Modality("scene", describe_scene, frame_stage=_scene_stage, frame_columns={"scene_embedding": FrameColumn(_scene_width)},
             extras=Extra(_LEARNED, "encoders", lambda cfg: "scene.encoder=dinov2" if cfg.scene.encoder == "dinov2" else None),
             check=_scene_check, cost=_scene_cost,
             doc="mean scene embedding of the segment, unit length (EfficientNet-Lite0, histogram pyramid or DINOv2)"),
    Modality("motion", describe_motion, frame_stage=_motion_stage, frame_columns=_MOTION_COLUMNS,
             doc="log flow speed, direction histogram and flow grid: mean and std over measured frames"),
    Modality("ego", describe_ego, doc="head motion (ego-motion fit on the flow): mean and std over measured frames"),
    Modality("rhythm", describe_rhythm, doc="flow-rhythm band powers, strength, strength x log period"),
    Modality("video", describe_video, section="video", config=VideoConfig, frame_stage=_video_stage,
             frame_columns={"video_emb": FrameColumn(None, stored=False)}, extras=Extra(_LEARNED, "encoders"),
             check=stage_check(_video_stage), cost="vjepa2",
             doc="V-JEPA-2, mean over the segment's frames of their window's vector; empty when video is off"),
    Modality("tools", describe_tools, section="tools", config=ToolsConfig, frame_stage=_tools_stage, profile=tools_profile,
             frame_columns={"tool_scores": FrameColumn(lambda cfg: len(cfg.tools.prompts))}, extras=Extra(_LEARNED, "encoders"),
             check=stage_check(_tools_stage), cost="owlv2",
             doc="mean over scored frames of the per-prompt max OWLv2 score; empty when tools are off"),
    Modality("pose", describe_pose, section="pose", config=PoseConfig, frame_stage=_pose_stage, observed_index=0, profile=pose_profile,
             frame_columns={"hand_landmarks": FrameColumn(_pose_width()), "body_landmarks": FrameColumn(_pose_width(body=True)),
                            "hand_source": FrameColumn(dtype=pa.int8(), fill=np.int8(0)),
                            "hand_age": FrameColumn(_pose_width(1)), "hand_motion": FrameColumn(_pose_width(2))},
             check=_pose_check,
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
    core = set(schema.frames_schema().names) - set(schema.MODALITY_FRAME_COLUMNS)
    for col, fc in modality.frame_columns.items():
        owner = next((m.name for m in _REGISTRY.values() if col in m.frame_columns and m.frame_columns[col].stored), None)
        if fc.stored and col not in core and (owner is not None or col in schema.MODALITY_FRAME_COLUMNS):
            raise ValueError(f"modality {modality.name!r}: frame column {col!r} is already written by modality {owner!r}")
    added = modality.config is not None and modality.section not in RunConfig.model_fields
    if modality.config is not None:
        config.add_section(modality.section or modality.name, modality.config)
    try:
        section = RunConfig.model_fields.get(modality.section or "")
        if modality.section is not None and not hasattr(section.default if section else None, "enabled"):
            raise ValueError(f"modality {modality.name!r}: section {modality.section!r} is not a config section with `enabled`")
    except ValueError:
        if added:
            config.remove_section(modality.section or "")
        raise
    _REGISTRY[modality.name] = modality
    config.MODALITY_SECTIONS[modality.name] = modality.section
    schema.MODALITY_COLUMNS[modality.name] = modality.column
    if modality.observed_index is not None:
        schema.OBSERVED_INDEX[modality.name] = modality.observed_index
    for col, fc in modality.frame_columns.items():
        if fc.stored and col not in core:
            schema.MODALITY_FRAME_COLUMNS[col] = fc.dtype
            if fc.dtype != schema.VECTOR:
                schema.OPTIONAL_SCALARS[col] = fc.fill
    if modality.extras is not None:
        x = modality.extras
        when = x.when or (lambda cfg, m=modality: f"{m.section}.enabled=true" if m.computed(cfg) else None)
        extras.MODALITY_EXTRAS[modality.name] = (when, x.modules, x.extra)
    return modality


def unregister(name: str) -> None:
    """Remove a modality added by :func:`register` (built-in ones stay)."""
    if name in {m.name for m in BUILTIN}:
        raise ValueError(f"modality {name!r} is built in and cannot be removed")
    m = _REGISTRY.pop(name, None)
    config.MODALITY_SECTIONS.pop(name, None)
    schema.MODALITY_COLUMNS.pop(name, None)
    schema.OBSERVED_INDEX.pop(name, None)
    extras.MODALITY_EXTRAS.pop(name, None)
    if m is None:
        return
    for col in m.frame_columns:
        if col in schema.MODALITY_FRAME_COLUMNS:
            del schema.MODALITY_FRAME_COLUMNS[col]
            schema.OPTIONAL_SCALARS.pop(col, None)
    if m.config is not None and m.section in config.ADDED_SECTIONS and not any(o.section == m.section for o in _REGISTRY.values()):
        config.remove_section(m.section)


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
        section = section_of(cfg, m.section) if m.section else None
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


def model_checks(cfg: RunConfig, resolve_devices: bool = True) -> dict[str, Any]:
    """Each computed modality's model check, in registry order: what run.json's ``encoders`` records."""
    out: dict[str, Any] = {}
    for m in computed(cfg):
        rec = m.check(cfg, resolve_devices) if m.check is not None else None
        if rec is not None:
            out[m.name] = rec
    return out


def cost_keys(cfg: RunConfig) -> tuple[str, ...]:
    """The cost-estimate keys of the modalities ``cfg`` computes (``efficientnet``, ``dinov2``, ``vjepa2``, ...), in order."""
    return tuple(dict.fromkeys(k for m in computed(cfg) if (k := m.cost_key(cfg))))


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
