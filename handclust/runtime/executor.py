"""One executor per run: where the work that fans out runs, and who owns the connection to Ray.

Every stage that fans out (the clip runner, the clustering task, naming the activities, the
report's excerpts) takes the run's :class:`Executor` and asks it to ``map`` a function over items,
``call`` one function as a task, or hold one ``shared`` object; none of them connects to Ray or
asks which runner the run uses. :func:`executor_for` builds the executor ``runner`` names, once
per run, and :func:`handclust.discover` (the CLI, ``handclust report``, ``handclust assign``) uses
it as a context manager:

- :class:`LocalExecutor` (``runner=local``): functions run in this process, ``map`` in a thread
  pool of ``concurrency`` threads (none: one after the other); the clips go through
  :class:`~handclust.runtime.local_runner.LocalRunner` (:func:`handclust.runtime.runners.clip_runner`).
- :class:`RayExecutor` (``runner=ray``): connects once, on first need, through
  :func:`handclust.runtime.ray_connect.connect` (``ray.address`` / ``RAY_ADDRESS``, else a new
  private local instance); ``map`` and ``call`` are Ray tasks with the resources the stage asks
  for; the clips go through :class:`~handclust.runtime.ray_runner.RayRunner`'s streaming Ray Data
  pipeline on the same connection. ``close()`` shuts down only an instance this executor started:
  a Ray that the process had joined before (a notebook, a test, ``ray job submit``'s driver) stays.

This module imports neither ray nor the runners at the top: ``import handclust`` stays cheap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from handclust.config import RayConfig, RunConfig

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Executor:
    """Where work that fans out runs (see the module docstring). A context manager: leaving it closes it."""

    kind: Literal["local", "ray"]
    #: How :meth:`map` runs, in words (run.json's ``summary.labels.ran_on``, the report's progress line).
    tasks: str
    #: Where it runs work, in words, for progress lines ("here", "in Ray tasks").
    place: str
    #: The Ray cluster this executor uses, in words, once connected (None: not connected, or local).
    cluster: str | None = None

    @property
    def remote(self) -> bool:
        """Its tasks run on a named cluster's workers (which resolve their own devices), not on this machine."""
        return False

    def map(self, fn: Callable[..., R], items: Sequence[T], *, args: tuple[Any, ...] = (), num_cpus: float = 1.0,
            num_gpus: float = 0.0, max_retries: int = 0, concurrency: int | None = None,
            on_error: Callable[[T, Exception], R] | None = None) -> list[R]:
        """``[fn(item, *args) for item in items]``, in ``items``' order, at most ``concurrency`` at once
        (None: as many as the executor can). ``num_cpus`` / ``num_gpus`` / ``max_retries``: what one
        Ray task asks for. ``on_error(item, exc)``: the result of an item whose call raised (else it raises)."""
        raise NotImplementedError

    def call(self, fn: Callable[..., R], *args: Any, num_cpus: float = 1.0, num_gpus: float = 0.0, max_retries: int = 0) -> R:
        """``fn(*args)`` as one task asking for ``num_cpus`` / ``num_gpus``."""
        raise NotImplementedError

    def shared(self, cls: Callable[..., Any], *args: Any) -> Any:
        """One ``cls(*args)`` that every task of a :meth:`map` may call methods of (e.g. a budget): the
        object here, a Ray actor behind the same methods on Ray. Only method calls, no attributes."""
        raise NotImplementedError

    def resources(self) -> dict[str, float]:
        """What the executor can give a task: ``CPU`` and ``GPU`` counts."""
        raise NotImplementedError

    def on_ray(self) -> RayExecutor:
        """An executor on Ray for a step that must run as a Ray task whatever the runner
        (``cluster.where=ray_task``): this one on Ray, else a Ray executor this one opens and closes."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what this executor holds (a Ray instance it started); safe to call twice."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """Everything in this process. ``ray``: the settings of the Ray executor :meth:`on_ray` opens when
    a step must run as a Ray task (``cluster.where=ray_task`` with ``runner=local``)."""

    kind = "local"
    tasks = "threads"
    place = "here"

    def __init__(self, ray: RayConfig | None = None):
        self.ray_config = ray or RayConfig()
        self._ray: RayExecutor | None = None

    def map(self, fn: Callable[..., R], items: Sequence[T], *, args: tuple[Any, ...] = (), num_cpus: float = 1.0,
            num_gpus: float = 0.0, max_retries: int = 0, concurrency: int | None = None,
            on_error: Callable[[T, Exception], R] | None = None) -> list[R]:
        def one(item: T) -> R:
            if on_error is None:
                return fn(item, *args)
            try:
                return fn(item, *args)
            except Exception as exc:  # the stage decides what a failed item becomes
                return on_error(item, exc)

        if concurrency is None or len(items) < 2:
            return [one(item) for item in items]
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return list(pool.map(one, items))

    def call(self, fn: Callable[..., R], *args: Any, num_cpus: float = 1.0, num_gpus: float = 0.0, max_retries: int = 0) -> R:
        return fn(*args)

    def shared(self, cls: Callable[..., Any], *args: Any) -> Any:
        return cls(*args)

    def resources(self) -> dict[str, float]:
        return {"CPU": float(os.cpu_count() or 1), "GPU": 0.0}

    def on_ray(self) -> RayExecutor:
        if self._ray is None:
            self._ray = RayExecutor(self.ray_config)
        return self._ray

    def close(self) -> None:
        if self._ray is not None:
            self._ray.close()
            self._ray = None


class RayExecutor(Executor):
    """Ray tasks on the cluster ``ray`` names (``ray.address`` / ``RAY_ADDRESS``), else on a new local
    instance sized by ``ray.num_cpus`` / ``ray.object_store_memory_mb``; connected once, on first need.

    ``log_to_driver``: workers' output printed here (with progress on). :attr:`started`: this executor
    started the instance (and :meth:`close` shuts it down); a Ray the process had joined before stays.
    """

    kind = "ray"
    tasks = "ray tasks"
    place = "in Ray tasks"

    def __init__(self, ray: RayConfig | None = None, log_to_driver: bool = False):
        self.ray_config = ray or RayConfig()
        self.log_to_driver = log_to_driver
        self.started = False
        self.connected = False

    @property
    def remote(self) -> bool:
        """It joins a named cluster (``ray.address`` / ``RAY_ADDRESS``), whose autoscaler may add nodes
        and whose workers resolve their own devices."""
        return bool(self.ray_config.address or os.environ.get("RAY_ADDRESS"))

    def connect(self) -> None:
        """Join or start Ray (:func:`~handclust.runtime.ray_connect.connect`), once for this executor."""
        if self.connected:
            return
        from handclust.runtime.ray_connect import connect

        self.started, self.cluster = connect(self.ray_config, log_to_driver=self.log_to_driver)
        self.connected = True
        log.info("ray: using %s", self.cluster)

    def abandon(self) -> None:
        """Ray died under this executor: :meth:`close` must not talk to it any more."""
        self.started = False

    def map(self, fn: Callable[..., R], items: Sequence[T], *, args: tuple[Any, ...] = (), num_cpus: float = 1.0,
            num_gpus: float = 0.0, max_retries: int = 0, concurrency: int | None = None,
            on_error: Callable[[T, Exception], R] | None = None) -> list[R]:
        if not items:
            return []
        import ray

        self.connect()
        task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus or None, max_retries=max_retries)(fn)
        limit = concurrency or len(items)
        results: dict[int, R] = {}
        running: dict[Any, int] = {}
        queue = list(enumerate(items))
        while queue or running:
            while queue and len(running) < limit:
                i, item = queue.pop(0)
                running[task.remote(item, *args)] = i
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                i = running.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except Exception as exc:  # the task raised, or its worker died past its retries
                    if on_error is None:
                        raise
                    results[i] = on_error(items[i], exc)
        return [results[i] for i in range(len(items))]

    def call(self, fn: Callable[..., R], *args: Any, num_cpus: float = 1.0, num_gpus: float = 0.0, max_retries: int = 0) -> R:
        import ray

        self.connect()
        task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus or None, max_retries=max_retries)(fn)
        return ray.get(task.remote(*args))  # type: ignore[no-any-return]

    def shared(self, cls: Callable[..., Any], *args: Any) -> Any:
        import ray

        self.connect()
        return ActorProxy(ray.remote(num_cpus=0)(cls).remote(*args))

    def resources(self) -> dict[str, float]:
        import ray

        self.connect()
        return {k: float(v) for k, v in ray.cluster_resources().items()}

    def on_ray(self) -> RayExecutor:
        return self

    def close(self) -> None:
        if self.started:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        self.started = False
        self.connected = False


class ActorProxy:
    """The methods of a Ray actor as plain calls (``proxy.reserve(x)`` is ``ray.get(actor.reserve.remote(x))``),
    so that a task calls a :meth:`Executor.shared` object the same way here and on Ray."""

    def __init__(self, handle: Any):
        self.handle = handle

    def __reduce__(self) -> tuple[Any, ...]:
        return ActorProxy, (self.handle,)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # pickle's and copy's probes, and `handle` before __init__ set it
            raise AttributeError(name)
        import ray

        method = getattr(self.handle, name)
        return lambda *a: ray.get(method.remote(*a))


def executor_from(runner: str, ray: RayConfig | None = None, log_to_driver: bool = False) -> Executor:
    """The executor ``runner`` (``local`` | ``ray``) names, with ``ray``'s connection settings."""
    if runner == "ray":
        return RayExecutor(ray, log_to_driver=log_to_driver)
    if runner == "local":
        return LocalExecutor(ray)
    raise ValueError(f"unknown runner {runner!r}; use local or ray")


def executor_for(cfg: RunConfig, log_to_driver: bool = False) -> Executor:
    """The run's executor: ``cfg.runner`` with ``cfg.ray`` (build it once, use it as a context manager)."""
    return executor_from(cfg.runner, cfg.ray, log_to_driver)

