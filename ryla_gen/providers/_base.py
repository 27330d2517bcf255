"""The contract every provider implements, and what is derived from it once.

A provider knows how to put one :class:`~ryla_gen.types.JobRequest` on its GPUs and
follow it. It implements four coroutines (``submit``, ``status``, ``cancel``, ``aclose``)
and one async generator (``_follow``); waiting, deadlines and the final cancel on
timeout are written once here.
"""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ryla_gen._http import Deadline
from ryla_gen.errors import JobCancelledError, JobTimeoutError
from ryla_gen.types import (
    Cancelled,
    Completed,
    Failed,
    GenerationResult,
    JobEvent,
    JobRequest,
    JobStatus,
)

__all__ = ["AsyncProvider", "SubmittedJob"]


@dataclass
class SubmittedJob:
    """A job this process submitted (or re-attached to by id)."""

    id: str
    request: JobRequest | None = None
    submitted_at: float = field(default_factory=time.time)
    """Wall-clock time of the submit (seconds since the epoch)."""
    started: float = field(default_factory=time.monotonic)
    upload_seconds: float = 0.0


class AsyncProvider(abc.ABC):
    """Runs jobs somewhere. Subclasses implement the abstract methods; see their docs."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def submit(self, request: JobRequest, *, deadline: Deadline) -> SubmittedJob:
        """Upload the request's images and queue its graph; return the job.

        Must not run the job twice when a request is retried.
        """

    @abc.abstractmethod
    async def status(self, job_id: str) -> JobStatus:
        """The job's current state (one request; no waiting)."""

    @abc.abstractmethod
    async def cancel(self, job_id: str) -> None:
        """Stop the job: remove it from the queue, or interrupt it if it runs.

        Cancelling a finished or unknown job is not an error.
        """

    @abc.abstractmethod
    def _follow(self, job: SubmittedJob, deadline: Deadline) -> AsyncGenerator[JobEvent, None]:
        """Yield the job's events, ending with exactly one Completed, Failed or Cancelled.

        May stop early when ``deadline`` expires; the caller then handles the timeout.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections and background threads."""

    async def info(self) -> dict[str, Any]:
        """What the provider reports about itself (versions, queue, ...)."""
        return {"provider": self.name}

    async def available_models(self) -> dict[str, list[str]] | None:
        """Model files the provider has, by ComfyUI models folder; None if it cannot tell."""
        return None

    # -- derived, written once -----------------------------------------------------------

    async def events(self, job: SubmittedJob, deadline: Deadline) -> AsyncGenerator[JobEvent, None]:
        """The job's events until a terminal one; enforces ``deadline``.

        When the deadline passes, the remote job is cancelled (so it stops using a GPU)
        and :class:`JobTimeoutError` is raised.
        """
        import asyncio

        agen = self._follow(job, deadline)
        try:
            while True:
                left = deadline.remaining()
                try:
                    if left is None:
                        event = await agen.__anext__()
                    else:
                        event = await asyncio.wait_for(agen.__anext__(), timeout=left)
                except StopAsyncIteration:
                    break
                except (asyncio.TimeoutError, JobTimeoutError):
                    await self._timeout(job, deadline)
                    raise AssertionError("unreachable") from None
                yield event
                if isinstance(event, Completed | Failed | Cancelled):
                    return
            if deadline.expired:
                await self._timeout(job, deadline)
            raise JobCancelledError(
                f"{self.name} stopped reporting on job {job.id} before it finished.",
                job_id=job.id,
            )
        finally:
            await agen.aclose()

    async def _timeout(self, job: SubmittedJob, deadline: Deadline) -> None:
        cancelled = False
        try:
            await self.cancel(job.id)
            cancelled = True
        except Exception:  # the timeout is the error to report; cancel is best effort
            cancelled = False
        raise JobTimeoutError(
            f"Job {job.id} did not finish within {deadline.seconds} s on {self.name}"
            + ("; it was cancelled." if cancelled else "; cancelling it failed, it may still run.")
            + " Raise the timeout (timeout= or RYLA_GEN_TIMEOUT) for long jobs.",
            job_id=job.id,
            remote_cancelled=cancelled,
        )

    async def wait(self, job: SubmittedJob, deadline: Deadline) -> GenerationResult:
        """Follow the job to its end: the result, or the job's typed error raised."""
        async for event in self.events(job, deadline):
            if isinstance(event, Completed):
                return event.result
            if isinstance(event, Failed):
                raise event.error
            if isinstance(event, Cancelled):
                raise JobCancelledError(f"Job {job.id} was cancelled.", job_id=job.id)
        raise AssertionError("unreachable")  # pragma: no cover
