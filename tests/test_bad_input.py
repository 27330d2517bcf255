"""Bad input, as a table: each case with the typed error or HTTP status it must give and
a check of its message. Plus authentication on every route of the OpenAPI schema, and
secrets (tokens, API keys) kept out of logs, errors and reprs.

Server cases run the job API in-process (httpx's ASGI transport) over a recording
executor: a refused request must never reach it ("bad values fail before a GPU is paid
for"); an accepted one is checked for what the executor received (e.g. images converted
to RGB PNG). SDK cases go through ``AsyncClient`` / the builders. The bugs this table found are
fixed and listed in docs/reliability.md.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
import logging
import struct
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from helpers import RecordingExecutor
from PIL import Image
from pydantic import ValidationError

from ryla_gen import AsyncClient
from ryla_gen._http import Deadline
from ryla_gen._settings import Settings
from ryla_gen.errors import (
    ConfigurationError,
    GraphValidationError,
    InputError,
    JobFailedError,
    RylaGenError,
)
from ryla_gen.providers.modal import ModalProvider
from ryla_gen.providers.runpod import RunPodProvider
from ryla_gen.testing import (
    ComfyUIServer,
    blur_graph,
    load_image_graph,
    manifest_placeholders,
    tiny_graph,
)
from ryla_gen.types import JobRequest
from ryla_gen.workflows import MAX_LORAS, FluxDev, InstantID, example_face
from ryla_gen_modal.jobs import make_view
from ryla_gen_modal.server import create_app

TOKEN = "rg-badinput-3e9a7c5b-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_LORA_BYTES = 4096
MAX_BODY_BYTES = 32 * 1024 * 1024


# -- a job API whose executor records what reaches it --------------------------------------------


@dataclasses.dataclass
class Api:
    app: Any
    client: httpx.AsyncClient
    executor: RecordingExecutor
    lora_dir: Path
    outside: Path


@contextlib.asynccontextmanager
async def job_api(tmp_path: Path, headers: dict[str, str] | None = AUTH) -> AsyncIterator[Api]:
    executor = RecordingExecutor()
    lora_dir = tmp_path / "volume" / "loras"
    models_dir = tmp_path / "volume" / "models"
    outside = tmp_path / "volume" / "secret.safetensors"
    lora_dir.mkdir(parents=True)
    outside.write_bytes(b"not yours")
    for folder, filename in manifest_placeholders():  # every model "present"
        path = models_dir / folder / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"placeholder")
    app = create_app(
        executor,
        token=TOKEN,
        lora_dir=lora_dir,
        models_dir=models_dir,
        max_lora_bytes=MAX_LORA_BYTES,
        max_body_bytes=MAX_BODY_BYTES,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://ryla.test", headers=headers, timeout=60
    ) as client:
        yield Api(app, client, executor, lora_dir, outside)


# -- inputs --------------------------------------------------------------------------------------


def enc(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def safetensors(
    header: dict[str, Any] | bytes, data: bytes = b"", *, length: int | None = None
) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


GOOD_TENSOR = {"w": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]}}
FACE = example_face().to_data_url()


def chain(n: int) -> dict[str, Any]:
    graph: dict[str, Any] = {"1": tiny_graph()["1"]}
    prev = "1"
    for i in range(2, n + 2):
        graph[str(i)] = {
            "class_type": "ImageBlur",
            "inputs": {"image": [prev, 0], "blur_radius": 1, "sigma": 1.0},
        }
        prev = str(i)
    graph["save"] = {
        "class_type": "SaveImage",
        "inputs": {"images": [prev, 0], "filename_prefix": "c"},
    }
    return graph


def cycle() -> dict[str, Any]:
    g = blur_graph()
    g["2"]["inputs"]["image"] = ["4", 0]
    g["4"] = {
        "class_type": "ImageBlur",
        "inputs": {"image": ["2", 0], "blur_radius": 1, "sigma": 1.0},
    }
    return g


def with_input(
    node: str, name: str, value: Any, graph: dict[str, Any] | None = None
) -> dict[str, Any]:
    g = graph or tiny_graph()
    g[node]["inputs"][name] = value
    return g


def image_job(data: bytes | str, name: str = "in.png") -> dict[str, Any]:
    value = data if isinstance(data, str) else b64(data)
    return {"graph": load_image_graph(name), "images": {name: value}}


CMYK = enc(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG")  # pure red in CMYK
GREY16 = enc(Image.new("I;16", (32, 32), 40000), "PNG")  # 16-bit: 40000 -> 156 in 8 bits
PALETTE_CLEAR = enc(Image.new("RGBA", (32, 32), (10, 200, 30, 0)).convert("P"), "PNG")
BOMB = enc(Image.new("1", (30000, 30000)), "PNG")  # 900 Mpx, 110 kB on the wire
TRUNCATED_JPEG = enc(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")[:300]


# -- the table -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Http:
    """One request to the job API and the answer it must get."""

    method: str
    path: str
    status: int
    error_type: str | None
    fragment: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    check: Callable[[Api, httpx.Response], None] | None = None


def _accepted_image(expected: tuple[int, int, int]) -> Callable[[Api, httpx.Response], None]:
    def check(api: Api, r: httpx.Response) -> None:
        [request] = api.executor.requests
        [data] = request.images.values()
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and im.mode == "RGB"
            pixel = im.getpixel((5, 5))
        assert isinstance(pixel, tuple)
        assert all(abs(a - b) <= 2 for a, b in zip(pixel, expected, strict=True)), pixel

    return check


def _prompt_kept(text: str) -> Callable[[Api, httpx.Response], None]:
    def check(api: Api, r: httpx.Response) -> None:
        [request] = api.executor.requests
        texts = [n["inputs"].get("text") for n in request.graph.values()]
        assert text in texts

    return check


def _outside_untouched(api: Api, r: httpx.Response) -> None:
    assert api.outside.read_bytes() == b"not yours"
    assert list(api.lora_dir.iterdir()) == []


def wf(name: str, body: Any, status: int, kind: str | None, fragment: str, **kw: Any) -> Http:
    """POST /workflows/{name} with a JSON body (``bytes``: sent as is, e.g. with NaN)."""
    if isinstance(body, bytes):
        headers = {"Content-Type": "application/json"}
        return Http(
            "POST",
            f"/workflows/{name}",
            status,
            kind,
            fragment,
            content=body,
            headers=headers,
            **kw,
        )
    return Http("POST", f"/workflows/{name}", status, kind, fragment, json=body, **kw)


def job(body: Any, status: int, kind: str | None, fragment: str, **kw: Any) -> Http:
    """POST /jobs (``bytes``: sent as is)."""
    if isinstance(body, bytes):
        headers = {"Content-Type": "application/json"}
        return Http("POST", "/jobs", status, kind, fragment, content=body, headers=headers, **kw)
    return Http("POST", "/jobs", status, kind, fragment, json=body, **kw)


def lora(name: str, content: bytes, status: int, kind: str, fragment: str) -> Http:
    """PUT /loras/{name}; nothing may be stored, nothing outside the folder touched."""
    return Http(
        "PUT", f"/loras/{name}", status, kind, fragment, content=content, check=_outside_untouched
    )


P = pytest.param
LORA_OK = safetensors(GOOD_TENSOR, bytes(8))
UNICODE = "猫 ✓ naïve 🐈‍⬛ שלום\u200b"
SIGMA_NAN_GRAPH = with_input("2", "sigma", float("nan"), blur_graph())
SIGMA_NAN = json.dumps({"graph": SIGMA_NAN_GRAPH}).encode()
TWO_TENSORS = {**GOOD_TENSOR, "v": {"dtype": "F16", "shape": [2, 2], "data_offsets": [4, 12]}}
Q4 = {"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}}
ELEVEN_LORAS = [{"name": f"l{i}.safetensors"} for i in range(MAX_LORAS + 1)]
TINY_FACE = b64(enc(Image.new("RGB", (8, 8)), "PNG"))

HTTP_CASES: list[Any] = [
    # workflow parameters: 422 naming the field, before anything runs
    P(
        wf("flux-dev", {"prompt": "x", "steps": 0}, 422, "invalid_request", "steps"),
        id="wf-steps-0",
    ),
    P(
        wf("flux-dev", {"prompt": "x", "width": 1000}, 422, "invalid_request", "multiple of 16"),
        id="wf-width-1000",
    ),
    P(
        wf("flux-dev", b'{"prompt": "x", "guidance": NaN}', 422, "invalid_request", "guidance"),
        id="wf-guidance-NaN",
    ),
    P(
        wf(
            "flux-dev",
            b'{"prompt": "x", "guidance": -Infinity}',
            422,
            "invalid_request",
            "guidance",
        ),
        id="wf-guidance-inf",
    ),
    P(
        wf("flux-dev", {"prompt": "x", "seed": 2**64}, 422, "invalid_request", "seed"),
        id="wf-seed-2^64",
    ),
    P(
        wf("flux-dev", {"prompt": "x", "seed": "lucky"}, 422, "invalid_request", "seed"),
        id="wf-seed-text",
    ),
    P(
        wf(
            "z-image-turbo",
            {"prompt": "x", "loras": [{"name": "a.safetensors", "strength": 99}]},
            422,
            "invalid_request",
            "strength",
        ),
        id="wf-lora-strength",
    ),
    P(
        wf(
            "flux-dev",
            {"prompt": "x", "loras": [{"name": "../../etc/passwd.safetensors"}]},
            422,
            "invalid_request",
            "plain file name",
        ),
        id="wf-lora-traversal",
    ),
    P(
        wf("flux-dev", {"prompt": "x", "loras": ELEVEN_LORAS}, 422, "invalid_request", "loras"),
        id="wf-11-loras",
    ),
    P(
        wf("flux-dev", {"prompt": "x", "cfg_scale": 7}, 422, "invalid_request", "cfg_scale"),
        id="wf-unknown-field",
    ),
    P(wf("sdxl-turbo", {"prompt": "x"}, 404, "not_found", "flux-dev"), id="wf-unknown-workflow"),
    P(wf("Flux_Dev", {"prompt": "x"}, 404, "not_found", "known:"), id="wf-name-not-exact"),
    P(
        wf("flux-dev", {"prompt": "x" * 10_001}, 422, "invalid_request", "at most 10000"),
        id="wf-prompt-10001-chars",
    ),
    P(
        wf("flux-dev", {"prompt": "x" * MAX_BODY_BYTES}, 413, "payload_too_large", "larger than"),
        id="wf-prompt-over-body-cap",
    ),
    P(
        wf("flux-dev", {"prompt": "ring \x07 bell"}, 422, "invalid_request", "control character"),
        id="wf-prompt-bell",
    ),
    P(
        wf("flux-dev", {"prompt": UNICODE}, 202, None, "", check=_prompt_kept(UNICODE)),
        id="wf-prompt-unicode-kept",
    ),
    P(
        wf("flux-dev", b'{"prompt": "half \\ud800 pair"}', 422, "invalid_request", "prompt"),
        id="wf-prompt-lone-surrogate",
    ),
    P(
        wf(
            "instantid",
            {"prompt": "p", "face_image": "data:image/png;base64,aGVsbG8gd29ybGQ="},
            422,
            "invalid_request",
            "not an image",
        ),
        id="wf-face-not-an-image",
    ),
    P(
        wf(
            "instantid",
            {"prompt": "p", "face_image": "/etc/passwd"},
            422,
            "invalid_request",
            "file paths are not accepted",
        ),
        id="wf-face-server-path",
    ),
    P(
        wf(
            "instantid",
            {"prompt": "p", "face_image": TINY_FACE},
            422,
            "invalid_request",
            "too small",
        ),
        id="wf-face-8x8",
    ),
    # graphs: 400 with the node at fault
    P(job({"graph": cycle()}, 400, "validation_error", "dependency cycle"), id="graph-cycle"),
    P(
        job(
            {"graph": with_input("2", "image", ["2", 0], blur_graph())},
            400,
            "validation_error",
            "cycle",
        ),
        id="graph-self-loop",
    ),
    P(
        job({"graph": with_input("2", "images", ["1", 5])}, 400, "validation_error", "output 5"),
        id="graph-dangling-output",
    ),
    P(
        job({"graph": {"1": tiny_graph()["1"]}}, 400, "validation_error", "no output node"),
        id="graph-no-output",
    ),
    P(job({"graph": {}}, 400, "validation_error", "no output node"), id="graph-empty"),
    P(
        job(
            {"graph": {"1": {"class_type": 5, "inputs": {}}}}, 400, "invalid_request", "class_type"
        ),
        id="graph-class-type-int",
    ),
    P(
        job({"graph": tiny_graph(width=2**40)}, 400, "validation_error", "bigger than the maximum"),
        id="graph-width-2^40",
    ),
    P(job(SIGMA_NAN, 400, "validation_error", "sigma"), id="graph-sigma-NaN"),
    P(
        job({"graph": {"1": {"class_type": "MyCustomNode", "inputs": {}}}}, 202, None, ""),
        id="graph-custom-node-left-to-comfyui",
    ),
    P(job({"graph": chain(3000)}, 202, None, ""), id="graph-3000-nodes"),
    # input images: refused clearly, or converted to RGB PNG
    P(
        job(
            image_job(
                b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj"
            ),
            422,
            "invalid_image",
            "not an image",
        ),
        id="img-pdf",
    ),
    P(
        job(
            image_job(
                b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect/></svg>'
            ),
            422,
            "invalid_image",
            "not an image",
        ),
        id="img-svg",
    ),
    P(job(image_job(TRUNCATED_JPEG), 422, "invalid_image", "truncated"), id="img-truncated-jpeg"),
    P(
        job(image_job(BOMB), 413, "payload_too_large", "pixels"),
        id="img-30000x30000-bomb",
    ),
    P(job(image_job("A" * (28 * 1024 * 1024)), 413, "payload_too_large", "MB"), id="img-21MB"),
    P(
        job(image_job(CMYK, "in.jpg"), 202, None, "", check=_accepted_image((255, 0, 0))),
        id="img-cmyk-converted",
    ),
    P(
        job(image_job(GREY16), 202, None, "", check=_accepted_image((156, 156, 156))),
        id="img-16bit-scaled",
    ),
    P(
        job(image_job(PALETTE_CLEAR), 202, None, "", check=_accepted_image((255, 255, 255))),
        id="img-palette-alpha-flattened",
    ),
    P(
        job(image_job(CMYK, "/etc/cron.d/x.png"), 422, "invalid_image", "Invalid input image name"),
        id="img-name-absolute",
    ),
    P(
        job(image_job(CMYK, "x.png\x00.jpg"), 422, "invalid_image", "Invalid input image name"),
        id="img-name-nul",
    ),
    # LoRA uploads: refused before anything is stored
    P(
        lora("..%5C..%5Cx.safetensors", LORA_OK, 400, "invalid_name", "plain file name"),
        id="lora-backslash-traversal",
    ),
    P(
        lora("C:%5Cx.safetensors", LORA_OK, 400, "invalid_name", "plain file name"),
        id="lora-windows-absolute",
    ),
    P(
        lora("x.safetensors.pt", LORA_OK, 400, "invalid_name", ".safetensors"),
        id="lora-wrong-extension",
    ),
    P(
        lora("a" * 200 + ".safetensors", LORA_OK, 400, "invalid_name", "plain file name"),
        id="lora-name-200-chars",
    ),
    P(
        lora("%C3%BCber.safetensors", LORA_OK, 400, "invalid_name", "plain file name"),
        id="lora-name-unicode",
    ),
    P(
        lora(
            "pic.safetensors",
            enc(Image.new("RGB", (16, 16)), "PNG"),
            400,
            "invalid_file",
            "Not a safetensors file",
        ),
        id="lora-a-png",
    ),
    P(
        lora(
            "lies.safetensors",
            safetensors(GOOD_TENSOR, bytes(8), length=10**9),
            400,
            "invalid_file",
            "does not fit",
        ),
        id="lora-header-length-lies",
    ),
    P(
        lora("nojson.safetensors", safetensors(b"{'w': 1, }"), 400, "invalid_file", "not JSON"),
        id="lora-header-not-json",
    ),
    P(
        lora("q4.safetensors", safetensors(Q4, bytes(2)), 400, "invalid_file", "unknown dtype"),
        id="lora-unknown-dtype",
    ),
    P(
        lora(
            "two.safetensors", safetensors(TWO_TENSORS, bytes(12)), 400, "invalid_file", "overlaps"
        ),
        id="lora-overlapping-tensors",
    ),
    P(
        lora(
            "cut.safetensors",
            safetensors(GOOD_TENSOR, bytes(5)),
            400,
            "invalid_file",
            "truncated or padded",
        ),
        id="lora-truncated-data",
    ),
    P(lora("empty.safetensors", b"", 400, "invalid_file", "only 0 bytes"), id="lora-empty"),
    P(
        lora(
            "big.safetensors", bytes(MAX_LORA_BYTES + 2048), 413, "payload_too_large", "larger than"
        ),
        id="lora-oversized",
    ),
    P(
        Http("DELETE", "/loras/..%2Fsecret.safetensors", 400, None, "", check=_outside_untouched),
        id="lora-delete-outside",
    ),
    P(
        Http(
            "DELETE", "/loras/%2E%2E%2Fsecret.safetensors", 400, None, "", check=_outside_untouched
        ),
        id="lora-delete-dots-encoded",
    ),
]


@pytest.mark.parametrize("case", HTTP_CASES)
async def test_bad_request_gets_its_status_type_and_message(tmp_path: Path, case: Http) -> None:
    async with job_api(tmp_path) as api:
        r = await api.client.request(
            case.method,
            case.path,
            json=case.json,
            content=case.content,
            headers=case.headers or None,
        )
        assert r.status_code == case.status or (
            case.status == 400 and case.method == "DELETE" and r.status_code == 404
        ), r.text[:500]
        if case.status >= 400:
            assert api.executor.requests == []  # nothing reached the GPU side
            err = r.json()["error"]
            if case.error_type is not None:
                assert err["type"] == case.error_type, err
            assert case.fragment in err["message"], err["message"][:500]
            assert len(r.content) < 20_000  # the (possibly huge) input is not echoed
        else:
            assert len(api.executor.requests) == 1
        if case.check is not None:
            case.check(api, r)
        assert TOKEN not in r.text


async def test_a_server_with_only_a_lora_folder_does_not_claim_models_are_missing(
    tmp_path: Path,
) -> None:
    app = create_app(RecordingExecutor(), token=TOKEN, lora_dir=tmp_path / "loras")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ryla.test", headers=AUTH
    ) as client:
        r = await client.post("/workflows/flux-dev", json={"prompt": "a lighthouse"})
    assert r.status_code == 202, r.text[:300]


# -- the same mistakes made from Python ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sdk:
    """A call through the SDK and the error it must raise."""

    call: Callable[[], Awaitable[Any]]
    error: type[BaseException]
    fragment: str


async def _generate_via_modal(work: Any, **kw: Any) -> Any:
    """``generate`` with the modal provider against a respx job API that would accept it."""
    with respx.mock(base_url="https://ryla.modal.test", assert_all_called=False) as router:
        ids: list[str] = []

        def create(request: httpx.Request) -> httpx.Response:
            ids.append(json.loads(request.content)["id"])
            return httpx.Response(202, json=make_view(ids[-1], status="queued", created_at=1.0))

        router.post("/jobs").mock(side_effect=create)
        async with AsyncClient(
            "modal", modal_url="https://ryla.modal.test", modal_token=TOKEN, max_retries=0
        ) as client:
            return await client.submit(work, timeout=5, **kw)


async def _build(factory: Callable[[], Any]) -> Any:
    return factory()


async def _upload_lora(name: str) -> Any:
    provider = ModalProvider("https://ryla.modal.test", token=TOKEN)
    try:
        return await provider.upload_lora(name, b"x")
    finally:
        await provider.aclose()


def _settings(**kw: Any) -> Awaitable[Any]:
    return _build(lambda: Settings.load(**kw))


SDK_CASES: list[Any] = [
    P(
        Sdk(
            lambda: _build(lambda: FluxDev(prompt="x", steps=151)),
            ValidationError,
            "between 1 and 150",
        ),
        id="sdk-steps-151",
    ),
    P(
        Sdk(lambda: _generate_via_modal(cycle()), GraphValidationError, "dependency cycle"),
        id="sdk-cycle",
    ),
    P(
        Sdk(lambda: _generate_via_modal({"1": {"inputs": {}}}), InputError, "class_type"),
        id="sdk-no-class-type",
    ),
    P(
        Sdk(lambda: _generate_via_modal(b"not a graph"), InputError, "Cannot run a bytes"),
        id="sdk-not-a-graph",
    ),
    P(
        Sdk(
            lambda: _generate_via_modal(tiny_graph(), images={"a.png": "text"}),
            InputError,
            "must be bytes",
        ),
        id="sdk-image-str",
    ),
    P(
        Sdk(
            lambda: _build(lambda: InstantID(prompt="p", face_image=BOMB)),
            ValidationError,
            "pixels",
        ),
        id="sdk-face-bomb",
    ),
    P(
        Sdk(lambda: _generate_via_modal(SIGMA_NAN_GRAPH), GraphValidationError, "sigma"),
        id="sdk-sigma-NaN",
    ),
    P(
        Sdk(
            lambda: _generate_via_modal(FluxDev(prompt="half \ud800 pair")),
            ValidationError,
            "prompt",
        ),
        id="sdk-lone-surrogate",
    ),
    P(
        Sdk(
            lambda: _settings(provider="modal", modal_url="ftp://x", modal_token=TOKEN),
            ConfigurationError,
            "RYLA_GEN_MODAL_URL",
        ),
        id="sdk-modal-url-ftp",
    ),
    P(
        Sdk(lambda: _upload_lora("../../x.safetensors"), InputError, "plain file name"),
        id="sdk-lora-traversal",
    ),
    P(
        Sdk(lambda: _upload_lora("C:\\loras\\x.safetensors"), InputError, "plain file name"),
        id="sdk-lora-windows-path",
    ),
]


@pytest.mark.parametrize("case", SDK_CASES)
async def test_bad_sdk_input_raises_its_typed_error(case: Sdk) -> None:
    with pytest.raises(case.error) as info:
        await case.call()
    assert case.fragment in str(info.value), str(info.value)[:500]
    assert TOKEN not in str(info.value)


def test_the_table_has_at_least_30_cases() -> None:
    assert len(HTTP_CASES) + len(SDK_CASES) >= 30


@pytest.mark.comfyui
async def test_raw_graph_writing_outside_the_output_folder_fails_with_comfyuis_message(
    comfyui_server: ComfyUIServer,
) -> None:
    """The job API passes raw graphs' SaveImage prefixes on; ComfyUI must refuse a path
    out of its output folder, and that message must reach the caller as a job failure."""
    escape = f"../../../ryla_escape_{uuid.uuid4().hex[:8]}"
    async with AsyncClient("comfyui", comfyui_url=comfyui_server.url) as client:
        with pytest.raises((JobFailedError, GraphValidationError)) as info:
            await client.generate(tiny_graph(20, 20, 0x102030, prefix=escape), timeout=60)
    assert "outside" in str(info.value).lower(), str(info.value)
    target = (comfyui_server.output_dir / escape).resolve()
    assert not list(target.parent.glob(f"{target.name}*"))


# -- authentication on every route ---------------------------------------------------------------

NEAR_MISSES: dict[str, dict[str, str] | dict[str, bytes] | list[tuple[str, str]]] = {
    "missing": {},
    "empty": {"Authorization": ""},
    "scheme only": {"Authorization": "Bearer"},
    "wrong": {"Authorization": "Bearer rg-badinput-0000000-token"},
    "prefix": {"Authorization": f"Bearer {TOKEN[:-4]}"},
    "suffix added": {"Authorization": f"Bearer {TOKEN}0"},
    "twice": {"Authorization": f"Bearer {TOKEN} {TOKEN}"},
    "case flipped": {"Authorization": f"Bearer {TOKEN.swapcase()}"},
    "colon": {"Authorization": f"Bearer: {TOKEN}"},
    "tab": {"Authorization": f"Bearer\t{TOKEN}"},
    "token scheme": {"Authorization": f"Token {TOKEN}"},
    "basic": {"Authorization": "Basic " + b64(f"user:{TOKEN}".encode())},
    "no scheme": {"Authorization": TOKEN},
    "homoglyph": {"Authorization": f"Bearer {TOKEN.replace('a', 'а')}".encode()},
    "api key header": {"X-Api-Key": TOKEN},
    "cookie": {"Cookie": f"token={TOKEN}"},
    "wrong then right": [("Authorization", "Bearer nope"), ("Authorization", f"Bearer {TOKEN}")],
}


def _routes(schema: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for path, ops in schema["paths"].items():
        concrete = path.replace("{job_id}", str(uuid.uuid4())).replace("{name}", "x.safetensors")
        for method in ops:
            out.append((method.upper(), concrete))
    # routes outside the schema, and ways of spelling paths
    out += [
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/no/such/route"),
        ("POST", "/workflows/unknown"),
        ("OPTIONS", "/jobs"),
        ("HEAD", "/loras"),
        ("GET", "//loras"),
        ("GET", "/health/../loras"),
        ("GET", "/health%2F..%2Floras"),
        ("GET", "/HEALTH"),
        ("GET", "/health/"),
    ]
    return out


async def test_every_route_in_the_schema_refuses_missing_wrong_and_near_miss_tokens(
    tmp_path: Path,
) -> None:
    async with job_api(tmp_path, headers=None) as api:
        schema = (await api.client.get("/openapi.json", headers=AUTH)).json()
        routes = _routes(schema)
        assert len(routes) >= 20
        for method, path in routes:
            for label, headers in NEAR_MISSES.items():
                r = await api.client.request(method, path, headers=headers, content=b"{}")
                what = (method, path, label)
                if path == "/health":
                    assert r.status_code == 200, what  # the one open route
                    continue
                assert r.status_code == 401, (*what, r.status_code, r.text[:200])
                if method != "HEAD":
                    assert r.json()["error"]["type"] == "unauthorized", what
                assert r.headers["www-authenticate"] == "Bearer"
                assert TOKEN not in r.text
            r = await api.client.request(method, path, headers=AUTH, content=b"{}")
            assert r.status_code != 401, (method, path)
        assert api.executor.requests == []


# -- secrets stay secret -------------------------------------------------------------------------

RUNPOD_KEY = "rpa_BADINPUT_secret_9b1e77"


async def test_tokens_and_keys_never_reach_logs_errors_or_reprs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    async with job_api(tmp_path, headers=None) as api:
        # The SDK against the in-process job API: good and bad tokens, bad input.
        transport = httpx.ASGITransport(app=api.app)
        for token in (TOKEN, TOKEN[:-1], "x" + TOKEN):
            http = httpx.AsyncClient(transport=transport)
            provider = ModalProvider("http://ryla.test", token=token, http_client=http)
            client = AsyncClient(provider, validate_graphs=False)
            seen += [repr(provider), repr(client), repr(client.settings)]
            for work in (tiny_graph(), {"1": {"class_type": 5}}, cycle()):
                try:
                    await client.submit(work, timeout=5)
                except RylaGenError as exc:
                    seen += [str(exc), repr(exc), repr(exc.__cause__), repr(vars(exc))]
            with contextlib.suppress(RylaGenError):
                await provider.upload_lora("bad.safetensors", b"junk")
            await client.aclose()
            await http.aclose()
    # RunPod: a key echoed back by the API and by a failing worker.
    with respx.mock(base_url="https://api.runpod.test/v2/ep", assert_all_called=False) as router:
        router.post("/run").mock(
            side_effect=[
                httpx.Response(401, json={"error": f"bad key {RUNPOD_KEY}"}),
                httpx.Response(200, json={"id": "j1", "status": "IN_QUEUE"}),
            ]
        )
        router.get("/status/j1").respond(
            200, json={"id": "j1", "status": "FAILED", "error": f"env: KEY={RUNPOD_KEY}"}
        )
        settings = Settings.load(
            provider="runpod",
            runpod_endpoint_id="ep",
            runpod_api_key=RUNPOD_KEY,
            runpod_base_url="https://api.runpod.test/v2",
            poll_interval=0.01,
            max_retries=0,
            validate_graphs=False,
        )
        async with AsyncClient(settings=settings) as client:
            seen += [repr(client), repr(client.provider), repr(settings), str(settings)]
            seen.append(settings.model_dump_json())
            for _ in range(2):
                try:
                    await client.generate(tiny_graph(), timeout=5)
                except RylaGenError as exc:
                    seen += [str(exc), repr(exc)]
    text = "\n".join(seen) + "\n" + caplog.text
    assert len(seen) > 20
    assert TOKEN not in text and TOKEN[:-1] not in text
    assert RUNPOD_KEY not in text


async def test_error_bodies_are_redacted_like_their_messages() -> None:
    with respx.mock(base_url="https://api.runpod.test/v2/ep", assert_all_called=False) as router:
        router.post("/run").respond(401, json={"error": f"invalid api key {RUNPOD_KEY}"})
        provider = RunPodProvider("ep", api_key=RUNPOD_KEY, base_url="https://api.runpod.test/v2")
        with pytest.raises(RylaGenError) as info:
            await provider.submit(JobRequest(graph=tiny_graph()), deadline=Deadline(5))
        await provider.aclose()
    assert RUNPOD_KEY not in json.dumps(vars(info.value), default=str)


async def test_worker_warnings_are_logged_without_the_api_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    png = enc(Image.new("RGB", (4, 4)), "PNG")
    output = {
        "images": [{"filename": "o.png", "type": "base64", "data": b64(png)}],
        "errors": [f"custom node printed its env: RUNPOD_API_KEY={RUNPOD_KEY}"],
    }
    with respx.mock(base_url="https://api.runpod.test/v2/ep", assert_all_called=False) as router:
        router.post("/run").respond(200, json={"id": "j1", "status": "IN_QUEUE"})
        router.get("/status/j1").respond(
            200, json={"id": "j1", "status": "COMPLETED", "output": output}
        )
        provider = RunPodProvider(
            "ep", api_key=RUNPOD_KEY, base_url="https://api.runpod.test/v2", poll_interval=0.01
        )
        async with AsyncClient(provider, validate_graphs=False) as client:
            await client.generate(tiny_graph(), timeout=5)
    assert "custom node printed" in caplog.text
    assert RUNPOD_KEY not in caplog.text


@pytest.mark.parametrize("token", ["tök-ünicode-secret", "s3cret-token-from-a-file\n"])
def test_a_token_that_cannot_be_sent_is_a_configuration_error(token: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.load(provider="modal", modal_url="https://m.test", modal_token=token)
    assert token.strip() not in str(info.value)
