"""The runpod provider at RunPod's serverless + worker-comfyui v5 wire contract (respx)."""

from __future__ import annotations

import base64
import io
import json
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from PIL import Image

import ryla_gen
from ryla_gen import (
    AsyncClient,
    AuthenticationError,
    GraphValidationError,
    InputError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    ProtocolError,
    ProviderUnavailableError,
)
from ryla_gen._constants import MAX_POLL_INTERVAL
from ryla_gen._http import Deadline, RetryPolicy
from ryla_gen.providers import _jobapi
from ryla_gen.providers.runpod import RunPodProvider
from ryla_gen.types import (
    Cancelled,
    Completed,
    Failed,
    JobRequest,
    JobState,
    Queued,
    Started,
)

BASE = "https://api.runpod.test/v2"
ENDPOINT = "ep-123"
URL = f"{BASE}/{ENDPOINT}"
KEY = "rpa_SECRET_key_0123456789"
FAST = RetryPolicy(max_retries=3, initial_delay=0.001, max_delay=0.002)
GRAPH: dict[str, Any] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}


def _png(w: int = 8, h: int = 4) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()
B64 = base64.b64encode(PNG).decode()


_TLS = ssl.create_default_context()  # one context: building one per client costs ~0.1 s


def make(*, own_client: bool = False, **kw: Any) -> RunPodProvider:
    """A provider with fast retries and polls (``own_client``: it builds its own httpx client)."""
    kw.setdefault("retry", FAST)
    kw.setdefault("poll_interval", 0.001)
    if not own_client:
        kw.setdefault("http_client", httpx.AsyncClient(verify=_TLS))
    return RunPodProvider(ENDPOINT, api_key=KEY, base_url=BASE, **kw)


def req(**kw: Any) -> JobRequest:
    return JobRequest(graph=GRAPH, **kw)


def status(state: str, **extra: Any) -> httpx.Response:
    return httpx.Response(200, json={"id": "job-1", "status": state, **extra})


def completed(output: Any, **extra: Any) -> httpx.Response:
    return status("COMPLETED", output=output, delayTime=1500, executionTime=2500, **extra)


@pytest.fixture
def rp() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=False) as router:
        router.post("/run", name="run").respond(200, json={"id": "job-1", "status": "IN_QUEUE"})
        router.post("/cancel/job-1", name="cancel").respond(
            200, json={"id": "job-1", "status": "CANCELLED"}
        )
        yield router


def on_status(rp: respx.MockRouter, *responses: httpx.Response | Exception) -> respx.Route:
    """GET /status/job-1 answers these in turn, then repeats the last one."""
    seq = list(responses)

    def answer(request: httpx.Request) -> httpx.Response:
        item = seq.pop(0) if len(seq) > 1 else seq[0]
        if isinstance(item, Exception):
            raise item
        return item

    return rp.get("/status/job-1", name="status").mock(side_effect=answer)


async def run(provider: RunPodProvider, timeout: float | None = 10.0) -> Any:
    deadline = Deadline(timeout)
    job = await provider.submit(req(seed=7), deadline=deadline)
    return await provider.wait(job, deadline)


async def events(provider: RunPodProvider, request: JobRequest | None = None) -> list[Any]:
    deadline = Deadline(10.0)
    job = await provider.submit(request or req(), deadline=deadline)
    return [e async for e in provider.events(job, deadline)]


# -- happy paths -----------------------------------------------------------------------------


async def test_generate_through_async_client(rp: respx.MockRouter) -> None:
    on_status(
        rp,
        status("IN_QUEUE"),
        status("IN_PROGRESS"),
        completed({"images": [{"filename": "t_00001_.png", "type": "base64", "data": B64}]}),
    )
    provider = make(own_client=True)
    async with AsyncClient(provider, validate_graphs=False) as client:
        result = await client.generate(GRAPH, timeout=10)
    assert result.provider == "runpod"
    assert result.job_id == "job-1"
    assert result.graph == GRAPH
    assert result.image.data == PNG
    assert result.image.filename == "t_00001_.png"
    assert result.image.content_type == "image/png"
    assert (result.image.width, result.image.height) == (8, 4)
    assert result.timings.queue_wait == 1.5
    assert result.timings.execution == 2.5
    assert result.timings.total is not None and result.timings.total > 0
    sent = rp["run"].calls.last.request
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(sent.content) == {"input": {"workflow": GRAPH}}


def test_sync_client_runs_a_job(rp: respx.MockRouter) -> None:
    rp.get("/health").respond(200, json={"workers": {"idle": 1}})
    on_status(rp, completed({"images": [{"filename": "a.png", "type": "base64", "data": B64}]}))
    client = ryla_gen.Client(make(own_client=True), validate_graphs=False)
    try:
        result = client.generate(GRAPH, timeout=10)
        assert client.info()["workers"] == {"idle": 1}
    finally:
        client.close()
    assert result.image.data == PNG
    assert result.provider == "runpod"


async def test_events_in_order_and_seed(rp: respx.MockRouter) -> None:
    on_status(
        rp,
        status("IN_QUEUE"),
        status("IN_QUEUE"),
        status("IN_PROGRESS"),
        status("IN_PROGRESS"),
        completed({"images": [{"filename": "a.png", "type": "base64", "data": B64}]}),
    )
    got = await events(make(), req(seed=42))
    assert [type(e) for e in got] == [Queued, Started, Completed]
    assert got[0].position is None
    assert got[-1].result.seed == 42


async def test_completed_at_first_poll_still_reports_started(rp: respx.MockRouter) -> None:
    on_status(rp, completed({"images": [], "status": "success_no_images"}))
    got = await events(make())
    assert [type(e) for e in got] == [Started, Completed]
    assert got[-1].result.images == []


async def test_run_body_carries_images_policy_and_webhook(rp: respx.MockRouter) -> None:
    on_status(rp, completed({"images": [], "status": "success_no_images"}))
    hook = "https://hooks.example/done?token=hooksecret"
    provider = make(execution_timeout=120, ttl=600.5, webhook=hook)
    await events(provider, req(images={"face.png": PNG}))
    body = json.loads(rp["run"].calls.last.request.content)
    assert body["input"]["images"] == [{"name": "face.png", "image": B64}]
    assert body["policy"] == {"executionTimeout": 120000, "ttl": 600500}
    assert body["webhook"] == hook
    assert "hooksecret" not in repr(provider) and KEY not in repr(provider)


async def test_policy_has_only_the_keys_set(rp: respx.MockRouter) -> None:
    on_status(rp, completed({"images": [], "status": "success_no_images"}))
    await events(make(ttl=30))
    body = json.loads(rp["run"].calls.last.request.content)
    assert body["policy"] == {"ttl": 30000}
    assert "webhook" not in body


@pytest.mark.parametrize("prefix", ["", "data:image/png;base64,"])
async def test_base64_images_with_and_without_data_prefix(
    rp: respx.MockRouter, prefix: str
) -> None:
    on_status(
        rp,
        completed(
            {
                "images": [
                    {"filename": "a.png", "type": "base64", "data": prefix + B64},
                    {"filename": "b.webp", "type": "base64", "data": prefix + B64},
                ]
            }
        ),
    )
    result = await run(make())
    assert [i.data for i in result.images] == [PNG, PNG]
    assert result.images[1].content_type == "image/webp"
    assert result.seed == 7


async def test_s3_url_images_are_downloaded_without_credentials(rp: respx.MockRouter) -> None:
    s3 = "https://bucket.s3.test/job-1/t_00001_.png?X-Amz-Signature=abc"
    s3_route = rp.get(s3).respond(200, content=PNG, headers={"content-type": "image/png"})
    on_status(
        rp, completed({"images": [{"filename": "t_00001_.png", "type": "s3_url", "data": s3}]})
    )
    result = await run(make())
    assert result.image.data == PNG
    sent = s3_route.calls.last.request
    assert "authorization" not in sent.headers
    assert KEY not in str(sent.headers)


async def test_s3_download_retried_on_503(rp: respx.MockRouter) -> None:
    s3 = "https://bucket.s3.test/x.png"
    s3_route = rp.get(s3).mock(side_effect=[httpx.Response(503), httpx.Response(200, content=PNG)])
    on_status(rp, completed({"images": [{"filename": "x.png", "type": "s3_url", "data": s3}]}))
    assert (await run(make())).image.data == PNG
    assert s3_route.call_count == 2


async def test_pre_v5_output_is_converted(rp: respx.MockRouter) -> None:
    on_status(rp, completed({"status": "success", "message": B64}))
    assert (await run(make())).image.data == PNG


async def test_pre_v5_output_with_url(rp: respx.MockRouter) -> None:
    rp.get("https://bucket.s3.test/old.png").respond(200, content=PNG)
    on_status(rp, completed({"status": "success", "message": "https://bucket.s3.test/old.png"}))
    result = await run(make())
    assert result.image.filename == "old.png" and result.image.data == PNG


async def test_pre_v5_error_output(rp: respx.MockRouter) -> None:
    on_status(rp, completed({"status": "error", "message": "something broke"}))
    with pytest.raises(JobFailedError, match="something broke"):
        await run(make())


async def test_completed_with_warnings_but_images_is_a_success(rp: respx.MockRouter) -> None:
    on_status(
        rp,
        completed(
            {
                "images": [{"filename": "a.png", "type": "base64", "data": B64}],
                "errors": ["Error uploading b.png to S3: denied"],
            }
        ),
    )
    assert len((await run(make())).images) == 1


# -- worker errors ---------------------------------------------------------------------------

VALIDATION = (
    "Workflow validation failed:\n"
    "• Node 4 (errors): [{'type': 'value_not_in_list', 'message': 'Value not in list', "
    "'details': \"ckpt_name: 'nope.safetensors' not in ['a.safetensors']\", "
    "'extra_info': {'input_name': 'ckpt_name', 'input_config': None, "
    "'received_value': 'nope.safetensors'}}]\n"
    "• Node 4 (dependent_outputs): ['9']\n"
    "• Node 4 (class_type): CheckpointLoaderSimple"
)


async def test_validation_failed_is_graph_validation_error(rp: respx.MockRouter) -> None:
    on_status(rp, status("FAILED", error=VALIDATION, delayTime=10, executionTime=20))
    with pytest.raises(GraphValidationError) as info:
        await run(make())
    exc = info.value
    assert exc.server_message == VALIDATION
    assert VALIDATION in str(exc)
    assert len(exc.errors) == 1
    err = exc.errors[0]
    assert (err.node_id, err.class_type, err.input_name, err.type) == (
        "4",
        "CheckpointLoaderSimple",
        "ckpt_name",
        "value_not_in_list",
    )
    assert "nope.safetensors" in err.details


async def test_validation_failed_inside_output(rp: respx.MockRouter) -> None:
    on_status(rp, completed({"error": VALIDATION}))
    with pytest.raises(GraphValidationError) as info:
        await run(make())
    assert info.value.node_ids == ["4"]


async def test_validation_failed_raw_response_fallback(rp: respx.MockRouter) -> None:
    raw = {
        "error": {"type": "missing_node_type", "message": "Node 'Foo' not found"},
        "node_errors": {
            "3": {
                "class_type": "Foo",
                "errors": [{"type": "missing_node_type", "message": "no such node"}],
            }
        },
    }
    text = f"Workflow validation failed. Raw response: {json.dumps(raw)}"
    on_status(rp, status("FAILED", error=text))
    with pytest.raises(GraphValidationError) as info:
        await run(make())
    assert info.value.server_message == text
    assert info.value.errors[0].node_id == "3"


async def test_validation_failed_with_unparseable_lines_keeps_text(rp: respx.MockRouter) -> None:
    text = "Workflow validation failed:\n• Node 7 (errors): [{broken"
    on_status(rp, status("FAILED", error=text))
    with pytest.raises(GraphValidationError) as info:
        await run(make())
    assert info.value.errors[0].node_id == "7"
    assert "[{broken" in info.value.errors[0].message


async def test_missing_input_images_error_is_verbatim(rp: respx.MockRouter) -> None:
    on_status(
        rp,
        status(
            "FAILED",
            error="Failed to upload one or more input images",
            output={"details": ["Error decoding base64 for face.png: Incorrect padding"]},
        ),
    )
    with pytest.raises(JobFailedError) as info:
        await run(make())
    text = str(info.value)
    assert "Failed to upload one or more input images" in text
    assert "Error decoding base64 for face.png: Incorrect padding" in text
    assert info.value.job_id == "job-1"


async def test_unreachable_comfyui_error_is_verbatim(rp: respx.MockRouter) -> None:
    msg = "ComfyUI server (127.0.0.1:8188) not reachable after multiple retries."
    on_status(rp, status("FAILED", error=msg))
    with pytest.raises(JobFailedError) as info:
        await run(make())
    assert info.value.server_message == msg


async def test_execution_error_names_the_node(rp: respx.MockRouter) -> None:
    detail = (
        "Workflow execution error: Node Type: KSampler, Node ID: 3, Message: CUDA out of memory"
    )
    on_status(rp, status("FAILED", error="Job processing failed", output={"details": [detail]}))
    with pytest.raises(JobFailedError) as info:
        await run(make())
    exc = info.value
    assert (exc.node_id, exc.node_type) == ("3", "KSampler")
    assert "CUDA out of memory" in str(exc) and "Job processing failed" in str(exc)


async def test_execution_error_next_to_partial_images_fails(rp: respx.MockRouter) -> None:
    detail = "Workflow execution error: Node Type: VAEDecode, Node ID: 8, Message: boom"
    on_status(
        rp,
        completed(
            {"images": [{"filename": "a.png", "type": "base64", "data": B64}], "errors": [detail]}
        ),
    )
    with pytest.raises(JobFailedError) as info:
        await run(make())
    assert info.value.node_id == "8" and info.value.server_message == detail


async def test_handler_exception_json_error(rp: respx.MockRouter) -> None:
    error = json.dumps(
        {
            "error_type": "<class 'ValueError'>",
            "error_message": "bad things",
            "error_traceback": "Traceback (most recent call last): ...",
            "hostname": "h",
        }
    )
    on_status(rp, status("FAILED", error=error))
    with pytest.raises(JobFailedError) as info:
        await run(make())
    exc = info.value
    assert exc.server_message == "bad things"
    assert exc.exception_type == "ValueError"
    assert exc.traceback is not None and exc.traceback.startswith("Traceback")


async def test_failed_event_carries_the_error(rp: respx.MockRouter) -> None:
    on_status(rp, status("IN_PROGRESS"), status("FAILED", error="kaput"))
    got = await events(make())
    assert isinstance(got[-1], Failed)
    assert isinstance(got[-1].error, JobFailedError)


async def test_timed_out_is_a_job_timeout(rp: respx.MockRouter) -> None:
    on_status(rp, status("IN_PROGRESS"), status("TIMED_OUT"))
    with pytest.raises(JobTimeoutError) as info:
        await run(make(execution_timeout=30))
    assert info.value.remote_cancelled is True
    assert "executionTimeout 30 s" in str(info.value)
    assert "RYLA_GEN_RUNPOD_EXECUTION_TIMEOUT" in str(info.value)
    assert rp["cancel"].call_count == 0  # RunPod already stopped it


async def test_cancelled(rp: respx.MockRouter) -> None:
    on_status(rp, status("IN_QUEUE"), status("CANCELLED"))
    got = await events(make())
    assert isinstance(got[-1], Cancelled)
    on_status(rp, status("CANCELLED"))
    with pytest.raises(JobCancelledError):
        await run(make())


# -- status / cancel / info ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "state"),
    [
        ("IN_QUEUE", JobState.QUEUED),
        ("IN_PROGRESS", JobState.RUNNING),
        ("COMPLETED", JobState.COMPLETED),
        ("FAILED", JobState.FAILED),
        ("CANCELLED", JobState.CANCELLED),
        ("TIMED_OUT", JobState.FAILED),
    ],
)
async def test_status_maps_every_state(rp: respx.MockRouter, wire: str, state: JobState) -> None:
    on_status(rp, status(wire, error="oops" if wire == "FAILED" else None))
    got = await make().status("job-1")
    assert got.state is state and got.id == "job-1"
    if wire in ("FAILED", "TIMED_OUT"):
        assert got.error


async def test_cancel_posts_cancel_and_tolerates_unknown_job(rp: respx.MockRouter) -> None:
    provider = make()
    await provider.cancel("job-1")
    assert rp["cancel"].called
    gone = rp.post("/cancel/gone").respond(404, json={"error": "request does not exist"})
    await provider.cancel("gone")
    assert gone.calls.last.response.status_code == 404


async def test_info_reads_health(rp: respx.MockRouter) -> None:
    rp.get("/health").respond(
        200, json={"jobs": {"inQueue": 2, "inProgress": 1}, "workers": {"idle": 0, "running": 1}}
    )
    info = await make().info()
    assert info["provider"] == "runpod" and info["endpoint_id"] == ENDPOINT
    assert info["jobs"]["inQueue"] == 2


# -- retries and the run-once rule -----------------------------------------------------------


async def test_status_429_with_retry_after_then_success(rp: respx.MockRouter) -> None:
    route = on_status(
        rp,
        httpx.Response(429, headers={"Retry-After": "0.01"}),
        completed({"images": [], "status": "success_no_images"}),
    )
    await run(make())
    assert route.call_count == 2


async def test_status_503_then_success(rp: respx.MockRouter) -> None:
    route = on_status(
        rp, httpx.Response(503), completed({"images": [], "status": "success_no_images"})
    )
    await run(make())
    assert route.call_count == 2


async def test_status_connection_reset_then_success(rp: respx.MockRouter) -> None:
    route = on_status(
        rp,
        httpx.ReadError("Connection reset by peer"),
        completed({"images": [], "status": "success_no_images"}),
    )
    await run(make())
    assert route.call_count == 2


async def test_polling_rides_out_an_outage_longer_than_one_request(rp: respx.MockRouter) -> None:
    # 4 failures exhaust one request's retries (3); the follow loop polls again.
    route = on_status(
        rp, *[httpx.Response(502)] * 5, completed({"images": [], "status": "success_no_images"})
    )
    await run(make())
    assert route.call_count == 6


async def test_polling_gives_up_after_the_grace_period(
    rp: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_jobapi, "UNREACHABLE_GRACE", 0.0)
    on_status(rp, httpx.Response(503))
    with pytest.raises(ProviderUnavailableError):
        await run(make())


async def test_run_429_is_retried(rp: respx.MockRouter) -> None:
    rp.post("/run", name="run").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "0"}),
            httpx.Response(200, json={"id": "job-1", "status": "IN_QUEUE"}),
        ]
    )
    on_status(rp, completed({"images": [], "status": "success_no_images"}))
    await run(make())
    assert rp["run"].call_count == 2


@pytest.mark.parametrize(
    "failure",
    [httpx.Response(500, json={"error": "internal"}), httpx.ReadTimeout("read timed out")],
    ids=["500", "read-timeout"],
)
async def test_run_is_never_resent_when_it_may_have_arrived(
    rp: respx.MockRouter, failure: httpx.Response | Exception
) -> None:
    rp.post("/run", name="run").mock(side_effect=[failure])
    with pytest.raises(ProviderUnavailableError, match="not re-sent"):
        await make().submit(req(), deadline=Deadline(10))
    assert rp["run"].call_count == 1


async def test_run_resent_when_the_connection_was_never_made(rp: respx.MockRouter) -> None:
    rp.post("/run", name="run").mock(
        side_effect=[
            httpx.ConnectError("connection refused"),
            httpx.Response(200, json={"id": "job-1", "status": "IN_QUEUE"}),
        ]
    )
    job = await make().submit(req(), deadline=Deadline(10))
    assert job.id == "job-1" and rp["run"].call_count == 2


async def test_too_large_request_is_refused_before_sending(rp: respx.MockRouter) -> None:
    with pytest.raises(InputError, match="RunPod accepts at most"):
        await make().submit(req(images={"big.png": b"\0" * 8_000_000}), deadline=Deadline(10))
    assert rp["run"].call_count == 0


# -- deadline --------------------------------------------------------------------------------


async def test_deadline_cancels_the_remote_job(rp: respx.MockRouter) -> None:
    on_status(rp, status("IN_PROGRESS"))
    async with AsyncClient(make(), validate_graphs=False) as client:
        with pytest.raises(JobTimeoutError) as info:
            await client.generate(GRAPH, timeout=0.2)
    assert info.value.remote_cancelled is True
    assert info.value.job_id == "job-1"
    assert rp["cancel"].call_count == 1


async def test_backoff_grows_to_the_cap(
    rp: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []

    async def no_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(_jobapi, "_sleep", no_sleep)
    on_status(
        rp,
        *[status("IN_QUEUE")] * 12,
        completed({"images": [], "status": "success_no_images"}),
    )
    provider = make(poll_interval=1.0)
    job = await provider.submit(req(), deadline=Deadline(None))
    await provider.wait(job, Deadline(None))
    assert slept[0] == 1.0
    assert slept == sorted(slept)
    assert max(slept) == MAX_POLL_INTERVAL


# -- malformed answers and secrets -----------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, content=b'{"id": "job-1", "status": "COMPL'),
        httpx.Response(200, content=b"<html>gateway</html>"),
        httpx.Response(200, json=["not", "an", "object"]),
        status("WEIRD_STATE"),
        status("COMPLETED"),
        completed("just a string"),
        completed({"images": "nope"}),
        completed({"images": [{"filename": "a.png", "type": "base64", "data": "!!notbase64"}]}),
        completed({"images": [{"filename": "a.png", "type": "base64", "data": B64[:-3]}]}),
        completed({"images": [{"filename": "a.png", "type": "ftp", "data": "x"}]}),
        completed({"images": [{"filename": "a.png", "type": "s3_url", "data": None}]}),
        completed({"unexpected": True}),
    ],
)
async def test_malformed_answers_are_protocol_errors(
    rp: respx.MockRouter, answer: httpx.Response
) -> None:
    on_status(rp, answer)
    with pytest.raises(ProtocolError):
        await run(make())


async def test_malformed_run_answer_is_protocol_error(rp: respx.MockRouter) -> None:
    rp.post("/run", name="run").respond(200, content=b'{"id": ')
    with pytest.raises(ProtocolError):
        await make().submit(req(), deadline=Deadline(10))
    rp.post("/run", name="run").respond(200, json={"status": "IN_QUEUE"})
    with pytest.raises(ProtocolError, match="no job id"):
        await make().submit(req(), deadline=Deadline(10))


async def test_401_is_authentication_error_without_the_key(rp: respx.MockRouter) -> None:
    rp.post("/run", name="run").respond(401, json={"error": f"invalid api key {KEY}"})
    provider = make()
    with pytest.raises(AuthenticationError) as info:
        await provider.submit(req(), deadline=Deadline(10))
    assert rp["run"].call_count == 1
    assert KEY not in str(info.value)
    assert KEY not in repr(provider)
    assert KEY not in repr(info.value)


async def test_key_never_in_worker_errors(rp: respx.MockRouter) -> None:
    on_status(rp, status("FAILED", error=f"token {KEY} leaked by a custom handler"))
    with pytest.raises(JobFailedError) as info:
        await run(make())
    assert KEY not in str(info.value)


async def test_connection_refused_everywhere_is_unavailable(rp: respx.MockRouter) -> None:
    rp.post("/run", name="run").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ProviderUnavailableError) as info:
        await make().submit(req(), deadline=Deadline(10))
    assert rp["run"].call_count == FAST.max_retries + 1
    assert "not re-sent" not in str(info.value)
    assert KEY not in str(info.value)


async def test_settings_build_the_provider(rp: respx.MockRouter) -> None:
    on_status(rp, completed({"images": [{"filename": "a.png", "type": "base64", "data": B64}]}))
    async with AsyncClient(
        "runpod",
        runpod_endpoint_id=ENDPOINT,
        runpod_api_key=KEY,
        runpod_base_url=BASE,
        runpod_execution_timeout=60,
        poll_interval=0.001,
        validate_graphs=False,
    ) as client:
        assert isinstance(client.provider, RunPodProvider)
        assert KEY not in repr(client)
        result = await client.generate(GRAPH, timeout=10)
    assert result.image.data == PNG
    assert json.loads(rp["run"].calls.last.request.content)["policy"] == {"executionTimeout": 60000}
