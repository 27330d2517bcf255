"""The Modal provider: the ryla-gen job API, deployed on Modal or run locally.

Wire contract (``Authorization: Bearer <token>``; see the app in ``ryla_gen_modal``):

* ``POST /jobs`` with a **client-chosen** ``id`` (uuid4). The server answers an existing
  id with that job instead of creating another, so the create is safe to retry on
  timeouts and 5xx like any read.
* ``GET /jobs/{id}`` -> JobView, polled with backoff: ``queued`` (``queue_position``),
  ``running`` (``progress``), ``completed`` (images as base64), ``failed`` (``error``
  with node, exception type and traceback), ``cancelled``.
* ``POST /jobs/{id}/cancel``; ``GET /health``; ``GET /models``; ``/loras`` management.

Error bodies ``{"error": {"type", "message", "node_errors"?, "missing_models"?}}``
become typed errors: ``validation_error`` -> :class:`~ryla_gen.errors.GraphValidationError`,
``model_missing`` -> :class:`~ryla_gen.errors.ModelMissingError`, 413 ->
:class:`~ryla_gen.errors.InputError`; 401/404/429/5xx as everywhere
(:mod:`ryla_gen._http`).
"""

from __future__ import annotations

import base64
import contextlib
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from ryla_gen._constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_LONG_POLL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_REQUEST_TIMEOUT,
)
from ryla_gen._http import HTTP, Deadline, RetryPolicy, check_token, redact
from ryla_gen.errors import (
    APIError,
    GraphValidationError,
    InputError,
    JobFailedError,
    JobTimeoutError,
    ModelMissingError,
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

__all__ = ["ModalProvider", "error_from_body"]

_STATES = {s.value: s for s in JobState}


class ModalProvider(PollingProvider):
    """Runs jobs through the ryla-gen job API (on Modal, or ``ryla-gen serve`` locally).

    Args:
        url: The app's base URL (printed by ``modal deploy``).
        token: Its bearer token (``RYLA_GEN_API_TOKEN`` of the app's secret); never shown
            in reprs, logs or errors.
        poll_interval: Seconds between the first ``GET /jobs/{id}`` polls (backs off) when
            the server does not hold long polls.
        long_poll: Seconds the server may hold each status request open, answering the
            moment the job changes (0 turns long polls off).
        retry: Retry policy for safe requests.
        http_client: An ``httpx.AsyncClient`` to use (tests).
    """

    name: ClassVar[str] = "modal"

    def __init__(
        self,
        url: str,
        *,
        token: str,
        retry: RetryPolicy | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        long_poll: float = DEFAULT_LONG_POLL,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.poll_interval = poll_interval
        self.long_poll = long_poll
        self._seen: dict[str, float] = {}  # job id -> updated_at of the last view
        check_token(token, "RYLA_GEN_MODAL_TOKEN")
        self._secrets = [token] if token else []
        self.http = HTTP(
            self.url,
            provider=self.name,
            headers={"Authorization": f"Bearer {token}"},
            retry=retry,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            client=http_client,
            secrets=self._secrets,
        )

    def __repr__(self) -> str:
        return f"ModalProvider(url={self.url!r})"

    # -- contract ----------------------------------------------------------------------

    async def submit(self, request: JobRequest, *, deadline: Deadline) -> SubmittedJob:
        """POST /jobs under a fresh client-chosen id (retried safely: the server de-dups)."""
        job_id = str(uuid.uuid4())
        body = {
            "id": job_id,
            "graph": request.graph,
            "images": {
                name: base64.b64encode(data).decode("ascii")
                for name, data in request.images.items()
            },
            "workflow": request.workflow,
            "seed": request.seed,
        }
        t0 = time.monotonic()
        try:
            r = await self.http.request(
                "POST", "/jobs", json=body, idempotent=True, deadline=deadline, ok=(400, 413)
            )
        except (JobTimeoutError, ProviderUnavailableError) as exc:
            # An answer was lost, so the job may exist and would run unobserved: cancel
            # it (by the id we chose) before giving up. Best effort, within half a second.
            cancelled = False
            with contextlib.suppress(APIError, JobTimeoutError):
                await self.http.request(
                    "POST",
                    f"/jobs/{quote(job_id, safe='')}/cancel",
                    idempotent=True,
                    deadline=Deadline(0.5),
                    ok=(404,),
                )
                cancelled = True
            if isinstance(exc, JobTimeoutError):
                exc.remote_cancelled = cancelled
            raise
        if r.status_code in (400, 413):
            raise self._error(r)
        view = json_object(r, self.name, "POST /jobs")
        if view.get("id") != job_id:
            raise ProtocolError(
                f"The job API answered POST /jobs for id {job_id} with job {view.get('id')!r}.",
                status_code=r.status_code,
                provider=self.name,
            )
        return SubmittedJob(id=job_id, request=request, upload_seconds=time.monotonic() - t0)

    async def status(self, job_id: str) -> JobStatus:
        """The job's state from ``GET /jobs/{id}``."""
        view = await self._view(job_id, Deadline(self.http.request_timeout))
        state = _state(view)
        position = view.get("queue_position")
        value, maximum, node = _progress(view)
        err = view.get("error")
        message = err.get("message") if isinstance(err, Mapping) else None
        return JobStatus(
            id=job_id,
            state=state,
            queue_position=position if isinstance(position, int) else None,
            progress=(value, maximum) if value is not None and maximum is not None else None,
            node=node,
            error=str(message) if message and state is JobState.FAILED else None,
        )

    async def cancel(self, job_id: str) -> None:
        """POST /jobs/{id}/cancel. Cancelling a finished or unknown job is not an error."""
        await self.http.request(
            "POST",
            f"/jobs/{quote(job_id, safe='')}/cancel",
            idempotent=True,
            deadline=Deadline(self.http.request_timeout),
            ok=(404,),
        )

    async def aclose(self) -> None:
        """Close HTTP connections."""
        await self.http.aclose()

    async def info(self) -> dict[str, Any]:
        """``GET /health``: app version and whether its ComfyUI is reachable."""
        r = await self.http.request("GET", "/health", idempotent=True)
        data = json_object(r, self.name, "GET /health")
        return {"provider": self.name, "url": self.url, **data}

    async def available_models(self) -> dict[str, list[str]]:
        """Model files present on the app's volume, by ComfyUI models folder."""
        data = await self.models_status()
        out: dict[str, list[str]] = {}
        for entry in data.get("models") or []:
            if isinstance(entry, Mapping) and entry.get("present"):
                folder, filename = entry.get("folder"), entry.get("filename")
                if isinstance(folder, str) and isinstance(filename, str):
                    out.setdefault(folder, []).append(filename)
        return out

    # -- extra API for the CLI -------------------------------------------------------------

    async def models_status(self) -> dict[str, Any]:
        """``GET /models``: every manifest file with ``present``/``size``, plus ``missing``."""
        r = await self.http.request("GET", "/models", idempotent=True)
        data = json_object(r, self.name, "GET /models")
        if not isinstance(data.get("models", []), list):
            raise ProtocolError(
                "The job API's /models answer has no model list.", provider=self.name
            )
        return data

    async def list_loras(self) -> list[dict[str, Any]]:
        """The LoRA files on the app's volume: ``[{"name", "size"}]``."""
        r = await self.http.request("GET", "/loras", idempotent=True)
        loras = json_object(r, self.name, "GET /loras").get("loras")
        if not isinstance(loras, list):
            raise ProtocolError("The job API's /loras answer has no list.", provider=self.name)
        return [dict(x) for x in loras if isinstance(x, Mapping)]

    async def upload_lora(self, name: str, data: bytes) -> dict[str, Any]:
        """Store ``data`` as LoRA ``name`` (replacing a file of that name). Returns its entry."""
        path = _lora_path(name)
        if not data:
            raise InputError(f"The LoRA file {name!r} is empty.")
        r = await self.http.request(
            "PUT",
            path,
            content=bytes(data),
            headers={"Content-Type": "application/octet-stream"},
            idempotent=True,  # the same bytes under the same name: repeating is harmless
            ok=(400, 413),
        )
        if r.status_code in (400, 413):
            raise self._error(r)
        return json_object(r, self.name, f"PUT {path}")

    async def delete_lora(self, name: str) -> None:
        """Delete LoRA ``name``; :class:`~ryla_gen.errors.NotFoundError` if there is none."""
        await self.http.request("DELETE", _lora_path(name), idempotent=True)

    # -- following a job -----------------------------------------------------------------

    async def _view(
        self, job_id: str, deadline: Deadline, *, wait: float = 0.0, since: float | None = None
    ) -> dict[str, Any]:
        params: dict[str, str] = {}
        if wait > 0:
            params["wait"] = f"{wait:.3f}"
            if since is not None:
                params["since"] = repr(since)
        r = await self.http.request(
            "GET",
            f"/jobs/{quote(job_id, safe='')}",
            params=params,
            idempotent=True,
            deadline=deadline,
            # The server holds a long poll open for up to `wait` seconds.
            timeout=self.http.request_timeout + wait,
        )
        return json_object(r, self.name, "GET /jobs/{id}")

    async def _poll(self, job: SubmittedJob, deadline: Deadline) -> Snapshot:
        # Long poll: the server answers the moment the job changes, so progress and
        # completion arrive without a polling delay (and without hammering the API).
        since = self._seen.get(job.id)
        wait = deadline.cap(self.long_poll) if self.long_poll > 0 else 0.0
        t0 = time.monotonic()
        view = await self._view(job.id, deadline, wait=wait, since=since)
        stamp = view.get("updated_at")
        if isinstance(stamp, int | float):
            self._seen[job.id] = float(stamp)
        # Re-poll at once if the job changed or the server really held the request
        # (an older server without long polls answers at once: then back off).
        repoll = wait > 0 and (stamp != since or time.monotonic() - t0 >= min(0.5 * wait, 1.0))
        state = _state(view)
        if state.terminal:
            self._seen.pop(job.id, None)
        if state is JobState.QUEUED:
            pos = view.get("queue_position")
            return Snapshot(
                state=state,
                queue_position=pos if isinstance(pos, int) else None,
                repoll_now=repoll,
            )
        if state is JobState.RUNNING:
            value, maximum, node = _progress(view)
            progress = (value, maximum) if value is not None and maximum is not None else None
            return Snapshot(state=state, progress=progress, node=node, repoll_now=repoll)
        terminal: Completed | Failed | Cancelled
        if state is JobState.CANCELLED:
            terminal = Cancelled(job.id)
        elif state is JobState.FAILED:
            terminal = Failed(job.id, self._job_error(job.id, view.get("error")))
        else:
            terminal = Completed(job.id, self._result(job, view))
        return Snapshot(state=state, terminal=terminal)

    def _result(self, job: SubmittedJob, view: Mapping[str, Any]) -> GenerationResult:
        entries = view.get("images")
        if not isinstance(entries, list):
            raise ProtocolError(
                f"The job API reported job {job.id} completed without an image list.",
                provider=self.name,
            )
        images: list[OutputImage] = []
        for n, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                raise ProtocolError(
                    f"The job API sent image entry {n} of job {job.id} as "
                    f"{type(entry).__name__}, not an object.",
                    provider=self.name,
                )
            filename = str(entry.get("filename") or f"image_{n:05d}.png")
            node_id = entry.get("node_id")
            ctype = entry.get("content_type")
            images.append(
                OutputImage(
                    data=decode_base64_image(
                        entry.get("data"), provider=self.name, filename=filename
                    ),
                    filename=filename,
                    content_type=str(ctype) if ctype else content_type_for(filename),
                    node_id=str(node_id) if node_id is not None else None,
                )
            )
        timings = view.get("timings")
        t = timings if isinstance(timings, Mapping) else {}
        request = job.request
        seed = request.seed if request else view.get("seed")
        return GenerationResult(
            job_id=job.id,
            provider=self.name,
            images=images,
            graph=dict(request.graph) if request else {},
            seed=seed if isinstance(seed, int) else None,
            timings=Timings(
                queue_wait=_seconds(t.get("queue_wait")),
                execution=_seconds(t.get("execution")),
                transfer=_seconds(t.get("transfer")),
                total=time.monotonic() - job.started,
            ),
        )

    # -- errors --------------------------------------------------------------------------

    def _error(self, response: httpx.Response) -> Exception:
        """The typed error for a 400/413 answer of the job API."""
        return error_from_body(
            HTTP.json(response, self.name),
            provider=self.name,
            status_code=response.status_code,
            secrets=self._secrets,
        )

    def _job_error(self, job_id: str, err: Any) -> Exception:
        """The exception a failed JobView's ``error`` object stands for."""
        if not isinstance(err, Mapping):
            return JobFailedError("the job API reported a failure without details", job_id=job_id)
        kind = err.get("type")
        if kind in ("validation_error", "model_missing"):
            return error_from_body({"error": err}, provider=self.name, secrets=self._secrets)
        tb = err.get("traceback")
        return JobFailedError(
            redact(str(err.get("message") or kind or "job failed"), self._secrets),
            job_id=job_id,
            node_id=_opt_str(err.get("node_id")),
            node_type=_opt_str(err.get("node_type")),
            exception_type=_opt_str(err.get("exception_type")),
            traceback="".join(map(str, tb)) if isinstance(tb, list) else _opt_str(tb),
        )


# -- helpers ------------------------------------------------------------------------------


def error_from_body(
    body: Any,
    *,
    provider: str = "modal",
    status_code: int | None = None,
    secrets: list[str] | None = None,
) -> Exception:
    """The typed error for a job-API error body ``{"error": {"type", "message", ...}}``.

    ``secrets`` are scrubbed from the server's message.
    """
    err = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(err, Mapping):
        return APIError(
            redact(
                f"The job API answered HTTP {status_code} with an unexpected body: "
                f"{str(body)[:300]}",
                secrets or [],
            ),
            status_code=status_code,
            body=body,
            provider=provider,
        )
    kind = str(err.get("type") or "")
    message = redact(str(err.get("message") or kind or "error"), secrets or [])
    if kind == "model_missing" or err.get("missing_models"):
        missing = err.get("missing_models")
        names = [str(m) for m in missing] if isinstance(missing, list) else []
        return ModelMissingError(names or [message], provider=provider)
    if kind == "validation_error" or err.get("node_errors"):
        return GraphValidationError(
            _node_errors(err.get("node_errors")), server_message=message, error_type=kind
        )
    if status_code == 413:
        return InputError(
            f"The job API refused the request as too large: {message}. Use smaller input images."
        )
    return APIError(
        f"The job API answered HTTP {status_code}: {message}",
        status_code=status_code,
        body=body,
        provider=provider,
    )


def _node_errors(raw: Any) -> list[NodeError]:
    out: list[NodeError] = []
    for e in raw if isinstance(raw, list) else []:
        if not isinstance(e, Mapping):
            continue
        out.append(
            NodeError(
                node_id=str(e.get("node_id") or ""),
                class_type=str(e.get("class_type") or ""),
                input_name=_opt_str(e.get("input_name")),
                message=str(e.get("message") or e.get("type") or "invalid"),
                type=str(e.get("type") or "invalid"),
                details=str(e.get("details") or ""),
            )
        )
    return out


def _state(view: Mapping[str, Any]) -> JobState:
    status = view.get("status")
    state = _STATES.get(status) if isinstance(status, str) else None
    if state is None:
        raise ProtocolError(
            f"The job API sent an unknown job status {status!r}.", body=dict(view), provider="modal"
        )
    return state


def _progress(view: Mapping[str, Any]) -> tuple[int | None, int | None, str | None]:
    p = view.get("progress")
    if not isinstance(p, Mapping):
        return None, None, None
    value, maximum = p.get("value"), p.get("max")
    if not isinstance(value, int) or not isinstance(maximum, int):
        return None, None, None
    return value, maximum, _opt_str(p.get("node"))


def _lora_path(name: str) -> str:
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\x00" in name:
        raise InputError(
            f"Invalid LoRA file name {name!r}: use a plain file name such as 'me.safetensors'."
        )
    return f"/loras/{quote(name, safe='')}"


def _seconds(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
