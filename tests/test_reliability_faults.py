"""Fault injection: backends that die, websockets that drop or go silent, flaky HTTP,
answers that are malformed, truncated or never finish.

What must hold under every fault: the job ends (completed, or a typed
:class:`~ryla_gen.errors.RylaGenError`), never runs twice by accident, and never outlives
the caller's deadline. Real faults run against the session's real ComfyUI and the local
job API server (``python -m ryla_gen_modal serve``); HTTP faults of RunPod and Modal are
respx sequences; malformed ComfyUI answers come from an ``httpx.MockTransport``.

The bugs these tests found are fixed (docs/reliability.md lists them).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import io
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Literal

import httpx
import pytest
import respx
from helpers import fresh_color, load_benchmark, rgb
from PIL import Image

from ryla_gen import AsyncClient
from ryla_gen._http import Deadline, RetryPolicy
from ryla_gen.errors import (
    JobFailedError,
    JobTimeoutError,
    NotFoundError,
    ProtocolError,
    ProviderUnavailableError,
    RateLimitError,
    RylaGenError,
)
from ryla_gen.providers._base import AsyncProvider
from ryla_gen.providers.comfyui import ComfyUIProvider
from ryla_gen.providers.modal import ModalProvider
from ryla_gen.providers.runpod import RunPodProvider
from ryla_gen.testing import ComfyUIServer, slow_graph, tiny_graph
from ryla_gen.types import JobRequest, Started

TOKEN = "rg-faults-5d0c1e77-token"
MODAL_URL = "https://ryla-faults.modal.test"
RUNPOD_BASE = "https://api.runpod.test/v2"
RUNPOD_URL = f"{RUNPOD_BASE}/ep-faults"
RUNPOD_KEY = "rpa_FAULTS_key_4f1d2c"


bench = load_benchmark("load_test")


def _assert_image(data: bytes, size: tuple[int, int], color: int, tolerance: int = 0) -> None:
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == size
        pixel = im.convert("RGB").getpixel((im.width // 2, im.height // 2))
    assert isinstance(pixel, tuple)
    assert all(abs(a - b) <= tolerance for a, b in zip(pixel, rgb(color), strict=True)), (
        pixel,
        rgb(color),
    )


@pytest.fixture(scope="module")
def served(comfyui_server: ComfyUIServer) -> Iterator[Any]:
    """The local job API server (a subprocess) over the session's ComfyUI."""
    with bench.serve(comfyui_server.url, TOKEN) as server:
        yield server
        assert TOKEN not in server.output()  # never logged, whatever happened


async def _comfy_queue(url: str) -> tuple[int, int]:
    async with httpx.AsyncClient(timeout=5) as http:
        q = (await http.get(f"{url}/queue")).json()
    return len(q["queue_running"]), len(q["queue_pending"])


async def _until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


# -- the backend dies mid-job --------------------------------------------------------------------


@pytest.mark.comfyui
@pytest.mark.timeout(240)
async def test_comfyui_killed_mid_job_fails_as_backend_died_then_next_job_succeeds(
    comfyui_server: ComfyUIServer, served: Any
) -> None:
    """SIGKILL ComfyUI while one job runs (direct driver) and one waits (through the job
    API): both end as failed saying the backend died; after the restart both paths work."""
    url = comfyui_server.url
    direct = AsyncClient(ComfyUIProvider(url, poll_interval=0.2))
    via_api = AsyncClient("modal", modal_url=served.url, modal_token=TOKEN, poll_interval=0.2)
    try:
        job_direct = await direct.submit(slow_graph(60, nonce=fresh_color()))
        job_api = await via_api.submit(slow_graph(60, nonce=fresh_color()))

        async def both_on_comfyui() -> bool:
            running, pending = await _comfy_queue(url)
            return running + pending >= 2

        await _until(both_on_comfyui, 30, "both jobs to reach ComfyUI")
        comfyui_server.kill()
        killed = time.monotonic()
        restart = asyncio.ensure_future(asyncio.to_thread(comfyui_server.start))
        outcomes = await asyncio.gather(
            job_direct.wait(timeout=120), job_api.wait(timeout=120), return_exceptions=True
        )
        await restart
        took = time.monotonic() - killed
        for outcome in outcomes:
            assert isinstance(outcome, JobFailedError), repr(outcome)
            assert "backend died" in str(outcome), str(outcome)
            assert "submit it again" in str(outcome)
        assert isinstance(outcomes[0], JobFailedError)
        assert outcomes[0].exception_type == "BackendDied"
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            view = (await http.get(f"{served.url}/jobs/{job_api.id}")).json()
        assert view["status"] == "failed" and view["error"]["type"] == "backend_died", view
        assert took < 100

        # The next job succeeds, directly and through the job API.
        for client, (w, h) in ((direct, (24, 20)), (via_api, (20, 28))):
            color = fresh_color()
            result = await client.generate(tiny_graph(w, h, color), timeout=60)
            _assert_image(result.image.data, (w, h), color)
    finally:
        if not comfyui_server.is_running:
            comfyui_server.start()
        await direct.aclose()
        await via_api.aclose()


# -- websockets that drop or go silent -----------------------------------------------------------


class WebSocketFaultProxy:
    """A TCP proxy in front of ComfyUI that passes HTTP through untouched and breaks the
    websocket: ``silent`` forwards the handshake, then swallows every frame while keeping
    the connection open (a proxy that stops forwarding); ``cut`` closes each websocket
    connection ``cut_after`` seconds after its handshake (it keeps reconnecting)."""

    def __init__(
        self, upstream_port: int, mode: Literal["silent", "cut"], cut_after: float = 0.3
    ) -> None:
        self.upstream_port = upstream_port
        self.mode = mode
        self.cut_after = cut_after
        self.ws_connections = 0
        self.frames_swallowed = 0
        self.refuse_websockets = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ws_clients: list[asyncio.StreamWriter] = []

    def release(self) -> None:
        """Close the client side of every websocket and refuse new ones (so a test can
        close its client without waiting for a close handshake that never comes)."""
        self.refuse_websockets = True
        for writer in self._ws_clients:
            writer.close()

    def shutdown_from_another_thread(self) -> None:
        """Shut the websockets' client sockets down at the OS level: works while the
        event loop (and so this proxy) is blocked."""
        for writer in list(self._ws_clients):
            with contextlib.suppress(OSError):
                writer.get_extra_info("socket").shutdown(socket.SHUT_RDWR)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            up_writer.write(head)
            await up_writer.drain()
            websocket = b"upgrade: websocket" in head.lower()
            if websocket and self.refuse_websockets:
                return
            if websocket:
                self.ws_connections += 1
                self._ws_clients.append(writer)
                back = self._broken(up_reader, writer)
            else:
                back = self._pipe(up_reader, writer)
            pipes = [
                asyncio.ensure_future(self._pipe(reader, up_writer)),
                asyncio.ensure_future(back),
            ]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            if (
                not self.refuse_websockets
                and self._server is not None
                and self._server.is_serving()
            ):
                raise
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()

    async def _broken(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        dst.write(await src.readuntil(b"\r\n\r\n"))  # the 101 handshake answer
        await dst.drain()
        if self.mode == "cut":
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._pipe(src, dst), self.cut_after)
            return
        while data := await src.read(65536):
            self.frames_swallowed += len(data)


@pytest.mark.comfyui
@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["silent", "cut"])
async def test_broken_websocket_falls_back_to_polling_with_right_outputs(
    comfyui_server: ComfyUIServer, mode: Literal["silent", "cut"]
) -> None:
    proxy = WebSocketFaultProxy(comfyui_server.port, mode)
    color = fresh_color()
    async with proxy.running() as url:
        provider = ComfyUIProvider(url, poll_interval=0.2)
        async with AsyncClient(provider) as client:
            t0 = time.monotonic()
            job = await client.submit(slow_graph(2.0, nonce=color))
            events = [e async for e in job.events(timeout=45)]
            result = await job.wait()
            took = time.monotonic() - t0
            # see test_closing_the_client_does_not_block_the_event_loop_on_a_silent_websocket
            proxy.release()
            await asyncio.sleep(0.3)
    assert any(isinstance(e, Started) for e in events)
    assert result.job_id == job.id and len(result.images) == 1
    _assert_image(result.image.data, (512, 512), color, tolerance=2)
    assert took < 45
    if mode == "silent":
        assert proxy.ws_connections >= 1 and proxy.frames_swallowed > 0
    else:
        assert proxy.ws_connections >= 2  # it was cut and came back, more than once


@pytest.mark.comfyui
@pytest.mark.timeout(60)
async def test_closing_the_client_does_not_block_the_event_loop_on_a_silent_websocket(
    comfyui_server: ComfyUIServer,
) -> None:
    proxy = WebSocketFaultProxy(comfyui_server.port, "silent")
    async with proxy.running() as url:
        client = AsyncClient(ComfyUIProvider(url, poll_interval=0.2))
        await client.generate(tiny_graph(20, 20, fresh_color()), timeout=30)
        assert proxy.ws_connections >= 1
        gaps: list[float] = []

        async def tick() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.02)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticker = asyncio.ensure_future(tick())
        await asyncio.sleep(0.1)
        # Bounds the freeze to ~3 s (instead of 30) if the bug is there.
        rescue = threading.Timer(3.0, proxy.shutdown_from_another_thread)
        rescue.start()
        t0 = time.monotonic()
        try:
            await client.aclose()
            took = time.monotonic() - t0
            await asyncio.sleep(0.1)
        finally:
            rescue.cancel()
            ticker.cancel()
            proxy.release()
    assert took < 1.0 and max(gaps) < 1.0, (took, max(gaps))


# -- a lost answer never runs a job twice --------------------------------------------------------


class _LoseFirstCreateAnswer(httpx.AsyncBaseTransport):
    """Sends requests for real, but loses the answer to the first POST /jobs (the server
    did create the job): the client sees a connection reset and must retry safely."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.creates = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path == "/jobs":
            self.creates += 1
            if self.creates == 1:
                await response.aread()
                raise httpx.ReadError("connection reset after the job was created")
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.comfyui
@pytest.mark.timeout(60)
async def test_lost_create_answer_runs_the_job_once_on_the_real_server(
    comfyui_server: ComfyUIServer, served: Any
) -> None:
    transport = _LoseFirstCreateAnswer()
    http = httpx.AsyncClient(transport=transport)
    color = fresh_color()
    provider = ModalProvider(
        served.url,
        token=TOKEN,
        http_client=http,
        poll_interval=0.2,
        retry=RetryPolicy(initial_delay=0.05),
    )
    async with AsyncClient(provider) as client:
        result = await client.generate(tiny_graph(30, 22, color), timeout=60)
    await http.aclose()
    _assert_image(result.image.data, (30, 22), color)
    assert transport.creates == 2  # sent twice, with the same client-chosen id ...
    async with httpx.AsyncClient(timeout=10) as plain:
        history = (await plain.get(f"{comfyui_server.url}/history")).json()
    runs = [
        pid
        for pid, entry in history.items()
        if entry["prompt"][2].get("1", {}).get("inputs", {}).get("color") == color
    ]
    assert len(runs) == 1, runs  # ... and ComfyUI ran it once


# -- flaky HTTP at RunPod and Modal (respx) ------------------------------------------------------

FAST = RetryPolicy(max_retries=5, initial_delay=0.05, max_delay=0.4)
GRAPH = tiny_graph()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 4), (9, 8, 7)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()
B64 = base64.b64encode(PNG).decode()

Step = httpx.Response | Exception


class Steps:
    """A respx side effect answering ``steps`` in turn (the last repeats), timing each call."""

    def __init__(self, *steps: Step, on_call: Callable[[httpx.Request], None] | None = None):
        self.steps = list(steps)
        self.times: list[float] = []
        self.requests: list[httpx.Request] = []
        self.on_call = on_call

    def __call__(self, request: httpx.Request, **_: Any) -> httpx.Response:
        self.times.append(time.monotonic())
        self.requests.append(request)
        if self.on_call is not None:
            self.on_call(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        return step

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


def _view(job_id: str | None, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "status": status,
        "images": [],
        "timings": {},
        "created_at": 1.0,
        "updated_at": 1.0,
        **extra,
    }


class ModalFake:
    """The job API under respx: POST /jobs, GET /jobs/{id} and cancel follow sequences."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.ids: list[str] = []
        self.create = Steps(
            httpx.Response(202, json={}), on_call=lambda r: self.ids.append(self._id(r))
        )
        self.poll = Steps(httpx.Response(200, json={}))
        self.cancel = Steps(httpx.Response(200, json={}))
        self.create_route = router.post("/jobs").mock(side_effect=self._create)
        self.poll_route = router.get(re.compile(r"/jobs/[^/]+$")).mock(side_effect=self._poll)
        self.cancel_route = router.post(re.compile(r"/jobs/[^/]+/cancel$")).mock(
            side_effect=self.cancel
        )

    @staticmethod
    def _id(request: httpx.Request) -> str:
        return str(json.loads(request.content)["id"])

    def _fill(self, response: httpx.Response) -> httpx.Response:
        # answers carry the job's id, which the client chose
        if response.headers.get("content-type") == "application/json" and self.ids:
            body = json.loads(response.content)
            if isinstance(body, dict) and body.get("id") is None and "status" in body:
                body["id"] = self.ids[-1]
                return httpx.Response(
                    response.status_code, json=body, headers=dict(response.headers)
                )
        return response

    def _create(self, request: httpx.Request) -> httpx.Response:
        return self._fill(self.create(request))

    def _poll(self, request: httpx.Request) -> httpx.Response:
        return self._fill(self.poll(request))


def queued() -> httpx.Response:
    return httpx.Response(202, json=_view(None, "queued"))


def modal_state(status: str, **extra: Any) -> httpx.Response:
    return httpx.Response(200, json=_view(None, status, **extra))


def modal_done() -> httpx.Response:
    image = {"filename": "o.png", "content_type": "image/png", "node_id": "2", "data": B64}
    return modal_state("completed", images=[image])


@pytest.fixture
def modal() -> Iterator[ModalFake]:
    with respx.mock(base_url=MODAL_URL, assert_all_called=False) as router:
        yield ModalFake(router)


def modal_client(**kw: Any) -> AsyncClient:
    kw.setdefault("retry", FAST)
    kw.setdefault("poll_interval", 0.01)
    return AsyncClient(ModalProvider(MODAL_URL, token=TOKEN, **kw), validate_graphs=False)


@pytest.mark.timeout(30)
async def test_modal_create_rides_out_5xx_429_and_resets_with_one_id(modal: ModalFake) -> None:
    modal.create.steps = [
        httpx.Response(503),
        httpx.Response(429, headers={"Retry-After": "0.3"}),
        httpx.ConnectError("connection refused"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadTimeout("timed out"),
        queued(),
    ]
    modal.poll.steps = [
        httpx.Response(502),
        httpx.ReadError("connection reset by peer"),
        httpx.Response(429, headers={"Retry-After": "0.1"}),
        modal_state("running", progress={"value": 1, "max": 2}),
        modal_done(),
    ]
    async with modal_client() as client:
        result = await client.generate(GRAPH, timeout=20)
    assert result.image.data == PNG
    assert modal.create_route.call_count == 6
    assert len(set(modal.ids)) == 1  # every retry re-sent the same client-chosen id
    assert result.job_id == modal.ids[0]
    assert modal.cancel_route.call_count == 0
    gaps = modal.create.gaps()
    assert gaps[0] >= 0.05 * 0.75  # backoff, with jitter
    assert gaps[1] >= 0.3  # Retry-After honoured
    assert gaps[2] >= 0.05 * 4 * 0.75 and gaps[3] >= 0.05 * 8 * 0.75 * 0.99  # grows


@pytest.mark.timeout(30)
async def test_runpod_resends_run_only_when_it_provably_did_not_arrive() -> None:
    run = Steps(
        httpx.Response(429, headers={"Retry-After": "0.2"}),
        httpx.ConnectError("connection refused"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.Response(200, json={"id": "job-1", "status": "IN_QUEUE"}),
    )
    status = Steps(
        httpx.ReadError("reset"),
        httpx.Response(503),
        httpx.Response(429, headers={"Retry-After": "0.05"}),
        httpx.Response(200, json={"id": "job-1", "status": "IN_PROGRESS"}),
        httpx.Response(
            200,
            json={
                "id": "job-1",
                "status": "COMPLETED",
                "output": {"images": [{"filename": "o.png", "type": "base64", "data": B64}]},
            },
        ),
    )
    with respx.mock(base_url=RUNPOD_URL, assert_all_called=False) as router:
        run_route = router.post("/run").mock(side_effect=run)
        router.get("/status/job-1").mock(side_effect=status)
        cancel = router.post("/cancel/job-1").respond(200, json={})
        provider = RunPodProvider(
            "ep-faults", api_key=RUNPOD_KEY, base_url=RUNPOD_BASE, retry=FAST, poll_interval=0.01
        )
        async with AsyncClient(provider, validate_graphs=False) as client:
            result = await client.generate(GRAPH, timeout=20)
    assert result.image.data == PNG
    assert run_route.call_count == 4  # 429 and connect failures: nothing was queued
    assert run.gaps()[0] >= 0.2
    assert cancel.call_count == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(502, text="bad gateway"),
        httpx.Response(504, text="gateway timeout"),
        httpx.ReadError("connection reset by peer"),
        httpx.RemoteProtocolError("peer closed connection without sending a response"),
        httpx.WriteError("broken pipe"),
    ],
    ids=["502", "504", "reset", "closed", "write-error"],
)
async def test_runpod_run_is_never_resent_after_an_ambiguous_failure(failure: Step) -> None:
    with respx.mock(base_url=RUNPOD_URL, assert_all_called=False) as router:
        run_route = router.post("/run").mock(side_effect=Steps(failure))
        provider = RunPodProvider("ep-faults", api_key=RUNPOD_KEY, base_url=RUNPOD_BASE, retry=FAST)
        with pytest.raises(ProviderUnavailableError, match="not re-sent") as info:
            await provider.submit(JobRequest(graph=GRAPH), deadline=Deadline(10))
        await provider.aclose()
    assert run_route.call_count == 1  # a second /run could run the job twice
    assert RUNPOD_KEY not in str(info.value)


@pytest.mark.timeout(30)
async def test_retry_after_as_an_http_date_and_as_garbage(modal: ModalFake) -> None:
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    modal.create.steps = [queued()]
    modal.poll.steps = [
        httpx.Response(429, headers={"Retry-After": when}),
        httpx.Response(429, headers={"Retry-After": "soon, promise"}),
        modal_done(),
    ]
    async with modal_client() as client:
        await client.generate(GRAPH, timeout=20)
    first, second = modal.poll.gaps()
    assert first >= 0.9  # the date was honoured (HTTP dates have one-second resolution)
    assert second < 0.5  # unparseable: ordinary backoff, not a hang


@pytest.mark.timeout(30)
async def test_deadline_beats_a_huge_retry_after_on_submit(modal: ModalFake) -> None:
    modal.create.steps = [httpx.Response(429, headers={"Retry-After": "3600"})]
    with respx.mock(base_url=RUNPOD_URL, assert_all_called=False) as router:
        router.post("/run").respond(429, headers={"Retry-After": "3600"})
        runpod = RunPodProvider("ep-faults", api_key=RUNPOD_KEY, base_url=RUNPOD_BASE)
        for client in (
            modal_client(retry=RetryPolicy()),
            AsyncClient(runpod, validate_graphs=False),
        ):
            t0 = time.monotonic()
            with pytest.raises((JobTimeoutError, RateLimitError)):
                await client.generate(GRAPH, timeout=1.0)
            assert time.monotonic() - t0 < 1.6
            await client.aclose()


@pytest.mark.timeout(30)
async def test_deadline_during_a_status_outage_cancels_the_remote_job(modal: ModalFake) -> None:
    modal.create.steps = [queued()]
    modal.poll.steps = [httpx.Response(503)]
    modal.cancel.steps = [httpx.Response(503), modal_state("cancelled")]
    with respx.mock(base_url=RUNPOD_URL, assert_all_called=False) as router:
        router.post("/run").respond(200, json={"id": "job-1", "status": "IN_QUEUE"})
        router.get("/status/job-1").mock(side_effect=Steps(httpx.ConnectError("refused")))
        rp_cancel = router.post("/cancel/job-1").mock(
            side_effect=Steps(httpx.ReadError("reset"), httpx.Response(200, json={}))
        )
        runpod = RunPodProvider(
            "ep-faults", api_key=RUNPOD_KEY, base_url=RUNPOD_BASE, retry=FAST, poll_interval=0.01
        )
        for client in (modal_client(), AsyncClient(runpod, validate_graphs=False)):
            t0 = time.monotonic()
            with pytest.raises(JobTimeoutError) as info:
                await client.generate(GRAPH, timeout=1.0)
            assert time.monotonic() - t0 < 2.5
            assert info.value.remote_cancelled is True
            await client.aclose()
    assert modal.cancel_route.call_count == 2  # the first cancel got a 503 and was retried
    assert rp_cancel.call_count == 2


@pytest.mark.timeout(30)
async def test_modal_create_whose_answers_are_lost_is_cancelled_at_the_deadline(
    modal: ModalFake,
) -> None:
    modal.create.steps = [httpx.ReadTimeout("the app is busy; the job was created")]
    async with modal_client(retry=RetryPolicy(max_retries=20, initial_delay=0.2)) as client:
        with pytest.raises((JobTimeoutError, ProviderUnavailableError)):
            await client.generate(GRAPH, timeout=1.0)
    assert len(set(modal.ids)) == 1
    assert modal.cancel_route.call_count >= 1
    assert modal.cancel.requests[0].url.path == f"/jobs/{modal.ids[0]}/cancel"


@pytest.mark.timeout(30)
async def test_modal_submit_keeps_retrying_429_while_the_deadline_allows(
    modal: ModalFake,
) -> None:
    busy = httpx.Response(429, headers={"Retry-After": "0.01"}, json={"error": {"type": "busy"}})
    modal.create.steps = [busy] * 8 + [queued()]
    modal.poll.steps = [modal_done()]
    async with modal_client(retry=RetryPolicy(max_retries=4, initial_delay=0.01)) as client:
        result = await client.generate(GRAPH, timeout=10)
    assert result.image.data == PNG
    assert len(set(modal.ids)) == 1


# -- servers that never answer, or answer forever ------------------------------------------------


async def _blackhole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while await reader.read(65536):
            pass
    writer.close()


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers 200 with a 1 MB body, one byte every 0.1 s: no single read times out."""
    with contextlib.suppress(OSError, asyncio.CancelledError):
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 1000000\r\n\r\n")
        while True:
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.1)
    writer.close()


def _providers(url: str) -> list[AsyncProvider]:
    return [
        ModalProvider(url, token=TOKEN, retry=FAST),
        RunPodProvider("ep", api_key=RUNPOD_KEY, base_url=url, retry=FAST),
        ComfyUIProvider(url, use_websocket=False, retry=FAST),
    ]


async def _outcome_within(provider: AsyncProvider, deadline_s: float, bound: float) -> Any:
    """Run one job against ``provider``; the outcome (exception) and the seconds it took."""
    t0 = time.monotonic()
    try:
        async with AsyncClient(provider, validate_graphs=False) as client:
            await asyncio.wait_for(client.generate(GRAPH, timeout=deadline_s), bound)
    except Exception as exc:  # the outcome under test
        return exc, time.monotonic() - t0
    return None, time.monotonic() - t0


@contextlib.asynccontextmanager
async def _tcp_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    tasks: set[asyncio.Task[Any]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        await handler(reader, writer)

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.timeout(30)
async def test_a_server_that_never_answers_is_a_timeout_at_the_deadline() -> None:
    async with _tcp_server(_blackhole) as url:
        outcomes = await asyncio.gather(*(_outcome_within(p, 1.0, 10) for p in _providers(url)))
    for exc, took in outcomes:
        assert isinstance(exc, JobTimeoutError), repr(exc)
        assert took < 1.8


@pytest.mark.timeout(30)
async def test_a_server_that_trickles_its_answer_cannot_hold_a_call_past_its_deadline() -> None:
    async with _tcp_server(_trickle) as url:
        outcomes = await asyncio.gather(*(_outcome_within(p, 1.0, 4) for p in _providers(url)))
    for exc, took in outcomes:
        assert isinstance(exc, RylaGenError), repr(exc)
        assert took < 1.8


# -- malformed and truncated answers -------------------------------------------------------------

OK_OUTPUTS = {"2": {"images": [{"filename": "o.png", "subfolder": "", "type": "output"}]}}
DONE_STATUS = {"status_str": "success", "completed": True, "messages": []}


class FakeComfyUI:
    """ComfyUI's HTTP API as an ``httpx.MockTransport``; any route can be overridden with
    a function of (request, prompt id) returning the response."""

    def __init__(self, **routes: Callable[[httpx.Request, str], httpx.Response]) -> None:
        self.routes = routes
        self.prompt_id = ""

    def entry(self, **entry: Any) -> Callable[[httpx.Request, str], httpx.Response]:
        return lambda request, pid: httpx.Response(200, json={pid: entry})

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        key = path.strip("/").split("/")[0] or "root"
        if path == "/prompt" and request.method == "POST":
            self.prompt_id = json.loads(request.content)["prompt_id"]
        if key in self.routes:
            return self.routes[key](request, self.prompt_id)
        if key == "prompt":
            return httpx.Response(200, json={"prompt_id": self.prompt_id, "node_errors": {}})
        if key == "upload":
            return httpx.Response(200, json={"name": "in.png", "subfolder": "", "type": "input"})
        if key == "history":
            return httpx.Response(
                200,
                json={self.prompt_id: {"status": DONE_STATUS, "outputs": OK_OUTPUTS}},
            )
        if key == "queue":
            return httpx.Response(200, json={"queue_running": [], "queue_pending": []})
        if key == "view":
            return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
        if key == "interrupt":
            return httpx.Response(200)
        return httpx.Response(404, json={"error": "no route"})

    async def run(self, *, images: dict[str, bytes] | None = None, timeout: float = 5) -> Any:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handle))
        provider = ComfyUIProvider(
            "http://comfy.test",
            use_websocket=False,
            poll_interval=0.01,
            retry=RetryPolicy(max_retries=1, initial_delay=0.001),
            http_client=http,
        )
        try:
            async with AsyncClient(provider, validate_graphs=False) as client:
                return await client.generate(GRAPH, images=images, timeout=timeout)
        finally:
            await http.aclose()


def _answer(
    status: int = 200, *, content: bytes | None = None, json_body: Any = None
) -> Callable[[httpx.Request, str], httpx.Response]:
    def respond(request: httpx.Request, pid: str) -> httpx.Response:
        if json_body is not None:
            return httpx.Response(status, json=json_body)
        return httpx.Response(status, content=content or b"")

    return respond


def _history(**entry: Any) -> Callable[[httpx.Request, str], httpx.Response]:
    return lambda request, pid: httpx.Response(200, json={pid: entry})


_BUG_SHAPES = (
    "BUG ryla_gen/providers/comfyui.py: a /history or /queue answer of the wrong shape "
    "escapes as a bare {exc} ({where}); fix: check the types there (non-mapping status, "
    "non-list messages/images/queue_running) and raise ProtocolError"
)

MALFORMED_COMFYUI: list[Any] = [
    pytest.param(
        {"history": _answer(content=b"<html>502</html>")}, ProtocolError, id="history-html"
    ),
    pytest.param({"history": _answer(content=b'{"x": {"stat')}, ProtocolError, id="history-cut"),
    pytest.param({"history": _answer(json_body=[1, 2])}, ProtocolError, id="history-list"),
    pytest.param({"history": _answer(404, json_body={})}, NotFoundError, id="history-404"),
    pytest.param({"view": _answer(content=b"")}, ProtocolError, id="view-empty"),
    pytest.param({"view": _answer(404, json_body={})}, NotFoundError, id="view-404"),
    pytest.param({"prompt": _answer(content=b"not json")}, ProtocolError, id="prompt-not-json"),
    pytest.param({"prompt": _answer(400, content=b"<html>")}, ProtocolError, id="prompt-400-html"),
    pytest.param(
        {"history": _answer(json_body={}), "queue": _answer(json_body="busy")},
        ProtocolError,
        id="queue-a-string",
    ),
    pytest.param(
        {"history": _answer(json_body={}), "queue": _answer(json_body={"queue_running": []})},
        JobFailedError,
        id="job-vanished",
    ),
    pytest.param({"upload": _answer(json_body={"nom": 1})}, ProtocolError, id="upload-no-name"),
    pytest.param({"upload": _answer(503)}, ProviderUnavailableError, id="upload-503"),
    pytest.param(
        {"history": _history(status={"status_str": "error", "messages": [["execution_error", 7]]})},
        JobFailedError,
        id="error-without-details",
    ),
    pytest.param(
        {"history": _history(status="success", outputs=OK_OUTPUTS)},
        ProtocolError,
        id="status-a-string",
    ),
    pytest.param(
        {"history": _history(status={**DONE_STATUS, "messages": 5}, outputs=OK_OUTPUTS)},
        ProtocolError,
        id="messages-an-int",
    ),
    pytest.param(
        {"history": _history(status=DONE_STATUS, outputs={"2": {"images": 5}})},
        ProtocolError,
        id="images-an-int",
    ),
    pytest.param(
        {"history": _answer(json_body={}), "queue": _answer(json_body={"queue_running": 3})},
        ProtocolError,
        id="queue-running-an-int",
    ),
    pytest.param(
        {
            "history": _history(
                status={
                    "status_str": "error",
                    "messages": [["execution_error", {"traceback": [1]}]],
                }
            )
        },
        JobFailedError,
        id="traceback-not-strings",
    ),
    pytest.param(
        {"history": _history(status=DONE_STATUS)},
        ProtocolError,
        id="completed-without-outputs",
    ),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("routes", "expected"), MALFORMED_COMFYUI)
async def test_malformed_comfyui_answers_are_typed_errors(
    routes: dict[str, Callable[[httpx.Request, str], httpx.Response]],
    expected: type[Exception],
) -> None:
    fake = FakeComfyUI(**routes)
    t0 = time.monotonic()
    with pytest.raises(RylaGenError) as info:
        await fake.run(images={"in.png": PNG}, timeout=3)
    assert isinstance(info.value, expected), repr(info.value)
    assert time.monotonic() - t0 < 2.5  # an answer, not the deadline
    assert str(info.value)


@pytest.mark.timeout(30)
async def test_runpod_errors_field_of_the_wrong_type_is_a_typed_error() -> None:
    body = {"id": "job-1", "status": "COMPLETED", "output": {"images": [], "errors": 5}}
    with respx.mock(base_url=RUNPOD_URL, assert_all_called=False) as router:
        router.post("/run").respond(200, json={"id": "job-1", "status": "IN_QUEUE"})
        router.get("/status/job-1").respond(200, json=body)
        provider = RunPodProvider(
            "ep-faults", api_key=RUNPOD_KEY, base_url=RUNPOD_BASE, retry=FAST, poll_interval=0.01
        )
        async with AsyncClient(provider, validate_graphs=False) as client:
            with pytest.raises(RylaGenError):
                await client.generate(GRAPH, timeout=5)


@pytest.mark.timeout(30)
async def test_truncated_and_wrong_images_from_storage_and_job_api_are_typed() -> None:
    """RunPod s3_url images that come back empty or refused, and Modal answers cut in the
    middle of the image list: a typed error each time, never a half result."""
    s3 = "https://bucket.s3.test/o.png"
    with respx.mock(assert_all_called=False) as router:
        router.post(f"{RUNPOD_URL}/run").respond(200, json={"id": "job-1", "status": "IN_QUEUE"})
        out = {"images": [{"filename": "o.png", "type": "s3_url", "data": s3}]}
        router.get(f"{RUNPOD_URL}/status/job-1").respond(
            200, json={"id": "job-1", "status": "COMPLETED", "output": out}
        )
        storage = router.get(s3).mock(
            side_effect=Steps(httpx.Response(200, content=b""), httpx.Response(403))
        )
        ids: list[str] = []

        def create(request: httpx.Request) -> httpx.Response:
            ids.append(json.loads(request.content)["id"])
            return httpx.Response(202, json=_view(ids[-1], "queued"))

        router.post(f"{MODAL_URL}/jobs").mock(side_effect=create)
        cut = json.dumps(_view("x", "completed", images=[{"data": B64}]))[:-40]
        router.get(url__regex=rf"{re.escape(MODAL_URL)}/jobs/[^/]+$").respond(
            200, content=cut.encode()
        )
        runpod = RunPodProvider(
            "ep-faults", api_key=RUNPOD_KEY, base_url=RUNPOD_BASE, retry=FAST, poll_interval=0.01
        )
        async with AsyncClient(runpod, validate_graphs=False) as client:
            with pytest.raises(ProtocolError, match="empty file"):
                await client.generate(GRAPH, timeout=5)
            with pytest.raises(RylaGenError) as refused:
                await client.generate(GRAPH, timeout=5)
        assert RUNPOD_KEY not in str(refused.value)
        assert "authorization" not in {k.lower() for k in storage.calls.last.request.headers}
        async with modal_client() as client:
            with pytest.raises(ProtocolError, match="not JSON"):
                await client.generate(GRAPH, timeout=5)
