"""Modalities: the registry (:mod:`handclust.modalities.registry`, one entry per modality), the
segment descriptors and per-activity profiles, the frame-level feature stages (``features/``:
scene histogram, flow and ego-motion, hands and body) and the learned encoders (``encoders/``:
EfficientNet-Lite0, DINOv2, V-JEPA-2, OWLv2). Imports the base, core and I/O layers."""
