"""Every error HandClust raises on purpose, in one module: each message names the file or key,
the cause and the fix (docs/errors-and-reruns.md). Each is also importable from the module that
raises it (``handclust.io.video.VideoError``, ...)."""

from __future__ import annotations

from pathlib import Path

REENCODE_HINT = "re-encode it, e.g. `ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`, or remove it from the input"


# raised in handclust/config.py
class ConfigError(ValueError):
    """A config key or value is wrong; the message names it and says what is allowed."""


# raised in handclust/extras.py
class MissingExtraError(ConfigError):
    """The config needs an optional dependency this install lacks; the message names the extra."""


# raised in handclust/result.py
class RunnerError(RuntimeError):
    """The runner itself failed (Ray could not start, or died mid-run); the message names the cause and the fix."""


# raised in handclust/runtime/ray_connect.py
class RayStartError(RunnerError):
    """Ray could not be started or joined; the message says which cluster and what to do."""


# raised in handclust/io/video.py
class VideoError(RuntimeError):
    """A clip cannot be read. The message names the file, the cause and the fix."""

    def __init__(self, path: str | Path, problem: str, fix: str = REENCODE_HINT):
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path}: {problem}; {fix}")


# raised in handclust/io/footage.py
class FootageError(ValueError):
    """The footage argument names nothing usable; the message says what to pass instead."""


# raised in handclust/io/run_lock.py
class OutputBusyError(RuntimeError):
    """Another command holds the lock on the output folder; the message names it and what to do."""


# raised in handclust/io/run_record.py
class RunRecordError(ValueError):
    """A write to run.json with a key or value type that :data:`~handclust.schema.RUN_RECORD` does not allow."""


# raised in handclust/core/clustering/backends.py
class BackendError(RuntimeError):
    pass


# raised in handclust/modalities/encoders/loading.py
class ModelLoadError(RuntimeError):
    """A configured model cannot be loaded. The message names the key and the fix."""


# raised in handclust/modalities/encoders/device.py
class DeviceError(RuntimeError):
    """An encoder's device or dtype cannot be used here; the message names the config key."""


# raised in handclust/modalities/features/keypoints.py
class KeypointModelError(ModelLoadError):
    """MediaPipe or its bundled hand / pose models are missing; the message says how to install them."""


# raised in handclust/segment_features.py
class FeatureDirError(ValueError):
    """A feature folder that cannot be read; the message names the file and the fix."""


# raised in handclust/core/clustering/fusion.py
class DescriptorWidthError(ValueError):
    """New segments' descriptors have another width than the fitted fusion model's."""


# raised in handclust/assign.py
class ModelError(FileNotFoundError):
    """The earlier run has no saved model to assign to."""
