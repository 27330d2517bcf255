"""The real ComfyUI test server and the helper graphs of ``ryla_gen.testing``, via plain httpx.

These tests pin down the server behaviour the SDK's ComfyUI client relies on.
"""

from __future__ import annotations

import io
import random
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from ryla_gen.testing import (
    COMFYUI_VERSION,
    CORRUPT_MODEL_FILES,
    CORRUPT_MODEL_NAME,
    ComfyUIServer,
    blur_graph,
    load_image_graph,
    manifest_placeholders,
    slow_graph,
    tiny_graph,
)

pytestmark = pytest.mark.comfyui

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30)


def _submit(client: httpx.Client, graph: dict[str, Any]) -> str:
    resp = client.post("/prompt", json={"prompt": graph, "client_id": "ryla-tests"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["node_errors"] == {}
    prompt_id: str = body["prompt_id"]
    return prompt_id


def _wait_history(client: httpx.Client, prompt_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = client.get(f"/history/{prompt_id}").json()
        if prompt_id in history:
            entry: dict[str, Any] = history[prompt_id]
            return entry
        time.sleep(0.1)
    raise AssertionError(f"prompt {prompt_id} not in /history after {timeout} s")


def _wait_running(client: httpx.Client, prompt_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = client.get("/queue").json()["queue_running"]
        # queue items: [number, prompt_id, prompt, extra_data, outputs_to_execute]
        if any(item[1] == prompt_id for item in running):
            return
        time.sleep(0.05)
    raise AssertionError(f"prompt {prompt_id} never started running")


def _fetch_image(client: httpx.Client, ref: dict[str, str]) -> Image.Image:
    resp = client.get("/view", params=ref)
    assert resp.status_code == 200
    assert resp.content.startswith(PNG_MAGIC)
    return Image.open(io.BytesIO(resp.content))


def _message(entry: dict[str, Any], kind: str) -> dict[str, Any]:
    for name, data in entry["status"]["messages"]:
        if name == kind:
            found: dict[str, Any] = data
            return found
    raise AssertionError(f"no {kind} in {entry['status']['messages']}")


def test_system_stats_reports_version(comfyui_url: str) -> None:
    with _client(comfyui_url) as client:
        stats = client.get("/system_stats").json()
    assert stats["system"]["comfyui_version"] == COMFYUI_VERSION == "0.3.75"
    assert "--cpu" in stats["system"]["argv"]
    assert stats["devices"][0]["type"] == "cpu"


def test_placeholder_and_corrupt_models_are_listed(comfyui_url: str) -> None:
    with _client(comfyui_url) as client:
        info = client.get("/object_info/CheckpointLoaderSimple").json()
    names = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    assert CORRUPT_MODEL_NAME in names
    assert ("checkpoints", CORRUPT_MODEL_NAME) in CORRUPT_MODEL_FILES
    for folder, filename in manifest_placeholders():
        if folder == "checkpoints":
            assert filename in names


def test_tiny_graph_returns_png_of_requested_size(comfyui_url: str) -> None:
    color = random.randrange(0x1000000)  # a fresh colour defeats ComfyUI's output cache
    with _client(comfyui_url) as client:
        prompt_id = _submit(client, tiny_graph(80, 48, color=color, prefix="ryla_tiny"))
        entry = _wait_history(client, prompt_id)
        assert entry["status"]["status_str"] == "success"
        assert entry["status"]["completed"] is True
        [ref] = entry["outputs"]["2"]["images"]
        assert ref["type"] == "output"
        assert ref["filename"].startswith("ryla_tiny")
        img = _fetch_image(client, ref)
    assert img.format == "PNG"
    assert img.size == (80, 48)
    assert img.convert("RGB").getpixel((5, 5)) == (color >> 16, (color >> 8) & 0xFF, color & 0xFF)


def test_blur_graph_runs(comfyui_url: str) -> None:
    with _client(comfyui_url) as client:
        graph = blur_graph(32, 32, color=random.randrange(0x1000000))
        entry = _wait_history(client, _submit(client, graph))
        assert entry["status"]["status_str"] == "success"
        [ref] = entry["outputs"]["3"]["images"]
        assert _fetch_image(client, ref).size == (32, 32)


def test_invalid_graph_is_rejected_with_node_errors(comfyui_url: str) -> None:
    with _client(comfyui_url) as client:
        resp = client.post("/prompt", json={"prompt": tiny_graph(width=0)})
        assert resp.status_code == 400
        body = resp.json()
        assert body["error"]["type"] == "prompt_outputs_failed_validation"
        [error] = body["node_errors"]["1"]["errors"]
        assert error["type"] == "value_smaller_than_min"
        assert error["extra_info"]["input_name"] == "width"
        assert body["node_errors"]["1"]["class_type"] == "EmptyImage"
        assert body["node_errors"]["1"]["dependent_outputs"] == ["2"]

        # An unknown class is an invalid_prompt with *empty* node_errors.
        resp = client.post("/prompt", json={"prompt": {"1": {"class_type": "Nope", "inputs": {}}}})
        assert resp.status_code == 400
        assert resp.json()["error"]["type"] == "invalid_prompt"
        assert resp.json()["node_errors"] == {}


def test_corrupt_model_passes_validation_then_fails(comfyui_url: str) -> None:
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CORRUPT_MODEL_NAME}},
        "2": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}},
    }
    with _client(comfyui_url) as client:
        entry = _wait_history(client, _submit(client, graph))
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["completed"] is False
    assert entry["outputs"] == {}
    error = _message(entry, "execution_error")
    assert error["node_id"] == "1"
    assert error["node_type"] == "CheckpointLoaderSimple"
    assert "SafetensorError" in error["exception_type"]
    assert "header" in error["exception_message"]


def test_upload_then_load_image_graph(comfyui_server: ComfyUIServer) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 90)).save(buf, format="PNG")
    name = f"ryla_upload_{random.randrange(10**9)}.png"
    with _client(comfyui_server.url) as client:
        resp = client.post(
            "/upload/image",
            files={"image": (name, buf.getvalue(), "image/png")},
            data={"overwrite": "true"},
        )
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"name": name, "subfolder": "", "type": "input"}
        assert (comfyui_server.input_dir / name).is_file()

        entry = _wait_history(client, _submit(client, load_image_graph(name)))
        assert entry["status"]["status_str"] == "success"
        [ref] = entry["outputs"]["2"]["images"]
        img = _fetch_image(client, ref)
    assert img.size == (40, 30)
    assert img.convert("RGB").getpixel((0, 0)) == (200, 10, 90)


def test_slow_graph_runs_for_seconds(comfyui_url: str) -> None:
    with _client(comfyui_url) as client:
        entry = _wait_history(client, _submit(client, slow_graph(3.0)))
    assert entry["status"]["status_str"] == "success"
    started = _message(entry, "execution_start")["timestamp"]
    finished = _message(entry, "execution_success")["timestamp"]
    assert (finished - started) / 1000 >= 1.5  # ~3 s on 2 cores


def test_interrupt_stops_running_slow_graph(comfyui_url: str) -> None:
    with _client(comfyui_url) as client:
        prompt_id = _submit(client, slow_graph(10.0))
        _wait_running(client, prompt_id)
        time.sleep(1.0)
        assert client.get(f"/history/{prompt_id}").json() == {}  # still running

        asked = time.monotonic()
        resp = client.post("/interrupt", json={"prompt_id": prompt_id})
        assert resp.status_code == 200
        entry = _wait_history(client, prompt_id, timeout=15)
        assert time.monotonic() - asked < 5  # ComfyUI checks before each node

        assert client.get("/queue").json()["queue_running"] == []
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["completed"] is False
    assert entry["outputs"] == {}
    interrupted = _message(entry, "execution_interrupted")
    assert interrupted["prompt_id"] == prompt_id
    assert interrupted["node_type"] == "ImageBlur"
    assert "1" in interrupted["executed"]
    assert not any(name == "execution_error" for name, _ in entry["status"]["messages"])


def test_kill_mid_job_then_restart_forgets_history(comfyui_server: ComfyUIServer) -> None:
    # Runs last in this file: it restarts the session's server (same URL afterwards).
    url = comfyui_server.url
    with _client(url) as client:
        done_id = _submit(client, tiny_graph(color=random.randrange(0x1000000)))
        _wait_history(client, done_id)
        running_id = _submit(client, slow_graph(10.0))
        _wait_running(client, running_id)
    old_pid = comfyui_server.pid

    comfyui_server.kill()  # SIGKILL, as a crash would
    assert not comfyui_server.is_running
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/system_stats", timeout=5)

    comfyui_server.restart()
    assert comfyui_server.url == url
    assert comfyui_server.pid != old_pid
    with _client(url) as client:
        assert client.get("/system_stats").status_code == 200
        # History and queue live in memory only: both prompts are gone.
        assert client.get(f"/history/{done_id}").json() == {}
        assert client.get(f"/history/{running_id}").json() == {}
        assert client.get("/queue").json() == {"queue_running": [], "queue_pending": []}
        # Files on disk survive: models still listed.
        info = client.get("/object_info/CheckpointLoaderSimple").json()
        assert (
            CORRUPT_MODEL_NAME
            in info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
        )
