"""Jobs of the ryla-gen job API: how one runs, where its state lives, who runs it.

* :func:`run_job` runs one :class:`~ryla_gen.types.JobRequest` to its end through the
  ComfyUI driver (:class:`~ryla_gen.providers.comfyui.ComfyUIProvider`), reporting
  progress as it goes, and returns the terminal part of a JobView. It is the only code
  that drives ComfyUI: the local server and the Modal GPU worker both call it.
* :class:`LocalExecutor` keeps jobs in memory and runs them in this process, at most
  ``max_concurrency`` at a time (``python -m ryla_gen_modal serve``).
* :class:`ModalExecutor` (the Modal web front) spawns each job on the GPU worker and
  tracks it in a ``modal.Dict`` (job id -> function call id, progress), reading results
  back with ``FunctionCall.get``. Modal itself hides behind :class:`JobBackend`, a
  six-method protocol (:class:`ModalBackend` is the real one).

A JobView is the JSON shape documented in :mod:`ryla_gen_modal.schemas`.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import collections
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from ryla_gen._constants import DEFAULT_JOB_TIMEOUT
from ryla_gen._http import Deadline
from ryla_gen.errors import (
    APIError,
    GraphValidationError,
    InputError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    ModelMissingError,
    ProviderUnavailableError,
)
from ryla_gen.providers._base import AsyncProvider
from ryla_gen.types import (
    Cancelled,
    Completed,
    Failed,
    JobRequest,
    JobState,
    OutputImage,
    Progress,
    Queued,
    Started,
)

__all__ = [
    "HEALTH_KEY",
    "BackendUnavailableError",
    "Executor",
    "ExecutorBusyError",
    "JobBackend",
    "LocalExecutor",
    "ModalBackend",
    "ModalExecutor",
    "error_view",
    "image_view",
    "job_key",
    "make_view",
    "progress_key",
    "run_job",
    "worker_run",
]

log = logging.getLogger("ryla_gen_modal.jobs")

JobView = dict[str, Any]
Update = dict[str, Any]

_TERMINAL = {"completed", "failed", "cancelled"}
_MAX_TRACEBACK = 20_000
#: Seconds ``cancel`` waits for a running job to stop before answering.
_CANCEL_WAIT = 15.0


class ExecutorBusyError(Exception):
    """Too many jobs are waiting; the client should retry later."""

    def __init__(self, message: str, *, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackendUnavailableError(Exception):
    """The GPU backend could not be reached to start the job."""


# -- views ---------------------------------------------------------------------------------


def _empty_timings() -> dict[str, float | None]:
    return {"queue_wait": None, "execution": None, "transfer": None, "total": None}


def make_view(
    job_id: str,
    *,
    status: str,
    created_at: float,
    updated_at: float | None = None,
    workflow: str | None = None,
    seed: int | None = None,
    queue_position: int | None = None,
    progress: Mapping[str, Any] | None = None,
    error: Mapping[str, Any] | None = None,
    images: list[dict[str, Any]] | None = None,
    timings: Mapping[str, float | None] | None = None,
) -> JobView:
    """A JobView dict with every key present."""
    return {
        "id": job_id,
        "status": status,
        "workflow": workflow,
        "seed": seed,
        "queue_position": queue_position if status == "queued" else None,
        "progress": dict(progress) if progress and status == "running" else None,
        "error": dict(error) if error else None,
        "images": list(images or []) if status == "completed" else [],
        "timings": {**_empty_timings(), **(timings or {})},
        "created_at": created_at,
        "updated_at": updated_at if updated_at is not None else created_at,
    }


def image_view(image: OutputImage) -> dict[str, Any]:
    """One output image as JSON: base64 data plus its name, type and node."""
    return {
        "filename": image.filename,
        "content_type": image.content_type,
        "node_id": image.node_id,
        "data": base64.b64encode(image.data).decode("ascii"),
    }


def error_view(exc: BaseException) -> dict[str, Any]:
    """The JobView ``error`` object for an exception a job ended with."""
    view: dict[str, Any] = {
        "type": "internal_error",
        "message": str(exc) or type(exc).__name__,
        "node_id": None,
        "node_type": None,
        "exception_type": None,
        "traceback": None,
    }
    if isinstance(exc, JobFailedError):
        died = exc.exception_type == "BackendDied"
        tb = exc.traceback[-_MAX_TRACEBACK:] if exc.traceback else None
        view.update(
            type="backend_died" if died else "job_failed",
            message=exc.server_message,
            node_id=exc.node_id,
            node_type=exc.node_type,
            exception_type=None if died else exc.exception_type,
            traceback=tb,
        )
    elif isinstance(exc, JobTimeoutError):
        view["type"] = "timeout"
    elif isinstance(exc, JobCancelledError):
        view["type"] = "cancelled"
    elif isinstance(exc, ModelMissingError):
        view["type"] = "model_missing"
        view["missing_models"] = [_relpath(m) for m in exc.missing]
    elif isinstance(exc, GraphValidationError):
        view["type"] = "validation_error"
        view["node_errors"] = [dataclasses.asdict(e) for e in exc.errors]
        if exc.errors:
            view["node_id"] = exc.errors[0].node_id or None
            view["node_type"] = exc.errors[0].class_type or None
    elif isinstance(exc, InputError):
        view["type"] = "invalid_request"
    elif isinstance(exc, ProviderUnavailableError):
        view["type"] = "backend_unavailable"
    elif isinstance(exc, APIError):
        view["type"] = "backend_error"
    else:
        view["message"] = f"{type(exc).__name__}: {exc}"
    return view


def _relpath(m: Any) -> str:
    folder, filename = getattr(m, "folder", None), getattr(m, "filename", None)
    return f"{folder}/{filename}" if folder and filename else str(m)


def _cancelled_error() -> dict[str, Any]:
    return {
        "type": "cancelled",
        "message": "The job was cancelled.",
        "node_id": None,
        "node_type": None,
        "exception_type": None,
        "traceback": None,
    }


# -- running one job -------------------------------------------------------------------------


async def run_job(
    provider: AsyncProvider,
    request: JobRequest,
    *,
    created_at: float,
    timeout: float | None = DEFAULT_JOB_TIMEOUT,
    on_update: Callable[[Update], None] | None = None,
) -> Update:
    """Run ``request`` on ``provider`` until it ends; return its terminal state.

    The answer has ``status`` (completed, failed or cancelled), ``error``, ``images``
    and ``timings``; ``on_update`` receives ``status``/``queue_position``/``progress``
    changes while the job waits and runs. ``created_at`` (epoch seconds) is when the
    job was accepted: the time before this call counts as queue wait.

    Cancelling the task that runs this coroutine cancels the ComfyUI prompt too
    (removed from the queue, or interrupted) before the cancellation propagates.
    """
    notify = on_update or (lambda update: None)
    began = time.time()
    deadline = Deadline(timeout)
    submit = asyncio.ensure_future(provider.submit(request, deadline=deadline))
    try:
        job = await asyncio.shield(submit)
    except asyncio.CancelledError:
        # The prompt may reach ComfyUI anyway: let the submit settle, then cancel it.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            settled = await asyncio.wait_for(submit, 30)
            await asyncio.wait_for(provider.cancel(settled.id), 30)
        raise
    except Exception as exc:
        return {"status": "failed", "error": error_view(exc), "timings": _total(created_at)}

    notify({"status": "queued", "prompt_id": job.id})
    try:
        async for event in provider.events(job, deadline):
            if isinstance(event, Queued):
                notify({"status": "queued", "queue_position": event.position})
            elif isinstance(event, Started):
                notify({"status": "running", "queue_position": None})
            elif isinstance(event, Progress):
                notify(
                    {
                        "status": "running",
                        "progress": {"value": event.value, "max": event.max, "node": event.node},
                    }
                )
            elif isinstance(event, Completed):
                t = event.result.timings
                return {
                    "status": "completed",
                    "error": None,
                    "images": [image_view(i) for i in event.result.images],
                    "timings": {
                        "queue_wait": (began - created_at) + (t.queue_wait or 0.0),
                        "execution": t.execution,
                        "transfer": t.transfer,
                        "total": time.time() - created_at,
                    },
                }
            elif isinstance(event, Failed):
                return {
                    "status": "failed",
                    "error": error_view(event.error),
                    "timings": _total(created_at),
                }
            elif isinstance(event, Cancelled):
                return {
                    "status": "cancelled",
                    "error": _cancelled_error(),
                    "timings": _total(created_at),
                }
    except asyncio.CancelledError:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(provider.cancel(job.id)), 30)
        raise
    except Exception as exc:
        return {"status": "failed", "error": error_view(exc), "timings": _total(created_at)}
    raise AssertionError("unreachable: events() ends with a terminal event or raises")


def _total(created_at: float) -> dict[str, float | None]:
    return {**_empty_timings(), "total": time.time() - created_at}


# -- executors ---------------------------------------------------------------------------------


class Executor(abc.ABC):
    """Where the server's jobs run. Views are JobView dicts; None means "no such job"."""

    @abc.abstractmethod
    async def create(
        self, request: JobRequest, *, job_id: str | None = None
    ) -> tuple[JobView, bool]:
        """Start a job (already validated); ``(view, True)``, or ``(view, False)`` if
        a job with ``job_id`` exists already (nothing new is started)."""

    @abc.abstractmethod
    async def get(self, job_id: str) -> JobView | None:
        """The job's current view."""

    @abc.abstractmethod
    async def wait(self, job_id: str, timeout: float) -> JobView | None:
        """The job's view once it has ended, or after ``timeout`` seconds."""

    @abc.abstractmethod
    async def cancel(self, job_id: str) -> JobView | None:
        """Cancel the job (a finished job is left as it is); its view afterwards."""

    async def watch(self, job_id: str, since: float | None, timeout: float) -> JobView | None:
        """The job's view once it differs from the one stamped ``since`` (its
        ``updated_at``), once it has ended, or after ``timeout`` seconds: a long poll.

        This default re-reads :meth:`get`; executors that know when a job changes
        answer at once instead.
        """
        end = time.monotonic() + max(0.0, timeout)
        while True:
            view = await self.get(job_id)
            if view is None or _changed(view, since) or time.monotonic() >= end:
                return view
            await asyncio.sleep(min(_WATCH_POLL, max(0.0, end - time.monotonic())))

    async def backend_info(self) -> dict[str, Any]:
        """``{"reachable": bool, "version": str | None}`` of the ComfyUI behind it."""
        return {"reachable": False, "version": None}

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Stop background work and release connections."""


_WATCH_POLL = 0.25
"""Seconds between re-reads in the default :meth:`Executor.watch`."""


def _changed(view: JobView, since: float | None) -> bool:
    if since is None or view["status"] in _TERMINAL:
        return True
    return abs(float(view["updated_at"]) - since) > 1e-6


@dataclasses.dataclass
class _Record:
    """A LocalExecutor job: its live state, and the request until the job ends."""

    id: str
    request: JobRequest | None
    created_at: float
    workflow: str | None = None
    seed: int | None = None
    status: str = "queued"
    updated_at: float = 0.0
    queue_position: int | None = None
    progress: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    images: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    timings: dict[str, float | None] = dataclasses.field(default_factory=_empty_timings)
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    """Set (and replaced) on every update: what long polls wait on."""

    def apply(self, update: Mapping[str, Any]) -> None:
        """Merge an update from :func:`run_job`; a finished job no longer changes."""
        if self.status in _TERMINAL:
            return
        for key in ("status", "queue_position", "progress", "error", "images", "timings"):
            if key in update:
                setattr(self, key, update[key])
        self.updated_at = time.time()
        if self.status in _TERMINAL:
            self.request = None  # drop the input images
            self.done.set()
        self.changed.set()
        self.changed = asyncio.Event()

    def view(self, waiting_ahead: int | None = None) -> JobView:
        """The JobView; ``waiting_ahead`` counts jobs before it in the executor's FIFO."""
        position = self.queue_position
        if self.status == "queued" and waiting_ahead is not None:
            position = waiting_ahead + (position or 0)
        return make_view(
            self.id,
            status=self.status,
            created_at=self.created_at,
            updated_at=self.updated_at or self.created_at,
            workflow=self.workflow,
            seed=self.seed,
            queue_position=position,
            progress=self.progress,
            error=self.error,
            images=self.images,
            timings=self.timings,
        )


class LocalExecutor(Executor):
    """Runs jobs in this process on one ComfyUI server, through the ComfyUI driver.

    Jobs wait in a FIFO until one of ``max_concurrency`` slots is free, then are queued
    on ComfyUI and followed to their end. ``max_queued`` bounds jobs not yet finished
    (beyond it :meth:`create` raises :class:`ExecutorBusyError`); finished jobs are kept
    for ``retention_seconds`` and at most ``max_finished`` of them.

    Args:
        provider: The driver (normally ``ComfyUIProvider(url)``); closed by :meth:`aclose`.
        max_concurrency: Jobs handed to ComfyUI at once (ComfyUI runs one at a time;
            2 lets the next upload overlap the running job).
        job_timeout: Seconds one job may take once it has a slot (None: no limit).
        health_timeout: Seconds :meth:`backend_info` waits for ComfyUI's answer.
    """

    def __init__(
        self,
        provider: AsyncProvider,
        *,
        max_concurrency: int = 2,
        max_queued: int = 256,
        job_timeout: float | None = DEFAULT_JOB_TIMEOUT,
        max_finished: int = 1000,
        retention_seconds: float = 24 * 3600,
        health_timeout: float = 2.0,
    ) -> None:
        if max_concurrency < 1 or max_queued < 1:
            raise ValueError("max_concurrency and max_queued must be at least 1")
        self.provider = provider
        self.max_concurrency = max_concurrency
        self.max_queued = max_queued
        self.job_timeout = job_timeout
        self.max_finished = max_finished
        self.retention_seconds = retention_seconds
        self.health_timeout = health_timeout
        self._jobs: collections.OrderedDict[str, _Record] = collections.OrderedDict()
        self._waiting: collections.deque[str] = collections.deque()
        self._slots: asyncio.Semaphore | None = None
        self._in_flight = 0

    def __repr__(self) -> str:
        return f"LocalExecutor({self.provider!r}, max_concurrency={self.max_concurrency})"

    def _view(self, rec: _Record) -> JobView:
        ahead = None
        if rec.status == "queued" and rec.id in self._waiting:
            # Jobs before it in the FIFO plus those holding a slot.
            ahead = list(self._waiting).index(rec.id) + self._in_flight
        return rec.view(ahead)

    async def create(
        self, request: JobRequest, *, job_id: str | None = None
    ) -> tuple[JobView, bool]:
        """Queue ``request``; see :meth:`Executor.create`."""
        if job_id is not None and job_id in self._jobs:
            return self._view(self._jobs[job_id]), False
        active = sum(1 for r in self._jobs.values() if r.status not in _TERMINAL)
        if active >= self.max_queued:
            raise ExecutorBusyError(
                f"{active} jobs are queued or running (the limit is {self.max_queued}); "
                "retry later."
            )
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        now = time.time()
        rec = _Record(
            id=job_id or str(uuid.uuid4()),
            request=request,
            created_at=now,
            updated_at=now,
            workflow=request.workflow,
            seed=request.seed,
        )
        self._jobs[rec.id] = rec
        self._waiting.append(rec.id)
        rec.task = asyncio.create_task(self._run(rec, request), name=f"ryla-gen-job-{rec.id}")
        self._prune()
        log.info("job %s created (workflow=%s)", rec.id, request.workflow)
        return self._view(rec), True

    async def _run(self, rec: _Record, request: JobRequest) -> None:
        assert self._slots is not None
        try:
            async with self._slots:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(rec.id)
                self._in_flight += 1
                try:
                    outcome = await run_job(
                        self.provider,
                        request,
                        created_at=rec.created_at,
                        timeout=self.job_timeout,
                        on_update=rec.apply,
                    )
                finally:
                    self._in_flight -= 1
            rec.apply(outcome)
        except asyncio.CancelledError:
            rec.apply(
                {
                    "status": "cancelled",
                    "error": _cancelled_error(),
                    "timings": _total(rec.created_at),
                }
            )
        except Exception as exc:  # never leave a job hanging
            log.exception("job %s crashed", rec.id)
            rec.apply(
                {"status": "failed", "error": error_view(exc), "timings": _total(rec.created_at)}
            )
        finally:
            with contextlib.suppress(ValueError):
                self._waiting.remove(rec.id)
            rec.done.set()
            log.info("job %s %s", rec.id, rec.status)

    def _prune(self) -> None:
        cutoff = time.time() - self.retention_seconds
        finished = [r for r in self._jobs.values() if r.status in _TERMINAL]
        excess = len(finished) - self.max_finished
        for r in finished:
            if excess > 0 or r.updated_at < cutoff:
                self._jobs.pop(r.id, None)
                excess -= 1

    async def get(self, job_id: str) -> JobView | None:
        """See :meth:`Executor.get`."""
        rec = self._jobs.get(job_id)
        return None if rec is None else self._view(rec)

    async def wait(self, job_id: str, timeout: float) -> JobView | None:
        """See :meth:`Executor.wait`."""
        rec = self._jobs.get(job_id)
        if rec is None:
            return None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(rec.done.wait(), timeout=max(0.0, timeout))
        return self._view(rec)

    async def watch(self, job_id: str, since: float | None, timeout: float) -> JobView | None:
        """See :meth:`Executor.watch`: answers the moment the job changes."""
        rec = self._jobs.get(job_id)
        if rec is None:
            return None
        view = self._view(rec)
        if _changed(view, since):
            return view
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(rec.changed.wait(), timeout=max(0.0, timeout))
        return self._view(rec)

    async def cancel(self, job_id: str) -> JobView | None:
        """Cancel a waiting or running job; waits briefly until it has stopped."""
        rec = self._jobs.get(job_id)
        if rec is None:
            return None
        if rec.status not in _TERMINAL and rec.task is not None:
            rec.task.cancel()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(rec.done.wait(), timeout=_CANCEL_WAIT)
        return self._view(rec)

    async def backend_info(self) -> dict[str, Any]:
        """ComfyUI's reachability and version, from ``/system_stats``."""
        try:
            info = await asyncio.wait_for(self.provider.info(), timeout=self.health_timeout)
        except Exception:
            return {"reachable": False, "version": None}
        system = info.get("system") if isinstance(info, dict) else None
        version = system.get("comfyui_version") if isinstance(system, dict) else None
        return {"reachable": True, "version": str(version) if version else None}

    async def aclose(self) -> None:
        """Cancel every unfinished job (their prompts too) and close the driver."""
        tasks = [r.task for r in self._jobs.values() if r.task is not None and not r.task.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_CANCEL_WAIT)
        await self.provider.aclose()


# -- Modal -----------------------------------------------------------------------------------------


class JobBackend(Protocol):
    """What :class:`ModalExecutor` needs from Modal: spawn/poll/cancel and a key-value store."""

    async def spawn(self, payload: dict[str, Any]) -> str:
        """Start the GPU worker on ``payload``; return the function call id."""

    async def poll(self, call_id: str, timeout: float) -> dict[str, Any] | None:
        """The call's return value, or None if it has not finished within ``timeout``.

        Raises whatever the call raised (or why it has no result).
        """

    async def cancel(self, call_id: str) -> None:
        """Cancel the call (the worker cancels the ComfyUI prompt)."""

    async def get(self, key: str) -> Any:
        """The stored value, or None."""

    async def put(self, key: str, value: Any, *, if_absent: bool = False) -> bool:
        """Store ``value``; with ``if_absent`` only when the key is new. True if stored."""

    async def delete(self, key: str) -> None:
        """Remove the key if present."""


class ModalBackend:
    """:class:`JobBackend` on Modal: a spawnable function plus a ``modal.Dict``.

    Args:
        function: The worker's method (``Worker().run_job``) or any Modal Function.
        store: A ``modal.Dict`` shared by the web front and the GPU workers.
    """

    def __init__(self, function: Any, store: Any) -> None:
        self.function = function
        self.store = store

    async def spawn(self, payload: dict[str, Any]) -> str:
        """``function.spawn(payload)``'s call id."""
        call = await self.function.spawn.aio(payload)
        return str(call.object_id)

    async def poll(self, call_id: str, timeout: float) -> dict[str, Any] | None:
        """``FunctionCall.from_id(call_id).get(timeout)``; None while it runs."""
        import modal

        call = modal.FunctionCall.from_id(call_id)
        try:
            result = await call.get.aio(timeout=timeout)
        except TimeoutError:  # the builtin one: "not finished yet" (expiry is modal's own)
            return None
        return dict(result)

    async def cancel(self, call_id: str) -> None:
        """``FunctionCall.from_id(call_id).cancel()``."""
        import modal

        await modal.FunctionCall.from_id(call_id).cancel.aio()

    async def get(self, key: str) -> Any:
        """``Dict.get``."""
        return await self.store.get.aio(key)

    async def put(self, key: str, value: Any, *, if_absent: bool = False) -> bool:
        """``Dict.put`` (``skip_if_exists`` for ``if_absent``)."""
        return bool(await self.store.put.aio(key, value, skip_if_exists=if_absent))

    async def delete(self, key: str) -> None:
        """``Dict.pop`` ignoring missing keys."""
        await self.store.pop.aio(key, None)


def job_key(job_id: str) -> str:
    """Store key of a job's registry entry."""
    return f"job:{job_id}"


def progress_key(job_id: str) -> str:
    """Store key of a running job's live state (written by the worker)."""
    return f"progress:{job_id}"


HEALTH_KEY = "worker:health"
"""Key under which GPU workers record their last successful ComfyUI health check."""


class ModalExecutor(Executor):
    """Runs each job as a spawned call of the GPU worker; state lives in the backend.

    Any number of web containers can serve the same jobs: the registry entry
    (``job:<id>`` -> call id, workflow, seed, created_at, cancelled) and the worker's
    progress (``progress:<id>``) are in the shared store, the result is the call's
    return value (kept by Modal for a week). Finished views are cached in memory.

    Args:
        backend: :class:`ModalBackend` (or another :class:`JobBackend`).
        job_timeout: Seconds the worker gives one job (sent with the job).
        health_ttl: Seconds a worker's health report counts as "reachable".
    """

    def __init__(
        self,
        backend: JobBackend,
        *,
        job_timeout: float = DEFAULT_JOB_TIMEOUT,
        health_ttl: float = 900.0,
        cache_size: int = 256,
    ) -> None:
        self.backend = backend
        self.job_timeout = job_timeout
        self.health_ttl = health_ttl
        self._final: collections.OrderedDict[str, JobView] = collections.OrderedDict()
        self._cache_size = cache_size

    def __repr__(self) -> str:
        return f"ModalExecutor({self.backend!r})"

    async def create(
        self, request: JobRequest, *, job_id: str | None = None
    ) -> tuple[JobView, bool]:
        """Register the job, then spawn the worker; see :meth:`Executor.create`."""
        jid = job_id or str(uuid.uuid4())
        now = time.time()
        entry = {
            "id": jid,
            "workflow": request.workflow,
            "seed": request.seed,
            "created_at": now,
            "call_id": None,
            "cancelled": False,
        }
        if not await self.backend.put(job_key(jid), entry, if_absent=True):
            existing = await self.get(jid)
            if existing is not None:
                return existing, False
        payload = {
            "job_id": jid,
            "graph": request.graph,
            "images": dict(request.images),
            "workflow": request.workflow,
            "seed": request.seed,
            "created_at": now,
            "timeout": self.job_timeout,
        }
        try:
            entry["call_id"] = await self.backend.spawn(payload)
        except Exception as exc:
            with contextlib.suppress(Exception):
                await self.backend.delete(job_key(jid))
            raise BackendUnavailableError(f"Could not start the GPU worker: {exc}") from exc
        current = await self.backend.get(job_key(jid)) or {}
        if current.get("cancelled"):  # cancelled (elsewhere) while the spawn was in flight
            entry["cancelled"] = True
            with contextlib.suppress(Exception):
                await self.backend.cancel(str(entry["call_id"]))
        await self.backend.put(job_key(jid), entry)
        log.info("job %s spawned as %s", jid, entry["call_id"])
        return self._entry_view(entry, status="queued"), True

    def _entry_view(self, entry: Mapping[str, Any], **kw: Any) -> JobView:
        return make_view(
            str(entry["id"]),
            workflow=entry.get("workflow"),
            seed=entry.get("seed"),
            created_at=float(entry.get("created_at") or 0.0),
            **kw,
        )

    def _remember(self, view: JobView) -> JobView:
        self._final[view["id"]] = view
        self._final.move_to_end(view["id"])
        while len(self._final) > self._cache_size:
            self._final.popitem(last=False)
        return view

    async def _view(self, entry: Mapping[str, Any], timeout: float) -> JobView:
        call_id = entry.get("call_id")
        if not call_id:
            return self._entry_view(entry, status="queued")
        try:
            result = await self.backend.poll(str(call_id), timeout)
        except Exception as exc:
            if entry.get("cancelled"):
                return self._remember(
                    self._entry_view(
                        entry, status="cancelled", error=_cancelled_error(), updated_at=time.time()
                    )
                )
            error = error_view(exc)
            error["type"] = "worker_error"
            error["message"] = (
                f"The GPU worker did not return a result: {type(exc).__name__}: {exc}"
            )
            return self._remember(
                self._entry_view(entry, status="failed", error=error, updated_at=time.time())
            )
        if result is None:
            state = await self.backend.get(progress_key(str(entry["id"]))) or {}
            status = "cancelled" if entry.get("cancelled") else str(state.get("status") or "queued")
            if status not in ("queued", "running", "cancelled"):
                status = "running"
            return self._entry_view(
                entry,
                status=status,
                queue_position=state.get("queue_position"),
                progress=state.get("progress"),
                error=_cancelled_error() if status == "cancelled" else None,
                updated_at=state.get("updated_at"),
            )
        status = str(result.get("status"))
        if status not in _TERMINAL:
            status = "failed"
        return self._remember(
            self._entry_view(
                entry,
                status=status,
                error=result.get("error"),
                images=result.get("images"),
                timings=result.get("timings"),
                updated_at=result.get("finished_at") or time.time(),
            )
        )

    async def get(self, job_id: str) -> JobView | None:
        """See :meth:`Executor.get`."""
        if job_id in self._final:
            return self._final[job_id]
        entry = await self.backend.get(job_key(job_id))
        if entry is None:
            return None
        return await self._view(entry, 0)

    async def wait(self, job_id: str, timeout: float) -> JobView | None:
        """See :meth:`Executor.wait` (one long poll of the function call)."""
        if job_id in self._final:
            return self._final[job_id]
        entry = await self.backend.get(job_key(job_id))
        if entry is None:
            return None
        end = time.monotonic() + max(0.0, timeout)
        while True:
            view = await self._view(entry, max(0.0, end - time.monotonic()))
            if view["status"] in _TERMINAL or time.monotonic() >= end:
                return view
            if not entry.get("call_id"):  # spawn still in flight elsewhere
                await asyncio.sleep(min(0.5, max(0.0, end - time.monotonic())))
                entry = await self.backend.get(job_key(job_id)) or entry

    async def cancel(self, job_id: str) -> JobView | None:
        """Cancel the function call; the worker interrupts ComfyUI. See :meth:`Executor.cancel`."""
        view = await self.get(job_id)
        if view is None or view["status"] in _TERMINAL:
            return view
        entry = dict(await self.backend.get(job_key(job_id)) or {})
        if not entry:
            return view
        entry["cancelled"] = True
        await self.backend.put(job_key(job_id), entry)
        if entry.get("call_id"):
            with contextlib.suppress(Exception):
                await self.backend.cancel(str(entry["call_id"]))
            final = await self._view(entry, _CANCEL_WAIT)
            if final["status"] in _TERMINAL:
                return final
        return self._entry_view(
            entry, status="cancelled", error=_cancelled_error(), updated_at=time.time()
        )

    async def backend_info(self) -> dict[str, Any]:
        """Reachable when a GPU worker reported a healthy ComfyUI within ``health_ttl``."""
        try:
            health = await self.backend.get(HEALTH_KEY) or {}
        except Exception:
            return {"reachable": False, "version": None}
        at = float(health.get("at") or 0.0)
        return {
            "reachable": time.time() - at < self.health_ttl,
            "version": health.get("version"),
        }


# -- the GPU worker's side ------------------------------------------------------------------------


class _Publisher:
    """Coalesces job updates and writes at most one every ``interval`` seconds."""

    def __init__(
        self, publish: Callable[[dict[str, Any]], Awaitable[None]], interval: float
    ) -> None:
        self._publish = publish
        self._interval = interval
        self._state: dict[str, Any] = {}
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __call__(self, update: Update) -> None:
        self._state.update(update)
        self._state["updated_at"] = time.time()
        self._dirty.set()
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    async def _flush(self) -> None:
        self._dirty.clear()
        try:
            await self._publish(dict(self._state))
        except Exception as exc:  # progress is best effort; the result is what counts
            log.warning("publishing progress failed: %s", exc)

    async def _loop(self) -> None:
        while True:
            await self._dirty.wait()
            await self._flush()
            await asyncio.sleep(self._interval)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def worker_run(
    provider: AsyncProvider,
    payload: Mapping[str, Any],
    *,
    publish: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    publish_interval: float = 0.5,
) -> dict[str, Any]:
    """Run one spawned job (the payload :class:`ModalExecutor` sends); return its result.

    ``publish`` receives the job's live state (``status``, ``queue_position``,
    ``progress``), at most every ``publish_interval`` seconds. The result is the
    terminal part of a JobView plus ``finished_at``.
    """
    request = JobRequest(
        graph=dict(payload["graph"]),
        images={str(k): bytes(v) for k, v in (payload.get("images") or {}).items()},
        workflow=payload.get("workflow"),
        seed=payload.get("seed"),
    )
    publisher = _Publisher(publish, publish_interval) if publish is not None else None
    try:
        result = await run_job(
            provider,
            request,
            created_at=float(payload.get("created_at") or time.time()),
            timeout=payload.get("timeout", DEFAULT_JOB_TIMEOUT),
            on_update=publisher,
        )
    finally:
        if publisher is not None:
            await publisher.aclose()
    result["finished_at"] = time.time()
    log.info("job %s %s", payload.get("job_id"), result["status"])
    return result


def job_state(view: Mapping[str, Any]) -> JobState:
    """The :class:`~ryla_gen.types.JobState` of a JobView."""
    return JobState(view["status"])
