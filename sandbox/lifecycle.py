"""Models loaded on demand under memory budgets: the pool in front of the model workers.

Each configured model is a :class:`ManagedModel`, which the request pipeline uses as its worker
(``generate`` and ``state``). A *pinned* model is loaded when the gateway starts and never
evicted. Any other model is loaded on its first request and unloaded after ``idle_unload_s``
without one. Loading places the model on a device of the inventory (``sandbox.placement``)
within the device's budget; when it does not fit, the least recently used idle models are
unloaded first (true LRU by the time each last started or finished a request; pinned models,
models with requests in flight and models being loaded are never evicted). When nothing can be
evicted the request waits, at most ``admission_timeout_s``, for memory to be freed, then fails
with 503 ``model_capacity`` (and ``Retry-After``). One load decision is made at a time. A
model that does not fit even an empty inventory (larger than every device) is *refused*: the
gateway still starts and serves the others, that model's state is ``refused``, its requests
fail at once with ``placement_failed``, and a ``refused`` worker event is recorded when the
pool starts (the audit trail).

A model with ``replicas: N`` loads and unloads as one unit of N workers (placement spreads
them over GPUs, ``sandbox.placement``); each request goes to the ready replica with the
fewest requests in flight (``pick_replica``), ties taken in turn.

Memory is what each model is *estimated* to need (its signed manifest's ``memory_bytes``, or
the configured ``memory_bytes``), counted against the budgets; placement never measures a
running worker. Every load, unload and eviction is logged, counted, and shown by
``/admin/models`` (:meth:`ModelPool.status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.errors import WorkerError, WorkerUnavailable
from gateway.types import ChatMessage, DoneEvent, GenerateEvent, GenerateRequest, GenerationParams
from sandbox.client import ModelWorker
from sandbox.events import WorkerEvent
from sandbox.inventory import Inventory
from sandbox.manifest import estimate_memory, verify_model_dir
from sandbox.placement import (
    Allocation,
    LoadedModel,
    ModelNeed,
    Placement,
    PlacementError,
    ReplicaLoad,
    device_usage,
    fits,
    pick_replica,
    place,
    plan_eviction,
)
from sandbox.process import WorkerSpec
from sandbox.protocol import Frame
from sandbox.tasks import cancel_and_wait

log = logging.getLogger("llmos.sandbox.lifecycle")

IDLE_CHECK_S = 1.0


def replica_spec(spec: WorkerSpec, replica: int) -> WorkerSpec:
    """Replica ``replica``'s spec: the model's, with a log file of its own (replica 0 keeps the
    model's file name)."""
    if replica == 0 or spec.log_path is None:
        return spec
    log_path = spec.log_path.with_name(f"{spec.log_path.stem}.r{replica}{spec.log_path.suffix}")
    return replace(spec, log_path=log_path)


@dataclass
class ManagedModel:
    """One model in the pool; the pipeline's worker for it.

    ``worker`` is replica 0's worker; ``workers`` holds one per replica (built from it).
    ``memory_bytes`` is what one replica needs.
    """

    worker: ModelWorker
    memory_bytes: int
    pinned: bool = True
    idle_unload_s: float | None = None  # None: stays loaded until evicted
    device_kind: str = "auto"
    fixed_gpus: bool = False  # the configuration names its GPUs: placement only accounts for them
    replicas: int = 1
    allow_sharding: bool = True
    pool: ModelPool | None = field(default=None, repr=False)
    last_used: float = 0.0
    outstanding: int = 0
    loading: bool = False
    unloading: bool = False  # its workers are stopping: not loaded for new requests
    updating: bool = False
    loads: int = 0
    evictions: int = 0
    refusal: PlacementError | None = None  # fits no device even with everything unloaded
    workers: list[ModelWorker] = field(init=False)
    _inflight: list[int] = field(init=False, repr=False)  # per replica, counted at the pick
    _rotation: int = field(default=0, init=False, repr=False)
    _serving: dict[str, ModelWorker] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"model {self.name!r}: replicas must be >= 1")
        if self.fixed_gpus and self.replicas > 1:
            raise ValueError(f"model {self.name!r}: fixed GPUs and replicas > 1 exclude each other")
        on_event = self.worker.on_event
        others = [
            ModelWorker(replica_spec(self.worker.spec, r), on_event=on_event) for r in range(1, self.replicas)
        ]
        self.adopt([self.worker, *others])

    def fresh_workers(self, spec: WorkerSpec) -> list[ModelWorker]:
        """New (not started) workers for ``spec``, one per replica."""
        on_event = self.worker.on_event
        return [ModelWorker(replica_spec(spec, r), on_event=on_event) for r in range(self.replicas)]

    def adopt(self, workers: list[ModelWorker]) -> None:
        """Serve with ``workers`` (one per replica) from now on."""
        self.worker, self.workers = workers[0], workers
        self._inflight = [0] * len(workers)

    @property
    def name(self) -> str:
        return self.worker.spec.name

    @property
    def loaded(self) -> bool:
        return self.pool is not None and (self.name, 0) in self.pool.allocations and not self.unloading

    @property
    def state(self) -> str:
        """``ready`` when any replica is; else replica 0's state (or loading, unloaded, refused)."""
        if self.refusal is not None:
            return "refused"
        states = [w.state for w in self.workers]
        if self.loading and "ready" not in states:
            return "loading"
        if not self.loaded:
            return "unloaded"
        return "ready" if "ready" in states else states[0]

    # What /admin/workers shows of a worker (replica 0; ``replica_status`` has them all).
    @property
    def pid(self) -> int | None:
        return self.worker.pid

    @property
    def restarts(self) -> int:
        return sum(w.restarts for w in self.workers)

    @property
    def last_error(self) -> str | None:
        if self.refusal is not None:
            return str(self.refusal)
        return next((w.last_error for w in self.workers if w.last_error), None)

    @property
    def isolation(self) -> Any:
        return self.worker.isolation

    @property
    def manifest_digest(self) -> str | None:
        return self.worker.manifest_digest

    def replica_status(self) -> list[dict[str, Any]]:
        return [
            {
                "replica": r,
                "state": w.state if self.loaded else "unloaded",
                "pid": w.pid,
                "outstanding": self._inflight[r],
                "restarts": w.restarts,
                "last_error": w.last_error,
                "gpus": list(w.spec.gpus),
            }
            for r, w in enumerate(self.workers)
        ]

    def served_digest(self, request_id: str) -> str | None:
        """The manifest digest of the worker serving ``request_id`` (while it is being served),
        else the current one: the audit entry names the version that answered, even while an
        update switches versions."""
        worker = self._serving.get(request_id)
        return self.manifest_digest if worker is None else worker.manifest_digest

    def explanation(self, request_id: str) -> asyncio.Future[Frame] | None:
        """The explanation the replica answering ``request_id`` owes (while it answers it)."""
        worker = self._serving.get(request_id)
        return None if worker is None else worker.explanation(request_id)

    def _pick(self) -> int:
        """The replica for the next request: least outstanding among the ready ones (ties in
        turn); when none is ready, the least loaded one (its worker answers why, or waits)."""
        self._rotation += 1
        loads = [
            ReplicaLoad(r, n, ready=w.state == "ready")
            for r, (w, n) in enumerate(zip(self.workers, self._inflight, strict=True))
        ]
        chosen = pick_replica(loads, self._rotation)
        if chosen is None:
            chosen = pick_replica([replace(x, ready=True) for x in loads], self._rotation)
        return chosen or 0

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[GenerateEvent, None]:
        if self.pool is None:
            raise WorkerUnavailable(f"model {self.name!r} is not in a pool", code="worker_stopped")
        self.outstanding += 1  # busy from here: never evicted while a request waits for it
        self.last_used = self.pool.clock()
        try:
            await self.pool.ensure_loaded(self)
            replica = self._pick()
            worker, inflight = self.workers[replica], self._inflight
            inflight[replica] += 1
            self._serving[request.id] = worker
            try:
                async for event in worker.generate(request):
                    yield event
            finally:
                inflight[replica] -= 1
                self._serving.pop(request.id, None)
        finally:
            self.outstanding -= 1
            self.last_used = self.pool.clock()
            self.pool.changed()


class ModelPool:
    """The managed models and the devices they share; start() it, stop() it."""

    def __init__(
        self,
        inventory: Inventory,
        models: list[ManagedModel],
        *,
        admission_timeout_s: float = 30.0,
        start_timeout_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inventory = inventory
        self.models = {m.name: m for m in models}
        self.admission_timeout_s = admission_timeout_s
        self.start_timeout_s = start_timeout_s
        self.clock = clock
        # (model, replica) -> its memory; "NAME#next" / "NAME#old" during an update
        self.allocations: dict[tuple[str, int], Allocation] = {}
        self.evictions = 0
        self._cond = asyncio.Condition()
        self._idle_task: asyncio.Task[None] | None = None
        self._notifying: set[asyncio.Task[None]] = set()
        self._waiters = 0  # loads waiting for memory to be freed
        for model in models:
            model.pool = self
            if not fits(inventory, [], self._need(model)):
                # fits nowhere even with everything unloaded: refused, said once, not on every request
                try:
                    place(inventory, [], self._need(model))
                except PlacementError as exc:
                    model.refusal = exc
                    log.error("model %r refused: %s", model.name, exc)

    def _need(self, model: ManagedModel, name: str | None = None, memory: int | None = None) -> ModelNeed:
        kind = model.device_kind if model.device_kind in ("cpu", "cuda") else "auto"
        return ModelNeed(
            name or model.name,
            memory or model.memory_bytes,
            replicas=model.replicas,
            device_kind=kind,  # type: ignore[arg-type]
            allow_sharding=model.allow_sharding,
        )

    def _held(self) -> list[Allocation]:
        return list(self.allocations.values())

    def _hold(self, placements: list[Placement]) -> None:
        for placement in placements:
            self.allocations[(placement.model, placement.replica)] = placement.allocation()

    def _release(self, name: str) -> None:
        for key in [k for k in self.allocations if k[0] == name]:
            del self.allocations[key]

    def _loaded_view(
        self, model: ManagedModel | None = None, *, keep: ManagedModel | None = None
    ) -> list[LoadedModel]:
        """The loaded models as eviction sees them, ``model`` left out and ``keep`` never evicted."""
        return [
            LoadedModel(m.name, m.last_used, m.pinned or m is keep, busy=m.outstanding > 0 or m.loading)
            for m in self.models.values()
            if m.loaded and m is not model
        ]

    async def start(self) -> None:
        """Load the pinned models (in order), start the idle unloader; record refused models."""
        for model in self.models.values():
            if model.refusal is not None:
                on_event = model.worker.on_event
                if on_event is not None:
                    on_event(WorkerEvent("refused", model.name, ("placement_failed", "model_too_large")))
            elif model.pinned:
                await self._load(model, wait=False)
        self._idle_task = asyncio.create_task(self._unload_idle(), name="llmos-model-pool-idle")

    async def stop(self) -> None:
        try:
            if self._idle_task is not None:
                await cancel_and_wait(self._idle_task)  # a cancel of this stop() is not swallowed
        finally:  # and even then the workers are stopped
            for model in self.models.values():
                for worker in model.workers:
                    try:
                        await worker.stop()
                    except Exception:  # one worker's failure must not keep the others (or the gateway) up
                        log.exception("model %r: stopping a worker failed", model.name)
            self.allocations.clear()

    def changed(self) -> None:
        """A request finished or a model was unloaded: waiting loads look again."""
        if not self._waiters:
            return  # the usual case, on every request's way out: nobody is waiting for memory
        task = asyncio.get_running_loop().create_task(self._notify())
        self._notifying.add(task)  # a task nothing refers to may be collected before it runs
        task.add_done_callback(self._notifying.discard)

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def ensure_loaded(self, model: ManagedModel) -> None:
        """Return once ``model`` is loaded (its worker may still be starting: the worker waits
        for readiness itself). 503 ``model_capacity`` after ``admission_timeout_s``."""
        if model.loaded:
            return
        await self._load(model, wait=True)

    async def load(self, name: str) -> None:
        """Load a model now (admin), evicting as for a request."""
        await self._load(self._get(name), wait=True)

    async def unload(self, name: str) -> bool:
        """Unload a model now (admin) unless it has requests in flight; False if it had."""
        model = self._get(name)
        async with self._cond:
            if model.outstanding or model.loading:
                return False
            await self._unload(model, why="asked")
            self._cond.notify_all()
        return True

    def _get(self, name: str) -> ManagedModel:
        model = self.models.get(name)
        if model is None:
            raise KeyError(name)
        return model

    async def _load(self, model: ManagedModel, *, wait: bool) -> None:
        if model.refusal is not None:
            raise model.refusal
        deadline = self.clock() + self.admission_timeout_s
        async with self._cond:
            while not model.loaded:
                need = self._need(model)
                victims = plan_eviction(self.inventory, self._held(), need, self._loaded_view(model))
                if victims is not None:
                    for name in victims:
                        await self._unload(self.models[name], why=f"evicted (LRU) for {model.name}")
                    placements = place(self.inventory, self._held(), need)
                    self._hold(placements)
                    if not model.fixed_gpus:
                        place_workers(model.workers, placements)
                    model.loading = True
                    model.loads += 1
                    model.last_used = self.clock()
                    log.info(
                        "model %r loading on %s (%d MiB per replica)",
                        model.name,
                        "; ".join(", ".join(p.devices) for p in placements),
                        model.memory_bytes // 2**20,
                    )
                    for worker in model.workers:
                        await worker.start()
                    break
                remaining = deadline - self.clock()
                if not wait or remaining <= 0:
                    if not wait:
                        raise PlacementError(
                            f"pinned model {model.name!r} does not fit beside the other pinned models",
                            model=model.name,
                            need_bytes=model.memory_bytes,
                            largest_free_bytes=0,
                            shard_capacity_bytes=0,
                        )
                    raise WorkerUnavailable(
                        f"model {model.name!r} cannot be loaded now: the models in memory are busy or"
                        " pinned; retry later",
                        code="model_capacity",
                        retry_after=max(1, math.ceil(self.admission_timeout_s / 4)),
                    )
                self._waiters += 1
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._cond.wait(), remaining)
                finally:
                    self._waiters -= 1
        if model.loading:
            try:  # the request that waits on it gets a worker's own error
                await asyncio.gather(
                    *(w.wait_ready(self.start_timeout_s) for w in model.workers), return_exceptions=True
                )
            finally:
                model.loading = False
                self.changed()

    async def _unload(self, model: ManagedModel, *, why: str) -> None:
        if (model.name, 0) not in self.allocations:
            return
        log.info("model %r unloading: %s", model.name, why)
        model.unloading = True  # a request arriving now waits for the lock, then loads it again
        try:
            await asyncio.gather(*(w.stop() for w in model.workers))
        finally:
            self._release(model.name)
            model.unloading = False
        if why.startswith("evicted"):
            model.evictions += 1
            self.evictions += 1

    async def _unload_idle(self) -> None:
        while True:
            await asyncio.sleep(IDLE_CHECK_S)
            now = self.clock()
            for model in list(self.models.values()):
                ttl = model.idle_unload_s
                idle = model.loaded and not model.pinned and not model.outstanding and not model.loading
                if idle and ttl is not None and now - model.last_used >= ttl:
                    async with self._cond:
                        if model.outstanding or model.loading or not model.loaded:
                            continue
                        try:
                            await self._unload(model, why=f"idle for {ttl:.0f} s")
                        except Exception:  # keep unloading the others
                            log.exception("model %r: idle unload failed", model.name)
                        self._cond.notify_all()

    def status(self) -> dict[str, Any]:
        """Per device: budget, use and models on it; per model: state, memory, last use."""
        now, wall = self.clock(), time.time()
        devices = [
            {
                "device": u.device_id,
                "kind": u.kind,
                "name": u.name,
                "budget_bytes": u.budget_bytes,
                "used_bytes": u.used_bytes,
                "free_bytes": u.free_bytes,
                "models": sorted({share.model for share in u.models}),
            }
            for u in device_usage(self.inventory, self.allocations.values())
        ]
        models = {}
        for m in self.models.values():
            held = sorted(
                (a for a in self.allocations.values() if a.model == m.name), key=lambda a: a.replica
            )
            models[m.name] = {
                "state": m.state,
                "pinned": m.pinned,
                "memory_bytes": m.memory_bytes,
                "devices": sorted({s.device_id for a in held for s in a.shares}),
                "replicas": len(held),
                "replicas_configured": m.replicas,
                "replica_status": [
                    {**r, "devices": _devices(held, r["replica"])} for r in m.replica_status()
                ],
                "outstanding": m.outstanding,
                "last_used": None if not m.last_used else round(wall - (now - m.last_used), 3),
                "idle_unload_s": m.idle_unload_s,
                "loads": m.loads,
                "evictions": m.evictions,
                "manifest_digest": m.manifest_digest,
            }
        return {"devices": devices, "models": models, "evictions": self.evictions}

    # -- zero-downtime update ---------------------------------------------------------------

    async def update(self, name: str, model_dir: Path, *, drain_timeout_s: float = 300.0) -> str | None:
        """Serve ``name`` from ``model_dir`` without dropping a request; the new manifest digest.

        A loaded model: the new version is placed beside the old one (evicting idle models if
        needed), started (its manifest verified like any start), and must answer a health
        prompt; then new requests go to it, the old worker finishes what it holds (at most
        ``drain_timeout_s``) and stops. Any failure before the switch stops the new worker and
        leaves the old one serving (``UpdateFailed``). An unloaded model just loads the new
        version next time (its manifest is verified now)."""
        model = self._get(name)
        if model.updating:
            raise UpdateFailed(f"model {name!r} is being updated already; wait for that to finish")
        model.updating = True
        try:
            return await self._update(model, model_dir, drain_timeout_s)
        finally:
            model.updating = False

    async def _update(self, model: ManagedModel, model_dir: Path, drain_timeout_s: float) -> str | None:
        name = model.name
        old_workers = list(model.workers)
        base = model.worker.spec
        if base.model_dir is None:
            raise UpdateFailed(f"model {name!r} loads no files; there is nothing to update")
        spec = replace(base, model_dir=model_dir)
        memory = await asyncio.to_thread(estimate_memory, model_dir)
        digest = None
        if spec.trusted_keys:  # refuse a bad directory now, whether loaded or not
            manifest = await asyncio.to_thread(verify_model_dir, model_dir, spec.trusted_keys)
            digest = manifest.digest
        async with self._cond:
            if not model.loaded:  # checked under the lock: no load can start meanwhile
                model.adopt(model.fresh_workers(spec))
                model.memory_bytes = memory
                log.info("model %r updated to %s (loads on its next request)", name, model_dir)
                return digest
        staging = f"{name}#next"
        async with self._cond:  # the whole new replica set, beside the old one
            need = self._need(model, staging, memory)
            victims = plan_eviction(self.inventory, self._held(), need, self._loaded_view(keep=model))
            if victims is None:
                raise WorkerUnavailable(
                    f"no room to load the new version of {name!r} beside the old one; retry later",
                    code="model_capacity",
                )
            for victim in victims:
                await self._unload(self.models[victim], why=f"evicted (LRU) to update {name}")
            placements = place(self.inventory, self._held(), need)
            self._hold(placements)
        new = model.fresh_workers(spec)
        if not model.fixed_gpus:
            place_workers(new, placements)
        switched = False
        try:
            for worker in new:
                await worker.start()
            for worker in new:
                await worker.wait_ready(self.start_timeout_s)
                await _health_check(worker)
            async with self._cond:  # the switch: new requests go to the new workers from here
                model.adopt(new)
                model.memory_bytes = memory
                self._rename(name, f"{name}#old")  # the old workers keep their memory until stopped
                self._rename(staging, name)
                switched = True
        except (WorkerError, OSError) as exc:
            raise UpdateFailed(
                f"the new version of {name!r} failed ({exc}); still serving the old one"
            ) from exc
        finally:
            if not switched:  # whatever happened (cancelled too): nothing of the new version stays
                await asyncio.gather(*(w.stop() for w in new), return_exceptions=True)
                self._release(staging)
                self.changed()
        log.info(
            "model %r now served from %s (%s); draining the old worker(s)",
            name,
            model_dir,
            model.manifest_digest,
        )
        deadline = self.clock() + drain_timeout_s
        try:
            while any(w.outstanding for w in old_workers) and self.clock() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.gather(*(w.stop() for w in old_workers))
        finally:
            self._release(f"{name}#old")
            self.changed()
        return model.manifest_digest

    def _rename(self, name: str, to: str) -> None:
        for key in [k for k in self.allocations if k[0] == name]:
            allocation = self.allocations.pop(key)
            self.allocations[(to, key[1])] = replace(allocation, model=to)


def _devices(held: list[Allocation], replica: int) -> list[str]:
    return [s.device_id for a in held if a.replica == replica for s in a.shares]


def place_workers(workers: list[ModelWorker], placements: list[Placement]) -> None:
    """Give each replica's worker its devices: GPUs, and per-GPU ``max_memory`` when sharded."""
    for worker, placement in zip(workers, placements, strict=True):
        worker.spec = replace(
            worker.spec,
            gpus=placement.gpu_indices,
            max_memory=placement.max_memory() if placement.sharded else None,
        )


class UpdateFailed(WorkerError):
    """A model update did not happen; the old version still serves."""

    code = "update_failed"


HEALTH_PROMPT = "Say OK."


async def _health_check(worker: ModelWorker) -> None:
    """The new version must answer a short prompt before it gets traffic."""
    request = GenerateRequest(
        id="llmos-health",
        params=GenerationParams(max_tokens=2),
        messages=(ChatMessage("user", HEALTH_PROMPT),),
    )
    done = False
    async for event in worker.generate(request):
        done = isinstance(event, DoneEvent)
    if not done:
        raise UpdateFailed("the health prompt got no answer")
