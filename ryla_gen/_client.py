"""AsyncClient: the one implementation. Client (in _sync.py) wraps it for blocking code."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from ryla_gen._http import Deadline
from ryla_gen._prepare import Work, prepare
from ryla_gen._settings import Settings
from ryla_gen.errors import JobCancelledError
from ryla_gen.providers import AsyncProvider, SubmittedJob, create_provider
from ryla_gen.types import (
    Cancelled,
    Completed,
    Failed,
    GenerationResult,
    JobEvent,
    JobStatus,
)

__all__ = ["NOT_GIVEN", "AsyncClient", "AsyncJob"]


class _NotGiven:
    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __bool__(self) -> bool:
        return False


NOT_GIVEN: Any = _NotGiven()
"""Marks ``timeout=`` as not passed (``None`` means "no limit")."""


class AsyncJob:
    """A submitted job. Follow it with :meth:`events`, or just :meth:`wait` for the result."""

    def __init__(self, client: AsyncClient, job: SubmittedJob) -> None:
        self._client = client
        self._job = job
        self._outcome: GenerationResult | BaseException | None = None

    @property
    def id(self) -> str:
        """The job's id at the provider (ComfyUI prompt id, RunPod job id, ...)."""
        return self._job.id

    @property
    def provider(self) -> str:
        """The name of the provider running the job."""
        return self._client.provider.name

    def __repr__(self) -> str:
        return f"AsyncJob(id={self.id!r}, provider={self.provider!r})"

    async def status(self) -> JobStatus:
        """The job's state now (one request)."""
        return await self._client.provider.status(self.id)

    async def cancel(self) -> None:
        """Cancel the job: dequeued if waiting, interrupted if running."""
        await self._client.provider.cancel(self.id)

    async def events(self, *, timeout: float | None = NOT_GIVEN) -> AsyncGenerator[JobEvent, None]:
        """Typed events until the job ends (Completed, Failed or Cancelled comes last).

        The deadline (``timeout``, default the client's) cancels the remote job and raises
        :class:`~ryla_gen.errors.JobTimeoutError` when it passes.
        """
        if self._outcome is not None:
            yield self._terminal_event()
            return
        deadline = Deadline(self._client._timeout(timeout))
        async for event in self._client.provider.events(self._job, deadline):
            if isinstance(event, Completed):
                self._outcome = event.result
            elif isinstance(event, Failed):
                self._outcome = event.error
            elif isinstance(event, Cancelled):
                self._outcome = JobCancelledError(f"Job {self.id} was cancelled.", job_id=self.id)
            yield event

    async def wait(self, *, timeout: float | None = NOT_GIVEN) -> GenerationResult:
        """The job's result; raises its typed error if it failed, was cancelled or timed out."""
        if self._outcome is None:
            async for _ in self.events(timeout=timeout):
                pass
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        assert self._outcome is not None
        return self._outcome

    def _terminal_event(self) -> JobEvent:
        if isinstance(self._outcome, GenerationResult):
            return Completed(self.id, self._outcome)
        if isinstance(self._outcome, JobCancelledError):
            return Cancelled(self.id)
        assert isinstance(self._outcome, Exception)
        return Failed(self.id, self._outcome)


class AsyncClient:
    """Runs workflows on the configured provider. Async; see :class:`ryla_gen.Client`.

    Args:
        provider: ``"comfyui"``, ``"modal"``, ``"runpod"``, or a provider object.
        settings: A :class:`~ryla_gen.Settings`; otherwise built from ``**options`` over
            the ``RYLA_GEN_*`` environment (arguments win; see ``Settings`` for names).

    Example::

        async with AsyncClient("comfyui", comfyui_url="http://127.0.0.1:8188") as client:
            result = await client.generate(FluxDev(prompt="a lighthouse at dawn"))
            result.image.save("lighthouse.png")
    """

    def __init__(
        self,
        provider: str | AsyncProvider | None = None,
        *,
        settings: Settings | None = None,
        **options: Any,
    ) -> None:
        if isinstance(provider, AsyncProvider):
            self.settings = settings or Settings.load(**options)
            self.provider = provider
        else:
            self.settings = settings or Settings.load(provider=provider, **options)
            self.provider = create_provider(self.settings)

    @classmethod
    def from_env(cls, **overrides: Any) -> AsyncClient:
        """A client configured from ``RYLA_GEN_*`` variables alone (``overrides`` win)."""
        return cls(**overrides)

    def __repr__(self) -> str:
        return f"AsyncClient(provider={self.provider!r})"

    def _timeout(self, timeout: float | None) -> float | None:
        return self.settings.timeout if timeout is NOT_GIVEN else timeout

    async def submit(
        self,
        work: Work,
        *,
        images: Mapping[str, bytes] | None = None,
        timeout: float | None = NOT_GIVEN,
    ) -> AsyncJob:
        """Validate ``work``, upload its input images and queue it; returns at once.

        ``timeout`` bounds only the submit itself (uploads included).
        """
        request = prepare(work, images=images, validate=self.settings.validate_graphs)
        deadline = Deadline(self._timeout(timeout))
        job = await self.provider.submit(request, deadline=deadline)
        return AsyncJob(self, job)

    async def generate(
        self,
        work: Work,
        *,
        images: Mapping[str, bytes] | None = None,
        timeout: float | None = NOT_GIVEN,
    ) -> GenerationResult:
        """Run ``work`` and return its images. One deadline covers the whole call.

        Raises :class:`~ryla_gen.errors.GraphValidationError` before sending an invalid
        graph, :class:`~ryla_gen.errors.ModelMissingError` when the server lacks models,
        :class:`~ryla_gen.errors.JobFailedError` with the node at fault when it fails,
        :class:`~ryla_gen.errors.JobTimeoutError` (remote job cancelled) at the deadline.
        """
        t0 = time.monotonic()
        request = prepare(work, images=images, validate=self.settings.validate_graphs)
        deadline = Deadline(self._timeout(timeout))
        job = await self.provider.submit(request, deadline=deadline)
        job.started = t0
        return await self.provider.wait(job, deadline)

    def job(self, job_id: str) -> AsyncJob:
        """Re-attach to a job by id (e.g. one submitted by another process)."""
        return AsyncJob(self, SubmittedJob(id=job_id))

    async def info(self) -> dict[str, Any]:
        """What the provider reports about itself."""
        return await self.provider.info()

    async def available_models(self) -> dict[str, list[str]] | None:
        """Model files the provider has, by ComfyUI models folder (None: cannot tell)."""
        return await self.provider.available_models()

    async def aclose(self) -> None:
        """Close connections and background threads."""
        await self.provider.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
