"""The modal provider at the ryla-gen job API's wire contract (respx; see DESIGN)."""

from __future__ import annotations

import base64
import io
import json
import re
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from PIL import Image

import ryla_gen
from ryla_gen import (
    APIError,
    AsyncClient,
    AuthenticationError,
    GraphValidationError,
    InputError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    ModelMissingError,
    NotFoundError,
    ProtocolError,
    ProviderUnavailableError,
)
from ryla_gen._http import Deadline, RetryPolicy
from ryla_gen.providers.modal import ModalProvider
from ryla_gen.types import (
    Cancelled,
    Completed,
    Failed,
    JobRequest,
    JobState,
    Progress,
    Queued,
    Started,
)

URL = "https://ryla--gen.modal.test"
TOKEN = "tok_SECRET_modal_987654"
FAST = RetryPolicy(max_retries=3, initial_delay=0.001, max_delay=0.002)
GRAPH: dict[str, Any] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}
_TLS = ssl.create_default_context()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 5), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()
B64 = base64.b64encode(PNG).decode()


def make(*, own_client: bool = False, **kw: Any) -> ModalProvider:
    """A provider with fast retries and polls (``own_client``: it builds its own client)."""
    kw.setdefault("retry", FAST)
    kw.setdefault("poll_interval", 0.001)
    if not own_client:
        kw.setdefault("http_client", httpx.AsyncClient(verify=_TLS))
    return ModalProvider(URL, token=TOKEN, **kw)


def view(status: str, **extra: Any) -> dict[str, Any]:
    """A JobView (the id is filled in by the fake server)."""
    base: dict[str, Any] = {
        "id": None,
        "status": status,
        "workflow": None,
        "seed": None,
        "queue_position": None,
        "progress": None,
        "error": None,
        "images": [],
        "timings": {"queue_wait": None, "execution": None, "transfer": None, "total": None},
        "created_at": 1.0,
        "updated_at": 2.0,
    }
    base.update(extra)
    return base


def done(**extra: Any) -> dict[str, Any]:
    return view(
        "completed",
        images=[
            {"filename": "t_00001_.png", "content_type": "image/png", "node_id": "2", "data": B64}
        ],
        timings={"queue_wait": 0.5, "execution": 1.25, "transfer": 0.1, "total": 2.0},
        **extra,
    )


def failed(**error: Any) -> dict[str, Any]:
    err = {
        "type": "job_failed",
        "message": "boom",
        "node_id": None,
        "node_type": None,
        "exception_type": None,
        "traceback": None,
    }
    err.update(error)
    return view("failed", error=err)


Step = dict[str, Any] | httpx.Response | Exception


class FakeAPI:
    """The job API: POST /jobs creates (202; 200 for a known id), GET /jobs/{id} walks
    through ``steps`` (the last one repeats), POST /jobs/{id}/cancel answers cancelled."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.router = router
        self.ids: list[str] = []
        self.steps: list[Step] = [view("queued")]
        self.create_failures: list[httpx.Response | Exception] = []
        self.create = router.post("/jobs", name="create").mock(side_effect=self._create)
        self.get = router.get(re.compile(r"/jobs/(?P<jid>[^/]+)$"), name="get").mock(
            side_effect=self._get
        )
        self.cancel = router.post(re.compile(r"/jobs/(?P<jid>[^/]+)/cancel$"), name="cancel").mock(
            side_effect=lambda request, jid: httpx.Response(
                200, json={**view("cancelled"), "id": jid}
            )
        )

    def _create(self, request: httpx.Request) -> httpx.Response:
        jid = json.loads(request.content)["id"]
        self.ids.append(jid)
        if self.create_failures:
            item = self.create_failures.pop(0)
            if isinstance(item, Exception):
                raise item
            return item
        known = jid in self.ids[:-1]
        return httpx.Response(200 if known else 202, json={**view("queued"), "id": jid})

    def _get(self, request: httpx.Request, jid: str) -> httpx.Response:
        item = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(item, Exception):
            raise item
        if isinstance(item, httpx.Response):
            return item
        return httpx.Response(200, json={**item, "id": jid})

    def then(self, *steps: Step) -> FakeAPI:
        self.steps = list(steps)
        return self


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    with respx.mock(base_url=URL, assert_all_called=False) as router:
        yield FakeAPI(router)


async def run(provider: ModalProvider, request: JobRequest | None = None) -> Any:
    deadline = Deadline(10)
    job = await provider.submit(request or JobRequest(graph=GRAPH, seed=5), deadline=deadline)
    return await provider.wait(job, deadline)


async def events(provider: ModalProvider) -> list[Any]:
    deadline = Deadline(10)
    job = await provider.submit(JobRequest(graph=GRAPH), deadline=deadline)
    return [e async for e in provider.events(job, deadline)]


# -- happy paths -----------------------------------------------------------------------------


async def test_generate_through_async_client(api: FakeAPI) -> None:
    api.then(view("queued", queue_position=1), view("running"), done())
    async with AsyncClient(make(own_client=True), validate_graphs=False) as client:
        result = await client.generate(GRAPH, timeout=10)
    assert result.provider == "modal"
    assert result.graph == GRAPH
    img = result.image
    assert (img.data, img.filename, img.node_id, img.content_type) == (
        PNG,
        "t_00001_.png",
        "2",
        "image/png",
    )
    assert (img.width, img.height) == (6, 5)
    assert result.timings.queue_wait == 0.5 and result.timings.execution == 1.25
    assert result.timings.transfer == 0.1
    assert result.timings.total is not None and result.timings.total > 0
    sent = api.create.calls.last.request
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    body = json.loads(sent.content)
    assert body["graph"] == GRAPH and body["images"] == {}
    assert body["workflow"] is None and body["seed"] is None
    assert result.job_id == body["id"] == api.ids[0]


def test_sync_client_runs_a_job(api: FakeAPI) -> None:
    api.router.get("/health").respond(200, json={"status": "ok", "version": "0.1"})
    api.then(done())
    client = ryla_gen.Client(make(own_client=True), validate_graphs=False)
    try:
        result = client.generate(GRAPH, timeout=10)
        assert client.info()["status"] == "ok"
    finally:
        client.close()
    assert result.image.data == PNG and result.provider == "modal"


async def test_events_queue_positions_progress_and_result(api: FakeAPI) -> None:
    api.then(
        view("queued", queue_position=2),
        view("queued", queue_position=2),
        view("queued", queue_position=1),
        view("running", progress={"value": 1, "max": 4, "node": "3"}),
        view("running", progress={"value": 1, "max": 4, "node": "3"}),
        view("running", progress={"value": 3, "max": 4, "node": "3"}),
        done(),
    )
    got = await events(make())
    assert [type(e) for e in got] == [Queued, Queued, Started, Progress, Progress, Completed]
    assert [e.position for e in got[:2]] == [2, 1]
    assert [(e.value, e.max, e.node) for e in got[3:5]] == [(1, 4, "3"), (3, 4, "3")]


async def test_request_images_workflow_and_seed_are_sent(api: FakeAPI) -> None:
    api.then(done())
    request = JobRequest(graph=GRAPH, images={"face.png": PNG}, workflow="flux-dev", seed=99)
    result = await run(make(), request)
    body = json.loads(api.create.calls.last.request.content)
    assert body["images"] == {"face.png": B64}
    assert body["workflow"] == "flux-dev" and body["seed"] == 99
    assert result.seed == 99


async def test_data_uri_images_and_content_type_guess(api: FakeAPI) -> None:
    api.then(
        view(
            "completed",
            images=[{"filename": "a.webp", "data": "data:image/webp;base64," + B64}],
        )
    )
    result = await run(make())
    assert result.image.data == PNG
    assert result.image.content_type == "image/webp"
    assert result.image.node_id is None


# -- failures ----------------------------------------------------------------------------------


async def test_failed_job_carries_node_details(api: FakeAPI) -> None:
    api.then(
        view("running"),
        failed(
            message="Allocation on device",
            node_id="3",
            node_type="KSampler",
            exception_type="torch.OutOfMemoryError",
            traceback="Traceback ...",
        ),
    )
    with pytest.raises(JobFailedError) as info:
        await run(make())
    exc = info.value
    assert exc.server_message == "Allocation on device"
    assert (exc.node_id, exc.node_type, exc.exception_type) == (
        "3",
        "KSampler",
        "torch.OutOfMemoryError",
    )
    assert exc.traceback == "Traceback ..."
    assert exc.job_id is not None


async def test_failed_event(api: FakeAPI) -> None:
    api.then(failed(type="backend_died", message="ComfyUI restarted"))
    got = await events(make())
    assert isinstance(got[-1], Failed)
    assert "ComfyUI restarted" in str(got[-1].error)


async def test_failed_with_validation_error_type(api: FakeAPI) -> None:
    node_errors = [
        {
            "node_id": "4",
            "class_type": "KSampler",
            "input_name": "steps",
            "message": "Value 0 smaller than min of 1",
            "type": "value_smaller_than_min",
            "details": "steps",
        }
    ]
    api.then(failed(type="validation_error", message="Prompt invalid", node_errors=node_errors))
    with pytest.raises(GraphValidationError) as info:
        await run(make())
    assert info.value.server_message == "Prompt invalid"
    assert info.value.errors[0].input_name == "steps"


async def test_failed_with_model_missing_type(api: FakeAPI) -> None:
    api.then(failed(type="model_missing", message="missing", missing_models=["vae/ae.sft"]))
    with pytest.raises(ModelMissingError) as info:
        await run(make())
    assert info.value.missing == ["vae/ae.sft"]


async def test_cancelled(api: FakeAPI) -> None:
    api.then(view("queued"), view("cancelled"))
    got = await events(make())
    assert isinstance(got[-1], Cancelled)
    api.then(view("cancelled"))
    with pytest.raises(JobCancelledError):
        await run(make())


async def test_create_validation_error_body(api: FakeAPI) -> None:
    api.create_failures = [
        httpx.Response(
            400,
            json={
                "error": {
                    "type": "validation_error",
                    "message": "Prompt outputs failed validation",
                    "node_errors": [
                        {
                            "node_id": "2",
                            "class_type": "SaveImage",
                            "input_name": "images",
                            "message": "Required input is missing",
                            "type": "required_input_missing",
                            "details": "",
                        }
                    ],
                }
            },
        )
    ]
    with pytest.raises(GraphValidationError) as info:
        await run(make())
    assert "Prompt outputs failed validation" in str(info.value)
    assert info.value.node_ids == ["2"]
    assert info.value.errors[0].type == "required_input_missing"
    assert api.create.call_count == 1


async def test_create_model_missing_body(api: FakeAPI) -> None:
    api.create_failures = [
        httpx.Response(
            400,
            json={
                "error": {
                    "type": "model_missing",
                    "message": "Missing models",
                    "missing_models": ["diffusion_models/flux1-dev.safetensors"],
                }
            },
        )
    ]
    with pytest.raises(ModelMissingError) as info:
        await run(make())
    assert "diffusion_models/flux1-dev.safetensors" in str(info.value)
    assert info.value.provider == "modal"


async def test_create_too_large(api: FakeAPI) -> None:
    api.create_failures = [
        httpx.Response(413, json={"error": {"type": "too_large", "message": "body > 32 MB"}})
    ]
    with pytest.raises(InputError, match="body > 32 MB"):
        await run(make())


async def test_create_other_4xx_is_api_error(api: FakeAPI) -> None:
    api.create_failures = [
        httpx.Response(422, json={"error": {"type": "bad_request", "message": "graph: required"}})
    ]
    with pytest.raises(APIError, match="graph: required"):
        await run(make())


async def test_unknown_job_is_not_found(api: FakeAPI) -> None:
    api.then(httpx.Response(404, json={"error": {"type": "not_found", "message": "no job x"}}))
    with pytest.raises(NotFoundError, match="no job x"):
        await make().status("x")


# -- retries -----------------------------------------------------------------------------------


async def test_create_is_retried_with_the_same_id(api: FakeAPI) -> None:
    api.create_failures = [httpx.Response(503), httpx.ReadTimeout("slow")]
    api.then(done())
    result = await run(make())
    assert api.create.call_count == 3
    assert len(set(api.ids)) == 1  # one client-chosen id: the server de-duplicates
    assert result.job_id == api.ids[0]


async def test_poll_429_with_retry_after_then_success(api: FakeAPI) -> None:
    api.then(httpx.Response(429, headers={"Retry-After": "0.01"}), done())
    await run(make())
    assert api.get.call_count == 2


async def test_poll_503_then_success(api: FakeAPI) -> None:
    api.then(httpx.Response(503), done())
    await run(make())
    assert api.get.call_count == 2


async def test_poll_connection_reset_then_success(api: FakeAPI) -> None:
    api.then(httpx.RemoteProtocolError("Server disconnected without sending a response."), done())
    await run(make())
    assert api.get.call_count == 2


async def test_unreachable_everywhere(api: FakeAPI) -> None:
    api.create_failures = [httpx.ConnectError("refused")] * 10
    with pytest.raises(ProviderUnavailableError) as info:
        await run(make())
    assert TOKEN not in str(info.value)
    assert api.create.call_count == FAST.max_retries + 1


# -- deadline ---------------------------------------------------------------------------------


async def test_deadline_cancels_the_remote_job(api: FakeAPI) -> None:
    api.then(view("running", progress={"value": 1, "max": 20, "node": "3"}))
    async with AsyncClient(make(), validate_graphs=False) as client:
        with pytest.raises(JobTimeoutError) as info:
            await client.generate(GRAPH, timeout=0.2)
    assert info.value.remote_cancelled is True
    assert api.cancel.call_count == 1
    assert api.cancel.calls.last.request.url.path == f"/jobs/{api.ids[0]}/cancel"


async def test_deadline_with_failing_cancel_still_times_out(api: FakeAPI) -> None:
    api.then(view("queued"))
    api.cancel.mock(side_effect=httpx.ConnectError("refused"))
    async with AsyncClient(make(), validate_graphs=False) as client:
        with pytest.raises(JobTimeoutError) as info:
            await client.generate(GRAPH, timeout=0.2)
    assert info.value.remote_cancelled is False


# -- status, cancel, info, models, loras -------------------------------------------------------


async def test_status(api: FakeAPI) -> None:
    api.then(view("running", progress={"value": 2, "max": 8, "node": "5"}))
    st = await make().status("abc")
    assert (st.id, st.state, st.progress, st.node) == ("abc", JobState.RUNNING, (2, 8), "5")
    api.then(view("queued", queue_position=3))
    st = await make().status("abc")
    assert st.state is JobState.QUEUED and st.queue_position == 3
    api.then(failed(message="nope"))
    st = await make().status("abc")
    assert st.state is JobState.FAILED and st.error == "nope"


async def test_cancel_tolerates_unknown_job(api: FakeAPI) -> None:
    provider = make()
    await provider.cancel("abc")
    assert api.cancel.call_count == 1
    api.cancel.mock(return_value=httpx.Response(404, json={"error": {"type": "not_found"}}))
    await provider.cancel("gone")
    assert api.cancel.calls.last.response.status_code == 404


async def test_info_and_models(api: FakeAPI) -> None:
    api.router.get("/health").respond(
        200, json={"status": "ok", "version": "1.2", "comfyui": {"reachable": True}}
    )
    models = {
        "models": [
            {"folder": "vae", "filename": "ae.safetensors", "present": True, "size": 3},
            {"folder": "vae", "filename": "other.safetensors", "present": False, "size": None},
            {"folder": "loras", "filename": "me.safetensors", "present": True, "size": 1},
        ],
        "missing": ["vae/other.safetensors"],
    }
    api.router.get("/models").respond(200, json=models)
    provider = make()
    info = await provider.info()
    assert info["provider"] == "modal" and info["comfyui"] == {"reachable": True}
    assert await provider.available_models() == {
        "vae": ["ae.safetensors"],
        "loras": ["me.safetensors"],
    }
    assert (await provider.models_status())["missing"] == ["vae/other.safetensors"]


async def test_lora_management(api: FakeAPI) -> None:
    api.router.get("/loras").respond(200, json={"loras": [{"name": "me.safetensors", "size": 4}]})
    put = api.router.put("/loras/me%20v2.safetensors").respond(
        201, json={"name": "me v2.safetensors", "size": 4}
    )
    delete = api.router.delete("/loras/me.safetensors").respond(204)
    api.router.delete("/loras/none.safetensors").respond(
        404, json={"error": {"type": "not_found", "message": "no LoRA none.safetensors"}}
    )
    provider = make()
    assert await provider.list_loras() == [{"name": "me.safetensors", "size": 4}]
    assert (await provider.upload_lora("me v2.safetensors", b"\x01\x02\x03\x04"))["size"] == 4
    sent = put.calls.last.request
    assert sent.content == b"\x01\x02\x03\x04"
    assert sent.headers["content-type"] == "application/octet-stream"
    await provider.delete_lora("me.safetensors")
    assert delete.called
    with pytest.raises(NotFoundError, match="no LoRA"):
        await provider.delete_lora("none.safetensors")
    for bad in ("../x.safetensors", "a/b.safetensors", "", ".hidden"):
        with pytest.raises(InputError):
            await provider.upload_lora(bad, b"x")
    with pytest.raises(InputError, match="empty"):
        await provider.upload_lora("ok.safetensors", b"")


# -- malformed answers and secrets --------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, content=b'{"id": "x", "status": "compl'),
        httpx.Response(200, content=b"<html>502 bad gateway</html>"),
        httpx.Response(200, json=[1, 2]),
        view("exploded"),
        view("completed", images=None),
        view("completed", images=["nope"]),
        view("completed", images=[{"filename": "a.png", "data": "%%%"}]),
        view("completed", images=[{"filename": "a.png", "data": B64[:-2]}]),
        view("completed", images=[{"filename": "a.png", "data": ""}]),
    ],
)
async def test_malformed_answers_are_protocol_errors(api: FakeAPI, answer: Step) -> None:
    api.then(answer)
    with pytest.raises(ProtocolError):
        await run(make())


async def test_malformed_create_answer(api: FakeAPI) -> None:
    api.create_failures = [httpx.Response(202, content=b'{"id": "')]
    with pytest.raises(ProtocolError):
        await run(make())
    api.create_failures = [httpx.Response(202, json={"id": "someone-else", "status": "queued"})]
    with pytest.raises(ProtocolError, match="someone-else"):
        await run(make())


async def test_401_is_authentication_error_without_the_token(api: FakeAPI) -> None:
    api.create_failures = [
        httpx.Response(
            401, json={"error": {"type": "unauthorized", "message": f"bad token {TOKEN}"}}
        )
    ]
    provider = make()
    with pytest.raises(AuthenticationError) as info:
        await run(provider)
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(info.value)
    assert TOKEN not in repr(provider)
    assert api.create.call_count == 1


async def test_token_never_in_job_errors(api: FakeAPI) -> None:
    api.then(failed(message=f"env dump RYLA_GEN_API_TOKEN={TOKEN}"))
    with pytest.raises(JobFailedError) as info:
        await run(make())
    assert TOKEN not in str(info.value)


async def test_settings_build_the_provider(api: FakeAPI) -> None:
    api.then(done())
    async with AsyncClient(
        "modal", modal_url=URL, modal_token=TOKEN, poll_interval=0.001, validate_graphs=False
    ) as client:
        assert isinstance(client.provider, ModalProvider)
        assert TOKEN not in repr(client)
        result = await client.generate(GRAPH, timeout=10)
    assert result.image.data == PNG
