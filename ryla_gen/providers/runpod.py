"""The RunPod provider: RunPod serverless endpoints running worker-comfyui (v5).

Wire contract (RunPod's serverless API, ``Authorization: Bearer <api key>``):

* ``POST {base}/{endpoint}/run`` ``{"input": {"workflow", "images": [{"name", "image"}]},
  "policy": {"executionTimeout", "ttl"} (ms, only keys set), "webhook"}`` ->
  ``{"id", "status"}``. /run is **not idempotent** (RunPod has no client-chosen job ids):
  it is only re-sent when the connection was never made or RunPod answered 429 (the job
  was not accepted). After a 5xx or a read timeout the job may exist, so the error says
  so and nothing is re-sent.
* ``GET /status/{id}`` (polled with backoff; retried on 429/5xx/timeouts) ->
  ``{"id", "status", "delayTime", "executionTime", "output"?, "error"?}``.
* ``POST /cancel/{id}``; ``GET /health`` for :meth:`RunPodProvider.info`.

States: ``IN_QUEUE`` -> queued, ``IN_PROGRESS`` -> running, ``COMPLETED``, ``FAILED``,
``CANCELLED``, and ``TIMED_OUT``, which means RunPod itself stopped the job at the
endpoint's (or the request's ``policy.executionTimeout``) execution timeout, or dropped
it from the queue when its ``ttl`` ran out. It ends the job with a
:class:`~ryla_gen.errors.JobTimeoutError` (``remote_cancelled=True``: nothing runs any
more), whose message names ``RYLA_GEN_RUNPOD_EXECUTION_TIMEOUT`` / ``RYLA_GEN_RUNPOD_TTL``.

worker-comfyui's output is ``{"images": [{"filename", "type": "base64"|"s3_url",
"data"}], "errors"?: [...]}`` (or ``{"images": [], "status": "success_no_images"}``);
the pre-v5 ``{"status", "message"}`` shape is converted. S3 URLs are downloaded with a
plain GET that carries no RunPod credentials. Worker errors (``"error": "Workflow
validation failed: ..."``, ``"Failed to upload one or more input images"``, "ComfyUI
server ... not reachable", execution errors) are raised with the worker's text verbatim:
:class:`~ryla_gen.errors.GraphValidationError` (with the node errors the worker lists)
for validation failures, :class:`~ryla_gen.errors.JobFailedError` otherwise.
"""

from __future__ import annotations

import ast
import base64
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from ryla_gen._constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RUNPOD_BASE_URL,
)
from ryla_gen._http import HTTP, Deadline, RetryPolicy, check_token, redact
from ryla_gen.errors import (
    GraphValidationError,
    InputError,
    JobFailedError,
    JobTimeoutError,
    NodeError,
    ProtocolError,
    ProviderUnavailableError,
)
from ryla_gen.providers._base import SubmittedJob
from ryla_gen.providers._jobapi import (
    PollingProvider,
    Snapshot,
    content_type_for,
    decode_base64_image,
    json_object,
)
from ryla_gen.types import (
    Cancelled,
    Completed,
    Failed,
    GenerationResult,
    JobRequest,
    JobState,
    JobStatus,
    OutputImage,
    Timings,
)

__all__ = ["MAX_RUN_BODY_BYTES", "RunPodProvider", "worker_error"]

log = logging.getLogger("ryla_gen.runpod")

MAX_RUN_BODY_BYTES = 10 * 1024 * 1024
"""RunPod's limit on a ``/run`` request body (input images travel inline, as base64)."""

_STATES = {
    "IN_QUEUE": JobState.QUEUED,
    "IN_PROGRESS": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "TIMED_OUT": JobState.FAILED,
}

_VALIDATION_PREFIXES = (
    "workflow validation failed",
    "comfyui validation failed",
)
#: "• Node 3 (errors): [...]" lines of worker-comfyui's validation message.
_NODE_LINE = re.compile(r"^\s*(?:[•*-]\s*)?Node\s+(\S+)\s+\(([^)]*)\):\s*(.*)$")
#: "Node Type: KSampler, Node ID: 3, Message: ..." of worker-comfyui's execution errors.
_EXEC_ERROR = re.compile(
    r"Node Type:\s*(?P<type>[^,]*),\s*Node ID:\s*(?P<id>[^,]*),\s*Message:\s*(?P<msg>.*)",
    re.DOTALL,
)
_LITERAL_LIMIT = 100_000


class RunPodProvider(PollingProvider):
    """Runs jobs on a RunPod serverless endpoint with the worker-comfyui image.

    Args:
        endpoint_id: The serverless endpoint's id.
        api_key: A RunPod API key (never shown in reprs, logs or errors).
        base_url: RunPod's API root (default ``https://api.runpod.ai/v2``).
        execution_timeout: Seconds RunPod lets the job execute (``policy.executionTimeout``).
        ttl: Seconds the job may live at RunPod, queue included (``policy.ttl``).
        webhook: URL RunPod calls when the job ends.
        poll_interval: Seconds between the first ``/status`` polls (backs off later).
        retry: Retry policy for safe requests.
        http_client: An ``httpx.AsyncClient`` to use for RunPod's API (tests).
    """

    name: ClassVar[str] = "runpod"

    def __init__(
        self,
        endpoint_id: str,
        *,
        api_key: str,
        base_url: str = DEFAULT_RUNPOD_BASE_URL,
        execution_timeout: float | None = None,
        ttl: float | None = None,
        webhook: str | None = None,
        retry: RetryPolicy | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.endpoint_id = endpoint_id
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/{quote(endpoint_id, safe='')}"
        self.execution_timeout = execution_timeout
        self.ttl = ttl
        self._webhook = webhook
        self.poll_interval = poll_interval
        check_token(api_key, "RYLA_GEN_RUNPOD_API_KEY")
        self._secrets = [s for s in (api_key, webhook) if s]
        self.http = HTTP(
            self.url,
            provider=self.name,
            headers={"Authorization": f"Bearer {api_key}"},
            retry=retry,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            client=http_client,
            secrets=self._secrets,
        )
        self._download_options: dict[str, Any] = {
            "retry": retry,
            "connect_timeout": connect_timeout,
            "request_timeout": request_timeout,
        }
        self._downloads: HTTP | None = None

    def __repr__(self) -> str:
        return f"RunPodProvider(endpoint_id={self.endpoint_id!r}, base_url={self.base_url!r})"

    # -- contract ----------------------------------------------------------------------

    async def submit(self, request: JobRequest, *, deadline: Deadline) -> SubmittedJob:
        """POST /run once (re-sent only when it provably did not arrive); return the job."""
        body = self._run_body(request)
        content = json.dumps(body, separators=(",", ":")).encode()
        if len(content) > MAX_RUN_BODY_BYTES:
            raise InputError(
                f"The RunPod request is {len(content) / 1e6:.1f} MB; RunPod accepts at most "
                f"{MAX_RUN_BODY_BYTES / 1e6:.1f} MB per /run (input images travel inline as "
                "base64). Use smaller input images, or the modal provider."
            )
        t0 = time.monotonic()
        try:
            r = await self.http.request(
                "POST",
                "/run",
                content=content,
                headers={"Content-Type": "application/json"},
                idempotent=False,
                deadline=deadline,
            )
        except ProviderUnavailableError as exc:
            if _maybe_arrived(exc):
                raise ProviderUnavailableError(
                    f"{exc} RunPod may have queued the job anyway; it was not re-sent, so "
                    "it cannot run twice. Check the endpoint's requests in the RunPod console.",
                    status_code=exc.status_code,
                    body=exc.body,
                    provider=self.name,
                ) from exc
            raise
        answer = json_object(r, self.name, "POST /run")
        job_id = answer.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise ProtocolError(
                f"RunPod's answer to POST /run has no job id: {_short(answer)}",
                status_code=r.status_code,
                body=answer,
                provider=self.name,
            )
        return SubmittedJob(id=job_id, request=request, upload_seconds=time.monotonic() - t0)

    def _run_body(self, request: JobRequest) -> dict[str, Any]:
        job_input: dict[str, Any] = {"workflow": request.graph}
        if request.images:
            job_input["images"] = [
                {"name": name, "image": base64.b64encode(data).decode("ascii")}
                for name, data in request.images.items()
            ]
        body: dict[str, Any] = {"input": job_input}
        policy: dict[str, int] = {}
        if self.execution_timeout is not None:
            policy["executionTimeout"] = int(self.execution_timeout * 1000)
        if self.ttl is not None:
            policy["ttl"] = int(self.ttl * 1000)
        if policy:
            body["policy"] = policy
        if self._webhook:
            body["webhook"] = self._webhook
        return body

    async def status(self, job_id: str) -> JobStatus:
        """The job's state from ``GET /status/{id}`` (one request, retried if safe)."""
        data = await self._status(job_id, Deadline(self.http.request_timeout))
        state = _state(data, self.name)
        error: str | None = None
        if data.get("status") == "TIMED_OUT":
            error = "RunPod stopped the job at its execution timeout or ttl (TIMED_OUT)."
        elif state is JobState.FAILED:
            error = self._redact(_error_text(data.get("error")) or "failed")
        return JobStatus(id=job_id, state=state, error=error)

    async def cancel(self, job_id: str) -> None:
        """POST /cancel/{id}. Cancelling a finished or unknown job is not an error."""
        await self.http.request(
            "POST",
            f"/cancel/{quote(job_id, safe='')}",
            idempotent=True,
            deadline=Deadline(self.http.request_timeout),
            ok=(400, 404, 409),
        )

    async def aclose(self) -> None:
        """Close HTTP connections."""
        await self.http.aclose()
        if self._downloads is not None:
            await self._downloads.aclose()

    async def info(self) -> dict[str, Any]:
        """``GET /health``: jobs (completed, failed, inProgress, inQueue, retried), workers."""
        r = await self.http.request("GET", "/health", idempotent=True)
        data = json_object(r, self.name, "GET /health")
        return {"provider": self.name, "endpoint_id": self.endpoint_id, **data}

    # -- following a job -----------------------------------------------------------------

    async def _status(self, job_id: str, deadline: Deadline) -> dict[str, Any]:
        r = await self.http.request(
            "GET", f"/status/{quote(job_id, safe='')}", idempotent=True, deadline=deadline
        )
        return json_object(r, self.name, "GET /status")

    async def _poll(self, job: SubmittedJob, deadline: Deadline) -> Snapshot:
        data = await self._status(job.id, deadline)
        state = _state(data, self.name)
        if not state.terminal:
            return Snapshot(state=state)
        status = data.get("status")
        terminal: Completed | Failed | Cancelled
        if status == "CANCELLED":
            terminal = Cancelled(job.id)
        elif status == "TIMED_OUT":
            terminal = Failed(job.id, self._timed_out(job.id, data))
        elif status == "FAILED":
            terminal = Failed(job.id, self._failure(job.id, data.get("error"), data.get("output")))
        else:
            terminal = await self._completed(job, data, deadline)
        return Snapshot(state=state, terminal=terminal)

    async def _completed(
        self, job: SubmittedJob, data: Mapping[str, Any], deadline: Deadline
    ) -> Completed | Failed:
        output = data.get("output")
        if data.get("error"):
            return Failed(job.id, self._failure(job.id, data.get("error"), output))
        if not isinstance(output, Mapping):
            raise ProtocolError(
                f"RunPod reported job {job.id} COMPLETED without an output object "
                f"(got {_short(output)}). Is the endpoint running worker-comfyui?",
                body=dict(data),
                provider=self.name,
            )
        if output.get("error"):
            return Failed(job.id, self._failure(job.id, output.get("error"), output))
        t0 = time.monotonic()
        if "images" in output:
            images = await self._v5_images(job.id, output, deadline)
            if isinstance(images, Failed):
                return images
        elif "message" in output and "status" in output:
            images = await self._legacy_images(job.id, output, deadline)
            if isinstance(images, Failed):
                return images
        else:
            raise ProtocolError(
                f"RunPod job {job.id} finished with an output worker-comfyui does not "
                f"produce: {_short(output)}",
                body=dict(data),
                provider=self.name,
            )
        transfer = job.upload_seconds + (time.monotonic() - t0)
        request = job.request
        result = GenerationResult(
            job_id=job.id,
            provider=self.name,
            images=images,
            graph=dict(request.graph) if request else {},
            seed=request.seed if request else None,
            timings=Timings(
                queue_wait=_ms(data.get("delayTime")),
                execution=_ms(data.get("executionTime")),
                transfer=transfer,
                total=time.monotonic() - job.started,
            ),
        )
        return Completed(job.id, result)

    async def _v5_images(
        self, job_id: str, output: Mapping[str, Any], deadline: Deadline
    ) -> list[OutputImage] | Failed:
        entries = output.get("images")
        raw_errors = output.get("errors")
        if isinstance(raw_errors, str):
            raw_errors = [raw_errors]
        if raw_errors is not None and not isinstance(raw_errors, list):
            raise ProtocolError(
                f"RunPod job {job_id}: output 'errors' is not a list: {_short(raw_errors)}",
                provider=self.name,
            )
        errors = [str(e) for e in raw_errors or [] if e]
        if not isinstance(entries, list):
            raise ProtocolError(
                f"RunPod job {job_id}: output 'images' is not a list: {_short(entries)}",
                provider=self.name,
            )
        failed = [e for e in errors if e.startswith("Workflow execution error")]
        if failed or (not entries and errors):
            # ComfyUI failed while executing (other nodes' outputs are partial): report
            # the worker's own lines, the execution error first.
            lines = list(dict.fromkeys(failed + errors))
            return Failed(job_id, self._failure(job_id, lines[0], {"details": lines[1:]}))
        if errors:
            log.warning(
                "worker-comfyui reported for job %s: %s",
                job_id,
                "; ".join(self._redact(e) for e in errors),
            )
        images: list[OutputImage] = []
        for n, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                raise ProtocolError(
                    f"RunPod job {job_id}: image entry {n} is not an object: {_short(entry)}",
                    provider=self.name,
                )
            filename = str(entry.get("filename") or f"image_{n:05d}.png")
            kind = entry.get("type", "base64")
            if kind == "base64":
                raw = decode_base64_image(entry.get("data"), provider=self.name, filename=filename)
                ctype = content_type_for(filename)
                images.append(OutputImage(data=raw, filename=filename, content_type=ctype))
            elif kind == "s3_url":
                images.append(await self._download(entry.get("data"), filename, deadline))
            else:
                raise ProtocolError(
                    f"RunPod job {job_id}: image {filename!r} has unknown type {kind!r} "
                    "(expected 'base64' or 's3_url').",
                    provider=self.name,
                )
        return images

    async def _legacy_images(
        self, job_id: str, output: Mapping[str, Any], deadline: Deadline
    ) -> list[OutputImage] | Failed:
        """worker-comfyui before v5: ``{"status": "success", "message": <one image>}``."""
        message = output.get("message")
        if output.get("status") != "success" or not isinstance(message, str):
            return Failed(
                job_id,
                self._failure(
                    job_id,
                    f"worker-comfyui (pre-v5 output) reported status {output.get('status')!r}: "
                    f"{message}",
                    None,
                ),
            )
        if message.startswith(("http://", "https://")):
            name = message.split("?", 1)[0].rsplit("/", 1)[-1] or "output.png"
            return [await self._download(message, name, deadline)]
        return [
            OutputImage(
                data=decode_base64_image(message, provider=self.name, filename="output.png"),
                filename="output.png",
            )
        ]

    async def _download(self, url: Any, filename: str, deadline: Deadline) -> OutputImage:
        """GET an ``s3_url`` image: no RunPod credentials go to the storage host."""
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ProtocolError(
                f"RunPod sent image {filename!r} with an invalid s3_url: {_short(url)}",
                provider=self.name,
            )
        if self._downloads is None:
            # Pre-signed storage URLs get a client WITHOUT the RunPod credentials.
            self._downloads = HTTP(
                "", provider=f"{self.name} (image storage)", **self._download_options
            )
        r = await self._downloads.request("GET", url, idempotent=True, deadline=deadline)
        if not r.content:
            raise ProtocolError(
                f"The image storage sent an empty file for {filename!r}.", provider=self.name
            )
        ctype = r.headers.get("content-type", "").split(";")[0].strip()
        if not ctype.startswith("image/"):
            ctype = content_type_for(filename)
        return OutputImage(data=r.content, filename=filename, content_type=ctype)

    # -- errors --------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _timed_out(self, job_id: str, data: Mapping[str, Any]) -> JobTimeoutError:
        limits = []
        if self.execution_timeout is not None:
            limits.append(f"executionTimeout {self.execution_timeout:g} s")
        if self.ttl is not None:
            limits.append(f"ttl {self.ttl:g} s")
        what = ", ".join(limits) or "the endpoint's execution timeout"
        extra = _error_text(data.get("error"))
        return JobTimeoutError(
            f"RunPod stopped job {job_id} (TIMED_OUT): it exceeded {what}."
            + (f" RunPod said: {self._redact(extra)}." if extra else "")
            + " Raise RYLA_GEN_RUNPOD_EXECUTION_TIMEOUT / RYLA_GEN_RUNPOD_TTL or the "
            "endpoint's execution timeout for long jobs.",
            job_id=job_id,
            remote_cancelled=True,
        )

    def _failure(self, job_id: str, error: Any, output: Any) -> Exception:
        """:func:`worker_error`, with credentials scrubbed from the worker's text first."""
        if isinstance(error, str):
            error = self._redact(error)
        elif isinstance(error, Mapping):
            error = {k: self._redact(v) if isinstance(v, str) else v for k, v in error.items()}
        details = [self._redact(d) for d in _details(output)]
        return worker_error(job_id, error, {"details": details})


# -- helpers ------------------------------------------------------------------------------


def worker_error(job_id: str, error: Any, output: Any = None) -> Exception:
    """The typed error for a worker-comfyui failure, keeping the worker's text verbatim.

    ``error`` is RunPod's top-level ``error`` (or the output's): a string, possibly the
    JSON that runpod-python writes for a handler exception (``error_type``,
    ``error_message``, ``error_traceback``). ``output`` may carry ``details``/``errors``.
    """
    details = _details(output)
    message, exception_type, traceback = _unpack_error(error)
    if not message:
        message = "RunPod reported the job as failed without an error message"
    lowered = message.lower()
    if lowered.startswith(_VALIDATION_PREFIXES):
        text = message if not details else message + "\n" + "\n".join(details)
        return GraphValidationError(
            _node_errors(text), server_message=text, error_type="workflow_validation_failed"
        )
    node_id = node_type = None
    for candidate in [message, *details]:
        m = _EXEC_ERROR.search(candidate)
        if m:
            node_type = _none_if_empty(m.group("type"))
            node_id = _none_if_empty(m.group("id"))
            exception_type = exception_type or "ExecutionError"
            break
    full = message if not details else message + ": " + "; ".join(details)
    return JobFailedError(
        full,
        job_id=job_id,
        node_id=node_id,
        node_type=node_type,
        exception_type=exception_type,
        traceback=traceback,
    )


def _unpack_error(error: Any) -> tuple[str, str | None, str | None]:
    """(message, exception type, traceback) from RunPod's ``error`` field."""
    if isinstance(error, str):
        stripped = error.strip()
        if stripped.startswith("{"):
            try:
                parsed = json.loads(stripped)
            except ValueError:
                return error, None, None
            if isinstance(parsed, dict):
                error = parsed
            else:  # pragma: no cover - a JSON object string always parses to a dict
                return error, None, None
        else:
            return error, None, None
    if isinstance(error, Mapping):
        msg = error.get("error_message") or error.get("message") or error.get("error")
        etype = error.get("error_type") or error.get("type")
        tb = error.get("error_traceback") or error.get("traceback")
        if isinstance(etype, str):
            # runpod-python writes str(type(err)): "<class 'ValueError'>".
            m = re.fullmatch(r"<class '(?:[\w.]*\.)?(\w+)'>", etype)
            etype = m.group(1) if m else etype
        return (
            str(msg) if msg else json.dumps(error)[:2000],
            str(etype) if etype else None,
            str(tb) if tb else None,
        )
    if error is None:
        return "", None, None
    return str(error), None, None


def _error_text(error: Any) -> str:
    return _unpack_error(error)[0]


def _details(output: Any) -> list[str]:
    if not isinstance(output, Mapping):
        return []
    out: list[str] = []
    for key in ("details", "errors"):
        items = output.get(key)
        if isinstance(items, str):
            items = [items]
        if isinstance(items, Sequence):
            out.extend(str(i) for i in items if i)
    return list(dict.fromkeys(out))


def _node_errors(text: str) -> list[NodeError]:
    """Node errors from worker-comfyui's "• Node 3 (errors): [...]" lines, where present.

    Also understands the "... Raw response: {ComfyUI's JSON}" fallback it writes.
    """
    class_types: dict[str, str] = {}
    raw: dict[str, list[Any]] = {}
    for line in text.splitlines():
        m = _NODE_LINE.match(line)
        if not m:
            continue
        node_id, key, value = m.group(1), m.group(2).strip(), m.group(3).strip()
        if key == "class_type":
            class_types[node_id] = value
        elif key == "errors":
            raw.setdefault(node_id, []).append(_literal(value))
    errors: list[NodeError] = []
    for node_id, values in raw.items():
        ctype = class_types.get(node_id, "")
        for value in values:
            if isinstance(value, list) and value:
                for e in value:
                    errors.append(_node_error(node_id, ctype, e))
            else:
                errors.append(_node_error(node_id, ctype, value))
    if not errors and "Raw response:" in text:
        errors = _from_raw_response(text.split("Raw response:", 1)[1])
    return errors


def _from_raw_response(text: str) -> list[NodeError]:
    from ryla_gen.providers.comfyui import node_errors_from_response

    try:
        body = json.loads(text.strip())
    except ValueError:
        return []
    return node_errors_from_response(body).errors


def _literal(value: str) -> Any:
    if len(value) > _LITERAL_LIMIT:
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value


def _node_error(node_id: str, class_type: str, e: Any) -> NodeError:
    if isinstance(e, Mapping):
        extra = e.get("extra_info")
        input_name = extra.get("input_name") if isinstance(extra, Mapping) else None
        return NodeError(
            node_id=node_id,
            class_type=class_type,
            input_name=str(input_name) if input_name else None,
            message=str(e.get("message") or e.get("type") or "invalid"),
            type=str(e.get("type") or "invalid"),
            details=str(e.get("details") or ""),
        )
    return NodeError(node_id=node_id, class_type=class_type, input_name=None, message=str(e))


def _state(data: Mapping[str, Any], provider: str) -> JobState:
    status = data.get("status")
    state = _STATES.get(status) if isinstance(status, str) else None
    if state is None:
        raise ProtocolError(
            f"RunPod sent an unknown job status {status!r} (expected one of {', '.join(_STATES)}).",
            body=dict(data),
            provider=provider,
        )
    return state


def _maybe_arrived(exc: ProviderUnavailableError) -> bool:
    """False only when the request provably never reached RunPod (connect failures)."""
    if exc.status_code is not None:
        return True
    cause = exc.__cause__
    return not isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def _ms(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value) / 1000.0
    return None


def _none_if_empty(value: str) -> str | None:
    value = value.strip()
    return None if not value or value == "None" else value


def _short(value: Any) -> str:
    return repr(value)[:300]
