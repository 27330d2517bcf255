"""Client: the blocking API, running AsyncClient's coroutines on one background loop.

The loop lives in a daemon thread shared by every sync client of the process. Calls
block the caller's thread only, so the sync API also works where an event loop is
already running in the calling thread (Jupyter): nothing here touches that loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator, Mapping
from typing import Any, TypeVar

from ryla_gen._client import NOT_GIVEN, AsyncClient, AsyncJob
from ryla_gen._prepare import Work
from ryla_gen._settings import Settings
from ryla_gen.providers import AsyncProvider
from ryla_gen.types import GenerationResult, JobEvent, JobStatus

__all__ = ["Client", "Job", "run_sync"]

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or not _loop.is_running():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            _thread = threading.Thread(target=run, name="ryla-gen-loop", daemon=True)
            _thread.start()
            ready.wait()
            _loop = loop
        return _loop


def run_sync(awaitable: Awaitable[T]) -> T:
    """Run ``coro`` on the background loop and block until it is done.

    Refuses to run from inside the background loop itself (that would deadlock).
    """
    loop = _background_loop()

    async def call() -> T:
        return await awaitable

    coro = call()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError(
            "The sync ryla_gen.Client was called from inside its own event loop; "
            "use ryla_gen.AsyncClient in async code."
        )
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except KeyboardInterrupt:
        future.cancel()
        raise


class Job:
    """A submitted job (blocking twin of :class:`~ryla_gen.AsyncJob`)."""

    def __init__(self, job: AsyncJob) -> None:
        self._job = job

    @property
    def id(self) -> str:
        """The job's id at the provider."""
        return self._job.id

    @property
    def provider(self) -> str:
        """The name of the provider running the job."""
        return self._job.provider

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, provider={self.provider!r})"

    def status(self) -> JobStatus:
        """The job's state now."""
        return run_sync(self._job.status())

    def cancel(self) -> None:
        """Cancel the job: dequeued if waiting, interrupted if running."""
        run_sync(self._job.cancel())

    def wait(self, timeout: float | None = NOT_GIVEN) -> GenerationResult:
        """Block until the result; raises the job's typed error."""
        return run_sync(self._job.wait(timeout=timeout))

    def events(self, timeout: float | None = NOT_GIVEN) -> Iterator[JobEvent]:
        """Typed events until the job ends (blocking iterator)."""
        agen = self._job.events(timeout=timeout)
        try:
            while True:
                try:
                    yield run_sync(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            run_sync(agen.aclose())


class Client:
    """Runs workflows on the configured provider, blocking until done.

    Same arguments and behaviour as :class:`~ryla_gen.AsyncClient`, which does the work
    on a background event loop; safe to use in Jupyter and in threads.

    Example::

        from ryla_gen import Client
        from ryla_gen.workflows import FluxDev

        with Client.from_env() as client:
            result = client.generate(FluxDev(prompt="a lighthouse at dawn"))
            result.image.save("lighthouse.png")
    """

    def __init__(
        self,
        provider: str | AsyncProvider | None = None,
        *,
        settings: Settings | None = None,
        **options: Any,
    ) -> None:
        self._async = AsyncClient(provider, settings=settings, **options)

    @classmethod
    def from_env(cls, **overrides: Any) -> Client:
        """A client configured from ``RYLA_GEN_*`` variables alone (``overrides`` win)."""
        return cls(**overrides)

    @property
    def settings(self) -> Settings:
        """The resolved settings."""
        return self._async.settings

    @property
    def provider(self) -> AsyncProvider:
        """The provider object."""
        return self._async.provider

    @property
    def aio(self) -> AsyncClient:
        """The underlying AsyncClient (only use it on ryla-gen's background loop)."""
        return self._async

    def __repr__(self) -> str:
        return f"Client(provider={self.provider!r})"

    def generate(
        self,
        work: Work,
        *,
        images: Mapping[str, bytes] | None = None,
        timeout: float | None = NOT_GIVEN,
    ) -> GenerationResult:
        """Run ``work`` and return its images (see :meth:`AsyncClient.generate`)."""
        return run_sync(self._async.generate(work, images=images, timeout=timeout))

    def submit(
        self,
        work: Work,
        *,
        images: Mapping[str, bytes] | None = None,
        timeout: float | None = NOT_GIVEN,
    ) -> Job:
        """Queue ``work`` and return its :class:`Job` at once."""
        return Job(run_sync(self._async.submit(work, images=images, timeout=timeout)))

    def job(self, job_id: str) -> Job:
        """Re-attach to a job by id."""
        return Job(self._async.job(job_id))

    def info(self) -> dict[str, Any]:
        """What the provider reports about itself."""
        return run_sync(self._async.info())

    def available_models(self) -> dict[str, list[str]] | None:
        """Model files the provider has, by ComfyUI models folder."""
        return run_sync(self._async.available_models())

    def close(self) -> None:
        """Close connections and background threads."""
        run_sync(self._async.aclose())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
