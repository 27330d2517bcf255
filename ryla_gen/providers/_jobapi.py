"""What the two polling providers (``modal`` and ``runpod``) share.

Both follow a remote job by polling one status URL. :class:`PollingProvider` writes that
loop once: it turns successive :class:`Snapshot` s into events, backs off from
``poll_interval`` to :data:`~ryla_gen._constants.MAX_POLL_INTERVAL` while nothing
changes, rides out short outages of the status URL, and stops when the deadline passes
(the base class then cancels the remote job and raises
:class:`~ryla_gen.errors.JobTimeoutError`).

Also here: base64 image decoding (with or without a ``data:`` prefix) and JSON-object
reading that turns malformed answers into :class:`~ryla_gen.errors.ProtocolError`.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import logging
import mimetypes
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import httpx

from ryla_gen._constants import MAX_POLL_INTERVAL
from ryla_gen._http import HTTP, Deadline
from ryla_gen.errors import ProtocolError, ProviderUnavailableError, RateLimitError
from ryla_gen.providers._base import AsyncProvider, SubmittedJob
from ryla_gen.types import (
    Cancelled,
    Completed,
    Failed,
    JobEvent,
    JobState,
    Progress,
    Queued,
    Started,
)

__all__ = [
    "UNREACHABLE_GRACE",
    "PollingProvider",
    "Snapshot",
    "content_type_for",
    "decode_base64_image",
    "json_object",
]

log = logging.getLogger("ryla_gen.providers")

UNREACHABLE_GRACE = 60.0
"""Seconds the status URL may stay unreachable (after HTTP's own retries) before the
follow loop gives up and raises. The job keeps running remotely meanwhile."""

Terminal = Completed | Failed | Cancelled


@dataclass(frozen=True)
class Snapshot:
    """One poll's view of a job, in provider-neutral terms.

    ``terminal`` is the final event when ``state`` is terminal (built by the provider,
    images downloaded); None otherwise.
    """

    state: JobState
    queue_position: int | None = None
    progress: tuple[int, int] | None = None
    node: str | None = None
    terminal: Terminal | None = None
    repoll_now: bool = False
    """The provider already waited (a long poll): poll again without sleeping."""


def json_object(response: httpx.Response, provider: str, what: str) -> dict[str, Any]:
    """The response's JSON body, which must be an object; else :class:`ProtocolError`."""
    data = HTTP.json(response, provider)
    if not isinstance(data, dict):
        raise ProtocolError(
            f"{provider} sent a malformed answer to {what}: expected a JSON object, "
            f"got {type(data).__name__} {str(data)[:200]!r}",
            status_code=response.status_code,
            provider=provider,
        )
    return data


def decode_base64_image(data: Any, *, provider: str, filename: str) -> bytes:
    """Decode a base64 image string, with or without a ``data:...;base64,`` prefix.

    Raises :class:`ProtocolError` for anything that is not valid, non-empty base64.
    """
    if not isinstance(data, str):
        raise ProtocolError(
            f"{provider} sent image {filename!r} without base64 data (got {type(data).__name__}).",
            provider=provider,
        )
    text = data.strip()
    if text.startswith("data:"):
        _, sep, text = text.partition(",")
        if not sep:
            raise ProtocolError(
                f"{provider} sent image {filename!r} as a data URI without a comma.",
                provider=provider,
            )
    text = "".join(text.split())  # tolerate line-wrapped base64
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(
            f"{provider} sent image {filename!r} with invalid base64 data "
            f"({exc}); the answer may be truncated.",
            provider=provider,
        ) from exc
    if not raw:
        raise ProtocolError(f"{provider} sent an empty image {filename!r}.", provider=provider)
    return raw


def content_type_for(filename: str, default: str = "image/png") -> str:
    """The MIME type a file name suggests (``default`` when it suggests none)."""
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or default


async def _sleep(seconds: float) -> None:
    """``asyncio.sleep`` (one name, so tests can observe the backoff without waiting)."""
    await asyncio.sleep(seconds)


class PollingProvider(AsyncProvider):
    """A provider that follows jobs by polling: subclasses implement :meth:`_poll`.

    Subclasses set ``self.poll_interval`` (seconds before the second poll).
    """

    poll_interval: float

    @abc.abstractmethod
    async def _poll(self, job: SubmittedJob, deadline: Deadline) -> Snapshot:
        """Read the job's state once; when terminal, build the final event too."""

    async def _follow(
        self, job: SubmittedJob, deadline: Deadline
    ) -> AsyncGenerator[JobEvent, None]:
        """Poll until a terminal snapshot; yield Queued/Started/Progress on changes."""
        base = max(self.poll_interval, 0.0)
        ceiling = max(MAX_POLL_INTERVAL, base)
        interval = base
        last_position: int | None = None
        queued_sent = False
        started = False
        last_progress: tuple[int, int, str | None] | None = None
        unreachable_since: float | None = None
        while True:
            if deadline.expired:
                return
            try:
                snap = await self._poll(job, deadline)
            except (ProviderUnavailableError, RateLimitError) as exc:
                # HTTP already retried; the job itself is unaffected. Keep trying a while.
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > UNREACHABLE_GRACE:
                    raise
                log.debug("polling job %s failed (%s); trying again", job.id, exc)
                interval = min(interval * 2 or 0.1, ceiling)
                await _sleep(deadline.cap(interval))
                continue
            unreachable_since = None
            changed = False
            if snap.state is JobState.QUEUED:
                if not queued_sent or snap.queue_position != last_position:
                    queued_sent = True
                    last_position = snap.queue_position
                    changed = True
                    yield Queued(job_id=job.id, position=snap.queue_position)
            elif snap.state is JobState.RUNNING:
                if not started:
                    started = True
                    changed = True
                    yield Started(job.id)
                if snap.progress is not None:
                    current = (snap.progress[0], snap.progress[1], snap.node)
                    if current != last_progress:
                        last_progress = current
                        changed = True
                        yield Progress(job.id, current[0], current[1], snap.node)
            else:
                terminal = snap.terminal
                if terminal is None:  # pragma: no cover - providers always build it
                    raise ProtocolError(
                        f"{self.name}: job {job.id} ended ({snap.state.value}) "
                        "without a final event.",
                        provider=self.name,
                    )
                if isinstance(terminal, Completed) and not started:
                    yield Started(job.id)
                yield terminal
                return
            if snap.repoll_now:
                interval = base
                continue
            interval = base if changed else min(max(interval * 1.5, base), ceiling)
            await _sleep(deadline.cap(interval))
