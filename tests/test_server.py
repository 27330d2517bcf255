"""The job API (ryla_gen_modal.server) through HTTP: auth, validation, files, job lifecycle.

Tests without the ``comfyui`` mark run the app over an executor whose ComfyUI cannot be
reached (nothing they do gets that far). The marked ones run real jobs on the session's
ComfyUI server, through the same LocalExecutor that ``python -m ryla_gen_modal serve`` uses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from ryla_gen import AsyncClient, GraphValidationError, JobFailedError, JobRequest
from ryla_gen._http import Deadline, RetryPolicy
from ryla_gen.providers.comfyui import ComfyUIProvider
from ryla_gen.providers.modal import ModalProvider
from ryla_gen.testing import ComfyUIServer, load_image_graph, slow_graph, tiny_graph
from ryla_gen.workflows import WORKFLOWS, FluxDev
from ryla_gen_modal.jobs import LocalExecutor
from ryla_gen_modal.server import create_app

TOKEN = "rg-test-9f3c2a7d-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UNREACHABLE = "http://127.0.0.1:9"
REPO = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def api(
    url: str = UNREACHABLE,
    *,
    headers: dict[str, str] | None = None,
    max_concurrency: int = 2,
    **kw: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app over a LocalExecutor on ``url``, reached through httpx's ASGI transport."""
    # An unreachable ComfyUI fails fast instead of being retried for seconds.
    retry = RetryPolicy(max_retries=1, initial_delay=0.05) if url == UNREACHABLE else None
    executor = LocalExecutor(
        ComfyUIProvider(url, retry=retry), max_concurrency=max_concurrency, job_timeout=120
    )
    app = create_app(executor, token=TOKEN, **kw)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://ryla.test", headers=headers, timeout=120
        ) as client:
            yield client
    finally:
        await executor.aclose()


def png(width: int = 32, height: int = 32, color: str = "teal") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def lora_bytes() -> bytes:
    header = json.dumps(
        {"lora_up.weight": {"dtype": "F16", "shape": [4, 2], "data_offsets": [0, 16]}}
    ).encode()
    return struct.pack("<Q", len(header)) + header + bytes(16)


def color() -> int:
    return int.from_bytes(os.urandom(3), "big")


# -- authentication ----------------------------------------------------------------------------

JOB = str(uuid.uuid4())
PROTECTED = [
    ("POST", "/jobs", {"graph": tiny_graph()}),
    ("GET", f"/jobs/{JOB}", None),
    ("POST", f"/jobs/{JOB}/cancel", None),
    ("POST", "/generate", {"graph": tiny_graph(), "wait": 1}),
    ("GET", "/workflows", None),
    ("POST", "/workflows/flux-dev", {"prompt": "x"}),
    ("POST", "/workflows/no-such-workflow", {}),
    ("GET", "/models", None),
    ("GET", "/loras", None),
    ("PUT", "/loras/x.safetensors", None),
    ("DELETE", "/loras/x.safetensors", None),
    ("GET", "/openapi.json", None),
    ("GET", "/docs", None),
    ("GET", "/no/such/route", None),
]
BAD_HEADERS = {
    "missing": {},
    "empty": {"Authorization": ""},
    "no token": {"Authorization": "Bearer"},
    "no token, space": {"Authorization": "Bearer "},
    "wrong": {"Authorization": "Bearer wrong-token"},
    "one char short": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "one char more": {"Authorization": f"Bearer {TOKEN}x"},
    "case changed": {"Authorization": f"Bearer {TOKEN.upper()}"},
    "other scheme": {"Authorization": f"Basic {TOKEN}"},
    "no scheme": {"Authorization": TOKEN},
    "token elsewhere": {"X-Api-Key": TOKEN},
}


async def test_every_route_but_health_needs_the_exact_token(tmp_path: Path) -> None:
    async with api(lora_dir=tmp_path / "loras", models_dir=tmp_path / "models") as client:
        r = await client.get("/health")
        assert r.status_code == 200
        for method, path, body in PROTECTED:
            for label, headers in BAD_HEADERS.items():
                r = await client.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (method, path, label, r.text)
                assert r.json()["error"]["type"] == "unauthorized"
                assert r.headers["www-authenticate"] == "Bearer"
                assert TOKEN not in r.text
            r = await client.request(method, path, json=body, headers=AUTH)
            assert r.status_code != 401, (method, path, r.text)
            assert TOKEN not in r.text
        # The scheme is case-insensitive (RFC 9110).
        r = await client.get("/loras", headers={"Authorization": f"bearer {TOKEN}"})
        assert r.status_code == 200


async def test_health_is_open_and_reports_comfyui() -> None:
    async with api() as client:
        r = await client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["version"]
    assert body["comfyui"] == {"reachable": False, "version": None}


def test_an_empty_token_is_refused() -> None:
    executor = LocalExecutor(ComfyUIProvider(UNREACHABLE))
    with pytest.raises(ValueError):
        create_app(executor, token="  ")


# -- the schema ---------------------------------------------------------------------------------


async def test_openapi_documents_every_workflow_and_route() -> None:
    async with api(headers=AUTH) as client:
        r = await client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    paths = doc["paths"]
    for route in ("/health", "/jobs", "/jobs/{job_id}", "/jobs/{job_id}/cancel", "/generate"):
        assert route in paths
    for route in ("/models", "/loras", "/loras/{name}", "/workflows"):
        assert route in paths
    schemas = doc["components"]["schemas"]
    for name, cls in WORKFLOWS.items():
        op = paths[f"/workflows/{name}"]["post"]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        target = schemas[ref.rsplit("/", 1)[1]]
        assert set(cls.model_fields) <= set(target["properties"]), name
        assert {p["name"] for p in op["parameters"]} == {"wait", "id"}
    assert "prompt" in schemas["FluxDev"]["properties"]
    assert "face_image" in schemas["InstantID"]["properties"]
    # every $ref resolves
    text = json.dumps(doc)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}:
        assert ref in schemas, ref
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert paths["/jobs"]["post"]["responses"]["202"]


# -- validation before anything runs ---------------------------------------------------------------


async def test_invalid_graph_gives_400_with_every_node_error() -> None:
    graph = tiny_graph()
    graph["1"]["inputs"]["width"] = "wide"
    graph["2"]["inputs"]["images"] = ["9", 0]
    async with api(headers=AUTH) as client:
        r = await client.post("/jobs", json={"graph": graph})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "validation_error"
    found = {(e["node_id"], e["input_name"], e["type"]) for e in err["node_errors"]}
    assert ("1", "width", "invalid_input_type") in found
    assert ("2", "images", "bad_linked_input") in found
    assert all(e["class_type"] for e in err["node_errors"])


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({}, "graph"),
        ({"graph": "nope"}, "graph"),
        ({"graph": tiny_graph(), "extra": 1}, "extra"),
        ({"graph": tiny_graph(), "id": "not-a-uuid"}, "id"),
        ({"graph": tiny_graph(), "seed": -1}, "seed"),
        ({"graph": tiny_graph(), "images": {"a.png": 5}}, "images"),
    ],
)
async def test_malformed_job_body_is_422(body: dict[str, Any], where: str) -> None:
    async with api(headers=AUTH) as client:
        r = await client.post("/jobs", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request"
    assert any(where in [str(p) for p in d["loc"]] for d in err["details"])


async def test_not_json_and_not_a_graph() -> None:
    async with api(headers=AUTH) as client:
        r = await client.post(
            "/jobs", content=b"{oops", headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 422
        r = await client.post("/jobs", json={"graph": {"1": 5}})
        assert r.status_code == 400
        assert r.json()["error"]["type"] == "invalid_request"
        r = await client.post("/generate", json={"graph": tiny_graph(), "wait": 141})
        assert r.status_code == 422


async def test_unknown_workflow_is_404_and_bad_parameters_422() -> None:
    async with api(headers=AUTH) as client:
        r = await client.post("/workflows/flux-pro", json={"prompt": "x"})
        assert r.status_code == 404
        assert r.json()["error"]["type"] == "not_found"
        assert "flux-dev" in r.json()["error"]["message"]

        r = await client.post(
            "/workflows/flux-dev", json={"prompt": "x", "steps": 0, "colour": "red"}
        )
        assert r.status_code == 422
        err = r.json()["error"]
        locs = {tuple(d["loc"]) for d in err["details"]}
        assert ("steps",) in locs and ("colour",) in locs
        assert "steps" in err["message"]

        r = await client.post("/workflows/flux-dev", content=b"[1]")
        assert r.status_code == 422
        r = await client.post("/workflows/flux-dev", content=b"{not json")
        assert r.status_code == 422
        r = await client.post("/workflows/flux-dev?wait=500", json={"prompt": "x"})
        assert r.status_code == 422
        r = await client.post("/workflows/flux-dev?id=nope", json={"prompt": "x"})
        assert r.status_code == 422


async def test_workflow_images_are_untrusted_no_server_paths(tmp_path: Path) -> None:
    secret = tmp_path / "face.png"
    secret.write_bytes(png(64, 64))
    async with api(headers=AUTH) as client:
        r = await client.post(
            "/workflows/instantid", json={"prompt": "p", "face_image": str(secret)}
        )
    assert r.status_code == 422
    assert "not accepted" in r.text or "path" in r.text


async def test_input_images_are_checked_with_pillow() -> None:
    graph = load_image_graph("face.png")
    async with api(headers=AUTH, max_images=2) as client:
        r = await client.post(
            "/jobs", json={"graph": graph, "images": {"face.png": b64(b"GIF89a junk")}}
        )
        assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_image"
        r = await client.post(
            "/jobs", json={"graph": graph, "images": {"face.png": "%%%not base64"}}
        )
        assert r.status_code == 422
        truncated = png(64, 64)[:60]
        r = await client.post(
            "/jobs", json={"graph": graph, "images": {"face.png": b64(truncated)}}
        )
        assert r.status_code == 422
        r = await client.post(
            "/jobs", json={"graph": graph, "images": {"face.png": b64(png(5000, 16))}}
        )
        assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"
        r = await client.post("/jobs", json={"graph": graph, "images": {"../face.png": b64(png())}})
        assert r.status_code == 422
        three = {f"f{i}.png": b64(png()) for i in range(3)}
        r = await client.post("/jobs", json={"graph": graph, "images": three})
        assert r.status_code == 413
        # a data URL is fine (the job is accepted; its ComfyUI is unreachable)
        url = "data:image/png;base64," + b64(png())
        r = await client.post("/jobs", json={"graph": graph, "images": {"face.png": url}})
        assert r.status_code == 202


async def test_body_size_is_capped_with_and_without_content_length() -> None:
    async with api(headers=AUTH, max_body_bytes=20_000) as client:
        big = {"graph": tiny_graph(), "images": {"a.png": "A" * 30_000}}
        r = await client.post("/jobs", json=big)
        assert r.status_code == 413
        assert r.json()["error"]["type"] == "payload_too_large"

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"graph": {}, "images": {"a.png": "'
            for _ in range(10):
                yield b"A" * 5000
            yield b'"}}'

        r = await client.post(
            "/jobs", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 413


async def test_missing_models_are_refused_before_spawning(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "checkpoints" / "have.safetensors").write_bytes(b"x")
    refreshed = []

    async def refresh() -> None:
        refreshed.append(time.time())

    graph = {
        "1": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "absent.safetensors"},
        },
        "2": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "3": {
            "class_type": "VAEDecode",
            "inputs": {"samples": ["2", 0], "vae": ["1", 2]},
        },
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}},
    }
    async with api(headers=AUTH, models_dir=models, refresh_volumes=refresh) as client:
        r = await client.post("/jobs", json={"graph": graph})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["type"] == "model_missing"
        assert err["missing_models"] == ["checkpoints/absent.safetensors"]
        assert len(refreshed) == 1  # the volumes were reloaded once before answering

        graph["1"]["inputs"]["ckpt_name"] = "have.safetensors"
        r = await client.post("/jobs", json={"graph": graph})
        assert r.status_code == 202

        r = await client.post("/workflows/z-image-turbo", json={"prompt": "cat"})
        assert r.status_code == 400
        assert set(r.json()["error"]["missing_models"]) == {
            "diffusion_models/z_image_turbo_bf16.safetensors",
            "text_encoders/qwen_3_4b.safetensors",
            "vae/ae.safetensors",
        }


async def test_models_lists_the_manifest_against_the_folder(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "vae").mkdir(parents=True)
    (models / "vae" / "ae.safetensors").write_bytes(b"12345")
    (models / "clip").mkdir()
    (models / "clip" / "clip_l.safetensors").write_bytes(b"1")  # legacy folder name counts
    async with api(headers=AUTH, models_dir=models) as client:
        r = await client.get("/models")
    assert r.status_code == 200
    body = r.json()
    by_path = {f"{m['folder']}/{m['filename']}": m for m in body["models"]}
    ae = by_path["vae/ae.safetensors"]
    assert ae["present"] is True and ae["size"] == 5
    assert {"flux-dev", "z-image-turbo"} <= set(ae["workflows"])
    assert by_path["text_encoders/clip_l.safetensors"]["present"] is True
    flux = by_path["diffusion_models/flux1-dev.safetensors"]
    assert flux["present"] is False and flux["size"] is None and flux["gated"] is True
    assert "diffusion_models/flux1-dev.safetensors" in body["missing"]
    assert "vae/ae.safetensors" not in body["missing"]
    # runtime-only files (antelopev2) are baked into the image, not expected on a volume
    assert not any(p.startswith("insightface/") for p in body["missing"])

    async with api(headers=AUTH) as client:
        r = await client.get("/models")
    assert r.status_code == 501


async def test_unknown_jobs_are_404() -> None:
    async with api(headers=AUTH) as client:
        for path in (f"/jobs/{uuid.uuid4()}", "/jobs/not-a-uuid", "/jobs/..%2F..%2Fetc"):
            r = await client.get(path)
            assert r.status_code == 404, path
        r = await client.post(f"/jobs/{uuid.uuid4()}/cancel")
        assert r.status_code == 404
        assert r.json()["error"]["type"] == "not_found"


async def test_backend_down_is_a_failed_job_not_a_hang() -> None:
    async with api(headers=AUTH) as client:
        r = await client.post("/generate", json={"graph": tiny_graph(), "wait": 60})
    assert r.status_code == 200
    view = r.json()
    assert view["status"] == "failed"
    assert view["error"]["type"] == "backend_unavailable"
    assert view["images"] == [] and view["timings"]["total"] is not None


# -- LoRAs ---------------------------------------------------------------------------------------


async def test_lora_upload_list_delete(tmp_path: Path) -> None:
    changes = []

    async def changed() -> None:
        changes.append(1)

    loras = tmp_path / "loras"
    (tmp_path / "outside.safetensors").write_bytes(lora_bytes())
    async with api(headers=AUTH, lora_dir=loras, on_loras_changed=changed) as client:
        assert (await client.get("/loras")).json() == {"loras": []}
        data = lora_bytes()
        r = await client.put(
            "/loras/me.safetensors",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 201
        assert r.json() == {"name": "me.safetensors", "size": len(data)}
        assert (loras / "me.safetensors").read_bytes() == data
        assert (await client.get("/loras")).json() == {
            "loras": [{"name": "me.safetensors", "size": len(data)}]
        }

        for bad in (
            "bad%20name.safetensors",
            "x.ckpt",
            ".hidden.safetensors",
            "%2E%2E.safetensors",
        ):
            r = await client.put(f"/loras/{bad}", content=data)
            assert r.status_code == 400, bad
            assert r.json()["error"]["type"] == "invalid_name"
        for traversal in (
            "..%2Foutside.safetensors",
            "../outside.safetensors",
            "%2Fetc%2Fx.safetensors",
        ):
            r = await client.put(f"/loras/{traversal}", content=data)
            assert r.status_code in (400, 404), traversal
            r = await client.delete(f"/loras/{traversal}")
            assert r.status_code in (400, 404), traversal
        assert (tmp_path / "outside.safetensors").exists()

        r = await client.put("/loras/junk.safetensors", content=b"\x00" * 100)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_file"
        r = await client.put("/loras/pic.safetensors", content=png())
        assert r.status_code == 400
        assert [p.name for p in loras.iterdir()] == ["me.safetensors"]

        r = await client.delete("/loras/me.safetensors")
        assert r.status_code == 204
        r = await client.delete("/loras/me.safetensors")
        assert r.status_code == 404
        assert changes == [1, 1]


async def test_lora_upload_is_size_capped(tmp_path: Path) -> None:
    async with api(headers=AUTH, lora_dir=tmp_path / "l", max_lora_bytes=4096) as client:
        r = await client.put("/loras/big.safetensors", content=bytes(10_000))
        assert r.status_code == 413

        async def stream() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield bytes(1000)

        r = await client.put("/loras/big.safetensors", content=stream())
        assert r.status_code == 413
    assert list((tmp_path / "l").iterdir()) == []


async def test_lora_routes_without_a_folder_are_501() -> None:
    async with api(headers=AUTH) as client:
        assert (await client.get("/loras")).status_code == 501
        assert (await client.put("/loras/a.safetensors", content=b"x")).status_code == 501


# -- the command line ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RYLA_GEN_API_TOKEN"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def test_cli_refuses_to_start_without_a_token() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "ryla_gen_modal", "serve", "--comfyui-url", UNREACHABLE],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "RYLA_GEN_API_TOKEN" in r.stderr and "--insecure-no-auth" in r.stderr


@contextlib.contextmanager
def serve(comfyui_url: str, *args: str) -> Iterator[str]:
    """``python -m ryla_gen_modal serve`` on a free port; yields its URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ryla_gen_modal",
            "serve",
            "--comfyui-url",
            comfyui_url,
            "--port",
            str(port),
            *args,
        ],
        env=_env(RYLA_GEN_API_TOKEN=TOKEN),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=10).status_code == 200:
                    break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0].decode(errors="replace")
        assert TOKEN not in output  # never logged


def test_cli_serves_the_api_with_the_token_from_the_environment(tmp_path: Path) -> None:
    with serve(UNREACHABLE, "--lora-dir", str(tmp_path / "loras")) as url:
        assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "ok"
        assert httpx.get(f"{url}/loras").status_code == 401
        r = httpx.get(f"{url}/loras", headers=AUTH)
        assert r.status_code == 200 and r.json() == {"loras": []}


@pytest.mark.comfyui
async def test_the_sdk_talks_to_the_served_api_end_to_end(comfyui_server: ComfyUIServer) -> None:
    """SDK (ModalProvider) -> HTTP -> ``serve`` (uvicorn, LocalExecutor) -> real ComfyUI."""
    models = comfyui_server.models_dir
    with serve(
        comfyui_server.url, "--models-dir", str(models), "--lora-dir", str(models / "loras")
    ) as url:
        provider = ModalProvider(url, token=TOKEN, poll_interval=0.1)
        async with AsyncClient(provider) as client:
            health = await provider.info()
            assert health["comfyui"] == {"reachable": True, "version": "0.3.75"}

            result = await client.generate(tiny_graph(width=40, height=32, color=color()))
            assert result.provider == "modal" and result.image.size == (40, 32)
            assert result.timings.execution is not None

            bad = tiny_graph()
            bad["1"]["inputs"]["width"] = -5
            with pytest.raises(GraphValidationError) as invalid:
                await provider.submit(JobRequest(graph=bad), deadline=Deadline(30))
            assert invalid.value.node_ids == ["1"]

            with pytest.raises(JobFailedError) as failed:
                await client.generate(
                    FluxDev(prompt="x", seed=5, width=512, height=512, steps=1), timeout=120
                )
            assert failed.value.node_type in ("UNETLoader", "DualCLIPLoader", "VAELoader")
            assert failed.value.node_id

            name = f"sdk_{uuid.uuid4().hex[:8]}.safetensors"
            assert (await provider.upload_lora(name, lora_bytes()))["name"] == name
            assert name in {x["name"] for x in await provider.list_loras()}
            await provider.delete_lora(name)
            status = await provider.models_status()
            assert "diffusion_models/flux1-dev.safetensors" not in status["missing"]


# -- real jobs on the session's ComfyUI -----------------------------------------------------------


async def until_done(client: httpx.AsyncClient, job_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view: dict[str, Any] = (await client.get(f"/jobs/{job_id}")).json()
        if view["status"] in ("completed", "failed", "cancelled"):
            return view
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


async def until_status(client: httpx.AsyncClient, job_id: str, status: str) -> dict[str, Any]:
    for _ in range(300):
        view: dict[str, Any] = (await client.get(f"/jobs/{job_id}")).json()
        if view["status"] == status:
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} never became {status}")


@pytest.mark.comfyui
async def test_job_runs_to_a_real_png(comfyui_server: ComfyUIServer) -> None:
    job_id = str(uuid.uuid4())
    graph = tiny_graph(width=48, height=40, color=color())
    async with api(
        comfyui_server.url, headers=AUTH, models_dir=comfyui_server.models_dir
    ) as client:
        r = await client.post(
            "/jobs", json={"graph": graph, "id": job_id, "seed": 7, "workflow": "tiny"}
        )
        assert r.status_code == 202
        view = r.json()
        assert view["id"] == job_id and view["status"] in ("queued", "running")
        assert view["images"] == [] and view["seed"] == 7 and view["workflow"] == "tiny"

        # the same id again: the same job, not a second one
        r = await client.post(
            "/jobs", json={"graph": tiny_graph(color=color()), "id": job_id.upper()}
        )
        assert r.status_code == 200 and r.json()["id"] == job_id

        done = await until_done(client, job_id)
    assert done["status"] == "completed", done
    assert done["error"] is None and done["progress"] is None
    [image] = done["images"]
    assert image["content_type"] == "image/png" and image["node_id"] == "2"
    with Image.open(io.BytesIO(base64.b64decode(image["data"]))) as im:
        assert im.format == "PNG" and im.size == (48, 40)
    t = done["timings"]
    assert t["total"] > 0 and t["queue_wait"] is not None and t["transfer"] is not None
    assert done["updated_at"] >= done["created_at"]


@pytest.mark.comfyui
async def test_generate_waits_and_input_images_reach_comfyui(comfyui_server: ComfyUIServer) -> None:
    picture = png(40, 24, color="orange")
    name = f"in_{uuid.uuid4().hex[:8]}.png"
    async with api(comfyui_server.url, headers=AUTH) as client:
        r = await client.post(
            "/generate",
            json={"graph": load_image_graph(name), "images": {name: b64(picture)}, "wait": 60},
        )
    assert r.status_code == 200
    view = r.json()
    assert view["status"] == "completed", view
    with Image.open(io.BytesIO(base64.b64decode(view["images"][0]["data"]))) as im:
        assert im.size == (40, 24)
        assert im.convert("RGB").getpixel((5, 5)) == (255, 165, 0)


@pytest.mark.comfyui
async def test_generate_answers_202_when_the_wait_runs_out_then_cancel(
    comfyui_server: ComfyUIServer, comfyui_url: str
) -> None:
    async with api(comfyui_url, headers=AUTH) as client:
        r = await client.post("/generate", json={"graph": slow_graph(30), "wait": 0.5})
        assert r.status_code == 202
        job_id = r.json()["id"]
        assert r.json()["status"] in ("queued", "running")
        await until_status(client, job_id, "running")
        started = time.monotonic()
        r = await client.post(f"/jobs/{job_id}/cancel")
        assert r.status_code == 200
        view = r.json()
        assert view["status"] == "cancelled", view
        assert view["error"]["type"] == "cancelled"
        assert time.monotonic() - started < 15
        # ComfyUI itself stopped running it
        for _ in range(50):
            queue = httpx.get(f"{comfyui_url}/queue").json()
            if not queue["queue_running"] and not queue["queue_pending"]:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"ComfyUI still busy: {queue}")
        # cancelling again returns the same terminal view
        r = await client.post(f"/jobs/{job_id}/cancel")
        assert r.json()["status"] == "cancelled"


@pytest.mark.comfyui
async def test_jobs_wait_their_turn_and_a_waiting_job_can_be_cancelled(comfyui_url: str) -> None:
    async with api(comfyui_url, headers=AUTH, max_concurrency=1) as client:
        first = (await client.post("/jobs", json={"graph": slow_graph(20)})).json()
        second = (await client.post("/jobs", json={"graph": tiny_graph(color=color())})).json()
        third = (await client.post("/jobs", json={"graph": tiny_graph(color=color())})).json()
        await until_status(client, first["id"], "running")
        view = (await client.get(f"/jobs/{third['id']}")).json()
        assert view["status"] == "queued" and view["queue_position"] == 2
        cancelled = (await client.post(f"/jobs/{second['id']}/cancel")).json()
        assert cancelled["status"] == "cancelled"
        assert (await client.get(f"/jobs/{third['id']}")).json()["queue_position"] == 1
        assert (await client.post(f"/jobs/{first['id']}/cancel")).json()["status"] == "cancelled"
        done = await until_done(client, third["id"])
        assert done["status"] == "completed"


@pytest.mark.comfyui
async def test_comfyui_side_errors_are_typed_job_failures(comfyui_url: str) -> None:
    unknown_node = {
        "1": {"class_type": "RylaNoSuchNode", "inputs": {}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    absent_model = {
        "1": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "absent.safetensors"},
        },
        "2": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}},
    }
    async with api(comfyui_url, headers=AUTH) as client:  # no models_dir: ComfyUI decides
        r = await client.post("/generate", json={"graph": unknown_node, "wait": 60})
        view = r.json()
        assert view["status"] == "failed" and view["error"]["type"] == "validation_error", view
        r = await client.post("/generate", json={"graph": absent_model, "wait": 60})
        view = r.json()
        assert view["status"] == "failed" and view["error"]["type"] == "model_missing", view
        assert view["error"]["missing_models"] == ["checkpoints/absent.safetensors"]


@pytest.mark.comfyui
async def test_typed_workflow_route_runs_and_fails_at_the_placeholder_model(
    comfyui_server: ComfyUIServer,
) -> None:
    params = {"prompt": "a lighthouse", "seed": 123, "width": 512, "height": 512, "steps": 1}
    graph = FluxDev.model_validate(params).to_api()  # what the server builds from them
    async with api(
        comfyui_server.url,
        headers=AUTH,
        models_dir=comfyui_server.models_dir,
        lora_dir=comfyui_server.models_dir / "loras",
    ) as client:
        r = await client.post("/workflows/flux-dev", json=params)
        assert r.status_code == 202, r.text
        view = r.json()
        assert view["workflow"] == "flux-dev" and view["seed"] == 123
        done = await until_done(client, view["id"])
        assert done["status"] == "failed", done
        err = done["error"]
        assert err["type"] == "job_failed"
        assert err["node_id"] in graph
        assert graph[err["node_id"]]["class_type"] == err["node_type"]
        assert err["node_type"] in ("UNETLoader", "DualCLIPLoader", "VAELoader")
        assert err["message"] and err["exception_type"]

        # a LoRA the server lacks is refused up front; once uploaded, it passes the check
        lora = f"ryla_test_{uuid.uuid4().hex[:8]}.safetensors"
        with_lora = {**params, "loras": [{"name": lora, "strength": 0.5}]}
        r = await client.post("/workflows/flux-dev?wait=0", json=with_lora)
        assert r.status_code == 400
        assert r.json()["error"]["missing_models"] == [f"loras/{lora}"]
        assert (await client.put(f"/loras/{lora}", content=lora_bytes())).status_code == 201
        job_id = str(uuid.uuid4())
        r = await client.post(f"/workflows/flux-dev?wait=60&id={job_id}", json=with_lora)
        assert r.status_code == 200, r.text
        assert r.json()["id"] == job_id and r.json()["status"] == "failed"
        # retrying with the same id returns the finished job
        r = await client.post(f"/workflows/flux-dev?id={job_id}", json=with_lora)
        assert r.status_code == 200 and r.json()["id"] == job_id
        assert (await client.delete(f"/loras/{lora}")).status_code == 204


@pytest.mark.comfyui
async def test_long_poll_answers_when_the_job_changes_not_at_the_timeout(
    comfyui_server: ComfyUIServer,
) -> None:
    async with api(comfyui_server.url, headers=AUTH) as client:
        r = await client.post("/jobs", json={"graph": slow_graph(3.0, nonce=color())})
        view = r.json()
        seen = [view["status"]]
        t0 = time.monotonic()
        # Each long poll returns as soon as the job differs from the view we hold.
        while view["status"] not in ("completed", "failed", "cancelled"):
            asked = time.monotonic()
            r = await client.get(
                f"/jobs/{view['id']}", params={"wait": 30, "since": view["updated_at"]}
            )
            assert r.status_code == 200
            assert time.monotonic() - asked < 29  # answered on a change, not the timeout
            new = r.json()
            assert new["updated_at"] != view["updated_at"] or new["status"] != view["status"]
            view = new
            seen.append(view["status"])
            assert time.monotonic() - t0 < 120
    assert seen[-1] == "completed" and "running" in seen
    assert view["images"]


@pytest.mark.comfyui
async def test_long_poll_times_out_with_the_unchanged_view(comfyui_server: ComfyUIServer) -> None:
    async with api(comfyui_server.url, headers=AUTH) as client:
        r = await client.post("/jobs", json={"graph": tiny_graph(color=color())})
        done = await until_done(client, r.json()["id"])
        # A finished job answers at once, whatever `since` says.
        t0 = time.monotonic()
        again = await client.get(
            f"/jobs/{done['id']}", params={"wait": 5, "since": done["updated_at"]}
        )
        assert time.monotonic() - t0 < 1.0
        assert again.json()["status"] == "completed"
        assert (await client.get(f"/jobs/{done['id']}", params={"wait": 61})).status_code == 422
