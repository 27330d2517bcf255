"""The comfyui provider and the client against the REAL ComfyUI 0.3.75 test server."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import httpx
import pytest
from helpers import fresh_color
from PIL import Image

import ryla_gen
from ryla_gen import (
    AsyncClient,
    Client,
    GraphValidationError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    ModelMissingError,
)
from ryla_gen._http import RetryPolicy
from ryla_gen.providers.comfyui import ComfyUIProvider
from ryla_gen.testing import ComfyUIServer, load_image_graph, slow_graph, tiny_graph
from ryla_gen.types import Cancelled, Completed, NodeExecuting, NodeFinished, Queued, Started

pytestmark = pytest.mark.comfyui


def _png(width: int, height: int, color: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


async def _history(url: str, prompt_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        data: dict[str, Any] = (await http.get(f"{url}/history/{prompt_id}")).json()
        return data


async def test_generate_returns_real_png_of_requested_size(comfyui_url: str) -> None:
    async with AsyncClient("comfyui", comfyui_url=comfyui_url) as client:
        result = await client.generate(tiny_graph(width=96, height=48, color=fresh_color()))
    assert result.provider == "comfyui"
    assert len(result.images) == 1
    img = result.image
    assert img.data.startswith(b"\x89PNG")
    assert (img.width, img.height) == (96, 48)
    assert img.node_id == "2"
    assert result.timings.total is not None and result.timings.total > 0
    assert result.timings.execution is not None and result.timings.execution >= 0
    assert result.graph["1"]["class_type"] == "EmptyImage"
    # The server knows the job under the id we were given.
    assert result.job_id in await _history(comfyui_url, result.job_id)


async def test_batch_outputs_come_back_in_order(comfyui_url: str) -> None:
    async with AsyncClient("comfyui", comfyui_url=comfyui_url) as client:
        result = await client.generate(
            tiny_graph(width=32, height=32, color=fresh_color(), batch_size=3)
        )
    assert len(result.images) == 3
    assert len({i.filename for i in result.images}) == 3


async def test_events_follow_the_job_in_order(comfyui_url: str) -> None:
    async with AsyncClient("comfyui", comfyui_url=comfyui_url) as client:
        job = await client.submit(tiny_graph(color=fresh_color()))
        kinds = [type(e) async for e in job.events()]
        result = await job.wait()  # cached outcome, no second wait
    assert kinds[0] is Queued
    assert kinds[-1] is Completed
    assert Started in kinds
    assert NodeExecuting in kinds or NodeFinished in kinds
    assert result.image.width == 64


async def test_polling_only_client_gets_same_result(comfyui_url: str) -> None:
    provider = ComfyUIProvider(comfyui_url, use_websocket=False, poll_interval=0.2)
    async with AsyncClient(provider) as client:
        result = await client.generate(tiny_graph(width=40, height=40, color=fresh_color()))
    assert (result.image.width, result.image.height) == (40, 40)


async def test_server_validation_error_carries_every_node_error(comfyui_url: str) -> None:
    graph = tiny_graph(color=fresh_color())
    graph["1"]["inputs"]["width"] = 0  # below EmptyImage's minimum of 1
    graph["2"]["inputs"].pop("filename_prefix")
    # Skip local validation so the real server is the one that rejects it.
    async with AsyncClient("comfyui", comfyui_url=comfyui_url, validate_graphs=False) as client:
        with pytest.raises(GraphValidationError) as info:
            await client.generate(graph)
    err = info.value
    assert err.server_message and "validation" in err.server_message.lower()
    by_node = {(e.node_id, e.input_name): e for e in err.errors}
    assert ("1", "width") in by_node
    assert by_node[("1", "width")].type == "value_smaller_than_min"
    assert by_node[("1", "width")].class_type == "EmptyImage"
    assert any(e.node_id == "2" and e.type == "required_input_missing" for e in err.errors)


async def test_local_validation_rejects_before_sending(comfyui_url: str) -> None:
    graph = tiny_graph(color=fresh_color())
    graph["1"]["inputs"]["width"] = 0
    async with AsyncClient("comfyui", comfyui_url=comfyui_url) as client:
        with pytest.raises(GraphValidationError) as info:
            await client.generate(graph)
    assert info.value.server_message is None  # our validator, not the server
    assert info.value.node_ids == ["1"]


async def test_missing_model_file_is_reported_as_model_missing(comfyui_url: str) -> None:
    graph = {
        "1": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "does_not_exist_v9.safetensors"},
        },
        "2": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "m"}},
    }
    async with AsyncClient("comfyui", comfyui_url=comfyui_url) as client:
        with pytest.raises(ModelMissingError) as info:
            await client.generate(graph)
    assert info.value.missing == ["checkpoints/does_not_exist_v9.safetensors"]
    assert "does_not_exist_v9.safetensors" in str(info.value)


async def test_corrupt_model_gives_execution_error_with_node(
    comfyui_url: str, comfyui_server: ComfyUIServer
) -> None:
    comfyui_server.add_model_file("checkpoints", "ryla_broken_exec.safetensors", b"\x00" * 64)
    graph = {
        "7": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "ryla_broken_exec.safetensors"},
        },
        "8": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["7", 2]}},
        "10": {
            "class_type": "SaveImage",
            "inputs": {"images": ["9", 0], "filename_prefix": f"c{fresh_color()}"},
        },
    }
    async with AsyncClient("comfyui", comfyui_url=comfyui_url) as client:
        with pytest.raises(JobFailedError) as info:
            await client.generate(graph)
    err = info.value
    assert err.node_id == "7"
    assert err.node_type == "CheckpointLoaderSimple"
    assert err.server_message  # ComfyUI's own words
    assert err.traceback
    assert "7" in str(err) and "CheckpointLoaderSimple" in str(err)


async def test_input_image_is_uploaded_and_loaded(comfyui_url: str) -> None:
    name = f"ryla_in_{fresh_color()}.png"
    async with AsyncClient("comfyui", comfyui_url=comfyui_url) as client:
        result = await client.generate(load_image_graph(name), images={name: _png(33, 21)})
    out = result.image.to_pil().convert("RGB")
    assert out.size == (33, 21)
    assert out.getpixel((5, 5)) == (200, 10, 10)


async def test_cancel_queued_job_leaves_running_one_alone(comfyui_url: str) -> None:
    async with AsyncClient("comfyui", comfyui_url=comfyui_url) as client:
        first = await client.submit(slow_graph(3.0, nonce=fresh_color()))
        second = await client.submit(slow_graph(3.0, nonce=fresh_color()))
        await second.cancel()
        with pytest.raises(JobCancelledError):
            await second.wait(timeout=60)
        result = await first.wait(timeout=120)
    assert result.images


async def test_cancel_running_job_interrupts_it(comfyui_url: str) -> None:
    async with AsyncClient("comfyui", comfyui_url=comfyui_url) as client:
        job = await client.submit(slow_graph(20.0, nonce=fresh_color()))
        async for event in job.events(timeout=120):
            if isinstance(event, Started):
                break
        t0 = time.monotonic()
        await job.cancel()
        with pytest.raises(JobCancelledError):
            await job.wait(timeout=60)
        assert time.monotonic() - t0 < 15  # interrupted, not run to the end
        status = await job.status()
    assert status.state is ryla_gen.JobState.CANCELLED


async def test_deadline_cancels_remote_job(comfyui_url: str) -> None:
    async with AsyncClient("comfyui", comfyui_url=comfyui_url) as client:
        job = await client.submit(slow_graph(20.0, nonce=fresh_color()))
        with pytest.raises(JobTimeoutError) as info:
            await job.wait(timeout=2.0)
        assert info.value.remote_cancelled
        # The server stops working on it: it ends cancelled well before 20 s.
        for _ in range(60):
            status = await job.status()
            if status.state.terminal:
                break
            await asyncio.sleep(0.5)
    assert status.state is ryla_gen.JobState.CANCELLED


async def test_websocket_dropped_mid_job_still_returns_outputs(comfyui_url: str) -> None:
    provider = ComfyUIProvider(comfyui_url, poll_interval=0.3)
    async with AsyncClient(provider) as client:
        job = await client.submit(slow_graph(3.0, nonce=fresh_color()))
        seen: list[object] = []
        async for event in job.events(timeout=120):
            seen.append(event)
            if isinstance(event, Started):
                provider.drop_websocket()
        result = await job.wait()
    assert isinstance(seen[-1], Completed)
    assert result.images and result.image.data.startswith(b"\x89PNG")


class _LoseFirstPromptAnswer(httpx.AsyncBaseTransport):
    """Forwards to the real server, but 'loses' the answer to the first POST /prompt."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.prompt_posts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path == "/prompt":
            self.prompt_posts += 1
            if self.prompt_posts == 1:
                await response.aread()
                raise httpx.ReadError("connection reset after the request was sent")
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_lost_submit_answer_is_not_resubmitted(comfyui_url: str) -> None:
    transport = _LoseFirstPromptAnswer()
    http = httpx.AsyncClient(transport=transport)
    provider = ComfyUIProvider(comfyui_url, http_client=http, retry=RetryPolicy(initial_delay=0.01))
    async with AsyncClient(provider) as client:
        result = await client.generate(tiny_graph(color=fresh_color()))
    await http.aclose()
    assert result.images
    # The server got the prompt once; the retry only checked /history and /queue.
    assert transport.prompt_posts == 1


def test_sync_client_works_inside_a_running_event_loop(comfyui_url: str) -> None:
    async def notebook_cell() -> tuple[int, int]:
        # Jupyter runs cells inside a live loop; the sync API must still work there.
        with Client("comfyui", comfyui_url=comfyui_url) as client:
            result = client.generate(tiny_graph(width=24, height=24, color=fresh_color()))
        return result.image.size

    assert asyncio.run(notebook_cell()) == (24, 24)


def test_sync_job_events_and_wait(comfyui_url: str) -> None:
    with Client("comfyui", comfyui_url=comfyui_url) as client:
        job = client.submit(tiny_graph(color=fresh_color()))
        events = list(job.events(timeout=60))
        result = job.wait()
    assert isinstance(events[-1], Completed)
    assert result.job_id == job.id


async def test_unreachable_server_is_a_clear_error() -> None:
    async with AsyncClient("comfyui", comfyui_url="http://127.0.0.1:9", max_retries=1) as client:
        with pytest.raises(ryla_gen.ProviderUnavailableError) as info:
            await client.generate(tiny_graph())
    assert "127.0.0.1:9" in str(info.value)


async def test_cancelled_event_for_interrupted_job(comfyui_url: str) -> None:
    async with AsyncClient("comfyui", comfyui_url=comfyui_url) as client:
        job = await client.submit(slow_graph(20.0, nonce=fresh_color()))
        events = []
        async for event in job.events(timeout=120):
            events.append(event)
            if isinstance(event, Started):
                await job.cancel()
    assert isinstance(events[-1], Cancelled)
