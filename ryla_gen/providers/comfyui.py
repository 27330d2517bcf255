"""The ComfyUI driver: any ComfyUI server over HTTP and its websocket.

This one implementation serves the ``comfyui`` provider and runs inside the Modal app's
GPU container too.

How it stays correct when things go wrong:

* **Submit once.** Every job gets a client-chosen ``prompt_id``. A submit whose answer
  was lost is only re-sent after ``/history`` and ``/queue`` show the id is unknown.
* **History is the truth.** Websocket messages are hints (progress, "it may be done");
  outcomes are read from ``/history/{id}``. When the websocket drops or goes silent the
  driver keeps polling, so a job is never lost or left hanging.
* **One deadline** covers uploads, queueing, execution and downloads.
* **Per-job cancel**: a pending job is deleted from the queue, a running one is
  interrupted by id (other users' jobs are left alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from ryla_gen._constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_REQUEST_TIMEOUT,
    MAX_POLL_INTERVAL,
)
from ryla_gen._http import HTTP, Deadline, RetryPolicy
from ryla_gen.errors import (
    APIError,
    GraphValidationError,
    JobFailedError,
    ModelMissingError,
    NodeError,
    ProtocolError,
    ProviderUnavailableError,
)
from ryla_gen.models import file_folder
from ryla_gen.providers._base import AsyncProvider, SubmittedJob
from ryla_gen.types import (
    Cancelled,
    Completed,
    Failed,
    GenerationResult,
    JobEvent,
    JobRequest,
    JobState,
    JobStatus,
    NodeExecuting,
    NodeFinished,
    OutputImage,
    Progress,
    Queued,
    Started,
    Timings,
)

__all__ = ["ComfyUIProvider", "node_errors_from_response"]

log = logging.getLogger("ryla_gen.comfyui")

#: Re-reads (0.1 s apart) of a history entry that has neither outputs nor an error.
_MAX_INCOMPLETE_READS = 15

#: Seconds without any sign of life from a job's server before it is presumed dead.
_BACKEND_DEAD_AFTER = 20.0


def node_errors_from_response(body: Any) -> GraphValidationError:
    """Turn ComfyUI's 400 answer to ``POST /prompt`` into a :class:`GraphValidationError`.

    Keeps the server's top-level message and every per-input error with its node.
    """
    if not isinstance(body, Mapping):
        return GraphValidationError([], server_message=f"ComfyUI rejected the prompt: {body}")
    err = body.get("error") or {}
    if isinstance(err, str):
        err = {"message": err}
    top = str(err.get("message") or "ComfyUI rejected the prompt")
    details = err.get("details")
    if details:
        top = f"{top}: {details}"
    errors: list[NodeError] = []
    node_errors = body.get("node_errors") or {}
    if isinstance(node_errors, Mapping):
        for node_id, entry in node_errors.items():
            if not isinstance(entry, Mapping):
                continue
            class_type = str(entry.get("class_type") or "")
            for e in entry.get("errors") or []:
                if not isinstance(e, Mapping):
                    continue
                extra = e.get("extra_info") or {}
                errors.append(
                    NodeError(
                        node_id=str(node_id),
                        class_type=class_type,
                        input_name=(
                            extra.get("input_name") if isinstance(extra, Mapping) else None
                        ),
                        message=str(e.get("message") or e.get("type") or "invalid"),
                        type=str(e.get("type") or "invalid"),
                        details=str(e.get("details") or ""),
                    )
                )
    return GraphValidationError(errors, server_message=top, error_type=err.get("type"))


def _missing_files(exc: GraphValidationError, graph: Mapping[str, Any]) -> list[str] | None:
    """If every error is a file name the server lacks, the ``folder/name`` of each."""
    if not exc.errors:
        return None
    files = []
    for e in exc.errors:
        node = graph.get(e.node_id, {})
        folder = file_folder(str(node.get("class_type")), e.input_name or "")
        if e.type != "value_not_in_list" or folder is None:
            return None
        files.append(f"{folder}/{node.get('inputs', {}).get(e.input_name)}")
    return files


class _WebSocket:
    """A websocket-client connection in a daemon thread, feeding per-prompt queues.

    Reconnects with backoff while the provider is open. ``healthy`` is False while
    disconnected, which makes waiting jobs poll more often.
    """

    def __init__(self, url: str, client_id: str, headers: Mapping[str, str]) -> None:
        parts = urlsplit(url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = parts.path.rstrip("/") + "/ws"
        self.url = urlunsplit((scheme, parts.netloc, path, f"clientId={client_id}", ""))
        self.headers = [f"{k}: {v}" for k, v in headers.items()]
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.connected = threading.Event()
        self.closed = threading.Event()
        self.last_message = time.monotonic()
        self.queue_remaining: int | None = None
        self._thread: threading.Thread | None = None
        self._ws: Any = None
        self._lock = threading.Lock()

    @property
    def healthy(self) -> bool:
        return self.connected.is_set()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self.loop = loop
            self._thread = threading.Thread(
                target=self._run, name="ryla-gen-comfyui-ws", daemon=True
            )
            self._thread.start()

    def drop(self) -> None:
        """Cut the current connection (it reconnects); used by tests and on silence.

        Never blocks: websocket-client's ``close()`` waits for the reader thread's lock
        and for the peer's close reply, which a silent peer never sends. Shutting the
        socket down wakes the reader, which then closes the connection itself.
        """
        ws = self._ws
        sock = getattr(ws, "sock", None) if ws is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed.set()
        self.drop()

    def _run(self) -> None:
        import websocket  # websocket-client

        backoff = 0.5
        while not self.closed.is_set():
            try:
                ws = websocket.create_connection(self.url, timeout=10, header=self.headers)
            except Exception as exc:
                log.debug("websocket connect failed: %s", exc)
                self.closed.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self._ws = ws
            self.connected.set()
            backoff = 0.5
            try:
                ws.settimeout(30)
                while not self.closed.is_set():
                    try:
                        frame = ws.recv()
                    except websocket.WebSocketTimeoutException:
                        continue
                    if not frame:
                        break
                    self.last_message = time.monotonic()
                    if isinstance(frame, bytes):
                        continue  # binary previews: not used
                    self._dispatch(frame)
            except Exception as exc:
                log.debug("websocket dropped: %s", exc)
            finally:
                self.connected.clear()
                self._ws = None
                with contextlib.suppress(Exception):
                    ws.close()

    def _dispatch(self, frame: str) -> None:
        try:
            msg = json.loads(frame)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        data = msg.get("data") or {}
        if not isinstance(data, dict):
            return
        if msg.get("type") == "status":
            with contextlib.suppress(Exception):
                self.queue_remaining = int(data["status"]["exec_info"]["queue_remaining"])
            return
        pid = data.get("prompt_id")
        queue = self.queues.get(pid) if isinstance(pid, str) else None
        if queue is not None and self.loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed
                self.loop.call_soon_threadsafe(queue.put_nowait, msg)


class ComfyUIProvider(AsyncProvider):
    """Runs jobs on one ComfyUI server.

    Args:
        url: The server's base URL, e.g. ``http://127.0.0.1:8188``.
        headers: Extra HTTP headers (for a ComfyUI behind an authenticating proxy).
        use_websocket: Follow progress on ``/ws``. Without it the driver only polls.
        poll_interval: Seconds between ``/history`` polls while the websocket is down.
        retry: Retry policy for safe requests.
        http_client: An ``httpx.AsyncClient`` to use (tests inject transports this way).
        graph_transform: Applied to every graph before it is queued (a copy, never the
            request's own graph); a GPU worker's speed options use it
            (``ryla_gen_modal.tuning``). Progress, errors and the result's ``graph``
            refer to the transformed graph, the one ComfyUI runs.
    """

    name: ClassVar[str] = "comfyui"

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        use_websocket: bool = True,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        retry: RetryPolicy | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        http_client: httpx.AsyncClient | None = None,
        graph_transform: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.graph_transform = graph_transform
        self.client_id = uuid.uuid4().hex
        self.poll_interval = poll_interval
        self.http = HTTP(
            self.url,
            provider=self.name,
            headers=headers,
            retry=retry,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            client=http_client,
        )
        self._ws = _WebSocket(self.url, self.client_id, headers or {}) if use_websocket else None
        self._cancelled: set[str] = set()  # jobs this provider removed from the queue

    def __repr__(self) -> str:
        return f"ComfyUIProvider(url={self.url!r})"

    # -- contract ----------------------------------------------------------------------

    async def submit(self, request: JobRequest, *, deadline: Deadline) -> SubmittedJob:
        """Upload input images, then queue the graph under a fresh client-chosen id."""
        if self.graph_transform is not None:
            # The job keeps the graph ComfyUI runs: progress, errors and the result's
            # ``graph`` then name the same nodes ComfyUI does. The caller's request is
            # left as it was.
            transformed = self.graph_transform(copy.deepcopy(dict(request.graph)))
            request = dataclasses.replace(request, graph=transformed)
        t0 = time.monotonic()
        for name, data in request.images.items():
            await self.upload_image(name, data, deadline=deadline)
        upload = time.monotonic() - t0
        if self._ws is not None:
            self._ws.start(asyncio.get_running_loop())
            # Give a fresh connection a moment so the first messages are not missed;
            # history polling covers anything that is.
            if not self._ws.healthy:
                await asyncio.to_thread(self._ws.connected.wait, deadline.cap(2.0))
        prompt_id = str(uuid.uuid4())
        job = SubmittedJob(id=prompt_id, request=request, upload_seconds=upload)
        if self._ws is not None:
            self._ws.queues[prompt_id] = asyncio.Queue()
        try:
            await self._queue_prompt(prompt_id, request.graph, deadline)
        except BaseException:
            if self._ws is not None:
                self._ws.queues.pop(prompt_id, None)
            raise
        job.submitted_at = time.time()
        return job

    async def _queue_prompt(
        self, prompt_id: str, graph: Mapping[str, Any], deadline: Deadline
    ) -> None:
        body = {"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id}
        attempts = self.http.retry.max_retries + 1
        last: Exception | None = None
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                # The earlier try may have reached the server: only re-send if it did not.
                try:
                    if await self._known(prompt_id, deadline):
                        return
                except ProviderUnavailableError as exc:
                    last = exc
                    await asyncio.sleep(deadline.cap(self.http.retry.delay(attempt)))
                    continue
            try:
                r = await self.http.request(
                    "POST", "/prompt", json=body, idempotent=False, deadline=deadline, ok=(400,)
                )
            except ProviderUnavailableError as exc:
                last = exc
                if deadline.expired:
                    break
                await asyncio.sleep(deadline.cap(self.http.retry.delay(attempt)))
                continue
            if r.status_code == 400:
                err = node_errors_from_response(HTTP.json(r, self.name))
                files = _missing_files(err, graph)
                if files:
                    raise ModelMissingError(files, provider=self.name) from err
                raise err
            answer = HTTP.json(r, self.name)
            if isinstance(answer, Mapping) and answer.get("node_errors"):
                # ComfyUI queues a prompt when any one output validates and drops the
                # others silently. Half a job is not what was asked for: take it back.
                with contextlib.suppress(APIError):
                    await self.http.request(
                        "POST",
                        "/queue",
                        json={"delete": [prompt_id]},
                        idempotent=True,
                        deadline=deadline,
                    )
                    await self.http.request(
                        "POST",
                        "/interrupt",
                        json={"prompt_id": prompt_id},
                        idempotent=True,
                        deadline=deadline,
                    )
                raise node_errors_from_response(answer)
            return
        assert last is not None
        raise last

    async def _known(self, prompt_id: str, deadline: Deadline) -> bool:
        """True if the server has the prompt in its history or queue."""
        if await self._history(prompt_id, deadline) is not None:
            return True
        state, _ = await self._queue_state(prompt_id, deadline)
        return state is not None

    async def status(self, job_id: str) -> JobStatus:
        """The job's state from ``/history`` and ``/queue``."""
        deadline = Deadline(self.http.request_timeout)
        entry = await self._history(job_id, deadline)
        if entry is not None:
            return _status_from_history(job_id, entry)
        state, position = await self._queue_state(job_id, deadline)
        if state is None:
            # History may have been written between the two reads.
            entry = await self._history(job_id, deadline)
            if entry is not None:
                return _status_from_history(job_id, entry)
            if job_id in self._cancelled:
                return JobStatus(id=job_id, state=JobState.CANCELLED)
            raise _unknown_job(job_id)
        return JobStatus(id=job_id, state=state, queue_position=position)

    async def cancel(self, job_id: str) -> None:
        """Delete the job from the queue if pending; interrupt it (only it) if running."""
        deadline = Deadline(self.http.request_timeout)
        state, _ = await self._queue_state(job_id, deadline)
        if state is JobState.QUEUED:
            self._cancelled.add(job_id)
            await self.http.request(
                "POST", "/queue", json={"delete": [job_id]}, idempotent=True, deadline=deadline
            )
            # It may have started between the two calls.
            state, _ = await self._queue_state(job_id, deadline)
        if state is JobState.RUNNING:
            await self.http.request(
                "POST",
                "/interrupt",
                json={"prompt_id": job_id},
                idempotent=True,
                deadline=deadline,
            )

    async def aclose(self) -> None:
        """Stop the websocket thread and close HTTP connections."""
        if self._ws is not None:
            self._ws.close()
        await self.http.aclose()

    # -- following a job -------------------------------------------------------------------

    async def _follow(
        self, job: SubmittedJob, deadline: Deadline
    ) -> AsyncGenerator[JobEvent, None]:
        pid = job.id
        ws = self._ws
        queue = ws.queues.setdefault(pid, asyncio.Queue()) if ws is not None else None
        started = False
        hinted_done = False
        interval = self.poll_interval
        # With a live websocket its messages say when to look; poll soon anyway in case
        # they were missed. Without one, poll at once: the job may be done already.
        next_poll = time.monotonic() + (1.0 if ws is not None and ws.healthy else 0.0)
        last_alive = time.monotonic()
        checks_without_trace = 0
        incomplete_reads = 0
        graph = job.request.graph if job.request else {}
        class_types = {
            k: str(v.get("class_type")) for k, v in graph.items() if isinstance(v, Mapping)
        }

        def hints(msg: Mapping[str, Any]) -> list[JobEvent]:
            nonlocal started, hinted_done, last_alive
            last_alive = time.monotonic()
            events: list[JobEvent] = []
            for event, done_hint in _translate(pid, msg, class_types):
                hinted_done = hinted_done or done_hint
                if isinstance(event, Started):
                    if started:
                        continue
                    started = True
                if event is not None:
                    events.append(event)
            return events

        yield Queued(job_id=pid)
        try:
            while True:
                # 1. Websocket hints, when connected.
                wait_for = max(0.0, next_poll - time.monotonic())
                if queue is not None:
                    try:
                        msg = await asyncio.wait_for(queue.get(), timeout=deadline.cap(wait_for))
                    except asyncio.TimeoutError:
                        msg = None
                    if msg is not None:
                        for event in hints(msg):
                            yield event
                        if not hinted_done:
                            continue
                else:
                    await asyncio.sleep(deadline.cap(wait_for))
                if deadline.expired:
                    return
                # 2. History is the truth.
                try:
                    entry = await self._history(pid, deadline)
                except ProviderUnavailableError as exc:
                    if time.monotonic() - last_alive > _BACKEND_DEAD_AFTER:
                        yield Failed(pid, _backend_died(pid, str(exc)))
                        return
                    next_poll = time.monotonic() + interval
                    continue
                last_alive = time.monotonic()
                if entry is not None:
                    terminal = await self._finish(job, entry, deadline)
                    if terminal is not None:
                        while queue is not None and not queue.empty():
                            for event in hints(queue.get_nowait()):
                                yield event
                        if isinstance(terminal, Completed) and not started:
                            yield Started(pid)
                        yield terminal
                        return
                    # History has the entry but not its outputs yet (a race seen on some
                    # builds): look again soon, but not forever.
                    incomplete_reads += 1
                    if incomplete_reads > _MAX_INCOMPLETE_READS:
                        raise ProtocolError(
                            f"ComfyUI's history entry of job {pid} stayed without a final "
                            f"status or outputs for {_MAX_INCOMPLETE_READS * 0.1:.1f} s: "
                            f"{str(dict(entry))[:300]}",
                            provider=self.name,
                        )
                    next_poll = time.monotonic() + 0.1
                    continue
                if hinted_done:
                    # Done per websocket, not yet in history: re-read quickly.
                    checks_without_trace += 1
                    next_poll = time.monotonic() + min(0.05 * checks_without_trace, 1.0)
                    if checks_without_trace < 40:
                        continue
                # 3. Not in history: is it still queued or running, or was it lost?
                state, position = await self._queue_state(pid, deadline)
                if state is None:
                    entry = await self._history(pid, deadline)
                    if entry is None and pid in self._cancelled:
                        yield Cancelled(pid)
                        return
                    if entry is None:
                        yield Failed(
                            pid,
                            _backend_died(
                                pid,
                                "the job is neither queued, running nor in history "
                                "(ComfyUI restarted or the queue was cleared)",
                            ),
                        )
                        return
                    next_poll = time.monotonic()
                    continue
                if state is JobState.RUNNING and not started:
                    started = True
                    yield Started(pid)
                elif state is JobState.QUEUED and position is not None:
                    yield Queued(job_id=pid, position=position)
                healthy = ws is not None and ws.healthy
                interval = (
                    max(self.poll_interval * 5, 5.0)
                    if healthy
                    else min(interval * 1.5, MAX_POLL_INTERVAL)
                )
                next_poll = time.monotonic() + interval
        finally:
            if ws is not None:
                ws.queues.pop(pid, None)

    async def _finish(
        self, job: SubmittedJob, entry: Mapping[str, Any], deadline: Deadline
    ) -> Completed | Failed | Cancelled | None:
        """Turn a history entry into the terminal event, or None if not final yet."""
        status = _status_of(entry)
        status_str = status.get("status_str")
        messages = _messages(status)
        if status_str == "error" or "execution_error" in messages:
            if "execution_interrupted" in messages and "execution_error" not in messages:
                return Cancelled(job.id)
            return Failed(job.id, _failure(job.id, messages))
        if "execution_interrupted" in messages:
            return Cancelled(job.id)
        if not status.get("completed") and status_str != "success":
            return None
        outputs = entry.get("outputs")
        if not isinstance(outputs, Mapping):
            return None
        t0 = time.monotonic()
        images = await self._download_outputs(outputs, deadline)
        transfer = job.upload_seconds + (time.monotonic() - t0)
        start_ms = _ts(messages.get("execution_start"))
        end_ms = _ts(messages.get("execution_success"))
        execution = (end_ms - start_ms) / 1000 if start_ms and end_ms else None
        queue_wait = max(0.0, start_ms / 1000 - job.submitted_at) if start_ms else None
        graph = job.request.graph if job.request else _prompt_from_history(entry)
        result = GenerationResult(
            job_id=job.id,
            provider=self.name,
            images=images,
            graph=dict(graph),
            seed=job.request.seed if job.request else None,
            timings=Timings(
                queue_wait=queue_wait,
                execution=execution,
                transfer=transfer,
                total=time.monotonic() - job.started,
            ),
        )
        return Completed(job.id, result)

    # -- HTTP calls --------------------------------------------------------------------

    async def upload_image(
        self, name: str, data: bytes, *, deadline: Deadline | None = None
    ) -> str:
        """Upload an input image under ``name`` (overwriting: names are content-addressed)."""
        r = await self.http.request(
            "POST",
            "/upload/image",
            files={"image": (name, data, "image/png")},
            data={"overwrite": "true", "type": "input"},
            idempotent=True,
            deadline=deadline,
        )
        answer = HTTP.json(r, self.name)
        if not isinstance(answer, Mapping) or "name" not in answer:
            raise ProtocolError(
                f"ComfyUI's upload answer lacks a name: {answer!r}", provider=self.name
            )
        return str(answer["name"])

    async def _history(self, prompt_id: str, deadline: Deadline) -> Mapping[str, Any] | None:
        r = await self.http.request(
            "GET", f"/history/{prompt_id}", idempotent=True, deadline=deadline
        )
        data = HTTP.json(r, self.name)
        if not isinstance(data, Mapping):
            raise ProtocolError(
                f"ComfyUI's /history answer is not an object: {data!r}"[:300], provider=self.name
            )
        entry = data.get(prompt_id)
        return entry if isinstance(entry, Mapping) else None

    async def _queue_state(
        self, prompt_id: str, deadline: Deadline
    ) -> tuple[JobState | None, int | None]:
        r = await self.http.request("GET", "/queue", idempotent=True, deadline=deadline)
        data = HTTP.json(r, self.name)
        if not isinstance(data, Mapping):
            raise ProtocolError("ComfyUI's /queue answer is not an object", provider=self.name)
        running = _shape(data.get("queue_running"), list, "/queue's queue_running")
        for item in running:
            if _item_id(item) == prompt_id:
                return JobState.RUNNING, 0
        pending = sorted(
            (
                i
                for i in _shape(data.get("queue_pending"), list, "/queue's queue_pending")
                if isinstance(i, list) and len(i) > 1
            ),
            key=lambda i: i[0] if isinstance(i[0], int | float) else 0,
        )
        for pos, item in enumerate(pending):
            if _item_id(item) == prompt_id:
                return JobState.QUEUED, pos + len(running)
        return None, None

    async def _download_outputs(
        self, outputs: Mapping[str, Any], deadline: Deadline
    ) -> list[OutputImage]:
        refs: list[tuple[str, Mapping[str, Any]]] = []
        for node_id, out in outputs.items():
            if not isinstance(out, Mapping):
                continue
            for img in _shape(out.get("images"), list, f"outputs of node {node_id}"):
                if isinstance(img, Mapping) and img.get("type", "output") == "output":
                    refs.append((str(node_id), img))
        refs.sort(key=lambda r: (_node_sort_key(r[0]), str(r[1].get("filename"))))

        async def fetch(node_id: str, img: Mapping[str, Any]) -> OutputImage:
            params = {
                "filename": str(img.get("filename", "")),
                "subfolder": str(img.get("subfolder", "")),
                "type": str(img.get("type", "output")),
            }
            r = await self.http.request(
                "GET", "/view", params=params, idempotent=True, deadline=deadline
            )
            ctype = r.headers.get("content-type", "image/png").split(";")[0]
            if not r.content:
                raise ProtocolError(
                    f"ComfyUI sent an empty file for {params['filename']}", provider=self.name
                )
            return OutputImage(
                data=r.content, filename=params["filename"], content_type=ctype, node_id=node_id
            )

        return list(await asyncio.gather(*(fetch(n, i) for n, i in refs)))

    async def info(self) -> dict[str, Any]:
        """``/system_stats`` of the server (ComfyUI version, devices, Python, torch)."""
        r = await self.http.request("GET", "/system_stats", idempotent=True)
        data = HTTP.json(r, self.name)
        return {"provider": self.name, "url": self.url, **(data if isinstance(data, dict) else {})}

    async def object_info(self, class_type: str | None = None) -> dict[str, Any]:
        """The server's node schemas (``/object_info``), all or one class."""
        path = "/object_info" + (f"/{class_type}" if class_type else "")
        r = await self.http.request("GET", path, idempotent=True)
        data = HTTP.json(r, self.name)
        if not isinstance(data, dict):
            raise ProtocolError(
                "ComfyUI's /object_info answer is not an object", provider=self.name
            )
        return data

    async def available_models(self) -> dict[str, list[str]]:
        """Model files on the server, by models folder, from ``/models/{folder}``."""
        r = await self.http.request("GET", "/models", idempotent=True)
        folders = HTTP.json(r, self.name)
        if not isinstance(folders, list):
            raise ProtocolError("ComfyUI's /models answer is not a list", provider=self.name)
        wanted = {
            "checkpoints",
            "diffusion_models",
            "unet",
            "text_encoders",
            "clip",
            "vae",
            "loras",
            "controlnet",
            "instantid",
            "upscale_models",
            "clip_vision",
        }
        names = [str(f) for f in folders if str(f) in wanted]

        async def one(folder: str) -> tuple[str, list[str]]:
            rr = await self.http.request("GET", f"/models/{folder}", idempotent=True)
            files = HTTP.json(rr, self.name)
            return folder, [str(x) for x in files] if isinstance(files, list) else []

        return dict(await asyncio.gather(*(one(f) for f in names)))

    def drop_websocket(self) -> None:
        """Close the websocket connection now (it reconnects). For fault-injection tests."""
        if self._ws is not None:
            self._ws.drop()


# -- helpers ------------------------------------------------------------------------------


def _item_id(item: Any) -> str | None:
    return str(item[1]) if isinstance(item, list) and len(item) > 1 else None


def _node_sort_key(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 30, node_id)


def _shape(value: Any, kind: type, what: str) -> Any:
    """``value`` if it is a ``kind`` (None counts as empty); else :class:`ProtocolError`."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise ProtocolError(
            f"ComfyUI sent a malformed answer: {what} is {type(value).__name__}, "
            f"not {'an object' if kind is dict else 'a list'}: {str(value)[:200]!r}",
            provider="comfyui",
        )
    return value


def _status_of(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    status = entry.get("status")
    if isinstance(status, Mapping) or status is None:
        return status or {}
    shaped: Mapping[str, Any] = _shape(status, dict, "a history entry's status")  # raises
    return shaped


def _messages(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for m in _shape(status.get("messages"), list, "status.messages"):
        if isinstance(m, list) and len(m) == 2 and isinstance(m[1], Mapping):
            out[str(m[0])] = m[1]
    return out


def _ts(data: Mapping[str, Any] | None) -> float | None:
    if not data:
        return None
    ts = data.get("timestamp")
    return float(ts) if isinstance(ts, int | float) else None


def _failure(job_id: str, messages: Mapping[str, Mapping[str, Any]]) -> JobFailedError:
    err = messages.get("execution_error") or {}
    tb = err.get("traceback")
    return JobFailedError(
        str(err.get("exception_message") or "ComfyUI reported an error without a message").strip(),
        job_id=job_id,
        node_id=str(err["node_id"]) if err.get("node_id") is not None else None,
        node_type=str(err["node_type"]) if err.get("node_type") else None,
        exception_type=str(err["exception_type"]) if err.get("exception_type") else None,
        traceback="".join(map(str, tb)) if isinstance(tb, list) else (str(tb) if tb else None),
    )


def _backend_died(job_id: str, why: str) -> JobFailedError:
    return JobFailedError(
        f"The ComfyUI backend died or restarted while the job ran: {why}. "
        "The job did not finish; submit it again.",
        job_id=job_id,
        exception_type="BackendDied",
    )


def _unknown_job(job_id: str) -> APIError:
    from ryla_gen.errors import NotFoundError

    return NotFoundError(
        f"ComfyUI does not know job {job_id} (not queued, running or in history).",
        status_code=404,
        provider="comfyui",
    )


def _prompt_from_history(entry: Mapping[str, Any]) -> dict[str, Any]:
    prompt = entry.get("prompt")
    if isinstance(prompt, list) and len(prompt) > 2 and isinstance(prompt[2], dict):
        return prompt[2]
    return {}


def _status_from_history(job_id: str, entry: Mapping[str, Any]) -> JobStatus:
    status = _status_of(entry)
    messages = _messages(status)
    if "execution_error" in messages:
        err = messages["execution_error"]
        return JobStatus(
            id=job_id,
            state=JobState.FAILED,
            error=str(err.get("exception_message") or "error"),
            node=str(err.get("node_id")) if err.get("node_id") else None,
        )
    if "execution_interrupted" in messages:
        return JobStatus(id=job_id, state=JobState.CANCELLED)
    if status.get("status_str") == "success" or status.get("completed"):
        return JobStatus(id=job_id, state=JobState.COMPLETED)
    return JobStatus(id=job_id, state=JobState.RUNNING)


def _translate(
    pid: str, msg: Mapping[str, Any], class_types: Mapping[str, str]
) -> list[tuple[JobEvent | None, bool]]:
    """Websocket message -> [(event or None, "history may be final now")]."""
    kind = msg.get("type")
    data = msg.get("data") or {}
    if kind == "execution_start":
        return [(Started(pid), False)]
    if kind == "executing":
        node = data.get("node")
        if node is None:
            return [(None, True)]
        n = str(node)
        return [(NodeExecuting(pid, n, class_types.get(n)), False)]
    if kind == "progress":
        try:
            value, maximum = int(data["value"]), int(data["max"])
        except (KeyError, TypeError, ValueError):
            return []
        node = data.get("node")
        return [(Progress(pid, value, maximum, str(node) if node is not None else None), False)]
    if kind == "executed":
        return [(NodeFinished(pid, str(data.get("node"))), False)]
    if kind == "execution_cached":
        return [(NodeFinished(pid, str(n), cached=True), False) for n in data.get("nodes") or []]
    if kind in ("execution_success", "execution_error", "execution_interrupted"):
        return [(None, True)]
    return []
