"""The ryla-gen job API as a FastAPI app (served on Modal, or locally by ``serve``).

``create_app(executor, token=...)`` builds it. Routes (all but ``/health`` need
``Authorization: Bearer <token>``):

=======================  ==========================================================
``GET /health``          liveness, package version, ComfyUI reachability
``POST /jobs``           start a job from an API-format graph (202; 200 for a known id)
``GET /jobs/{id}``       a job's state (JobView)
``POST /jobs/{id}/cancel``  cancel it
``POST /generate``       start a job and wait up to ``wait`` s (200 done, 202 still running)
``GET /workflows``       the typed workflows
``POST /workflows/{n}``  start a typed workflow; the body is its parameters
``GET /models``          manifest files and whether the models folder has them
``GET /loras``           stored LoRAs; ``PUT`` / ``DELETE /loras/{name}`` manage them
``GET /openapi.json``    the schema, with every workflow's parameters
=======================  ==========================================================

Every request is checked before work starts: graphs against the node schemas,
input images with Pillow (real images, bounded bytes and pixels), named model files
against the models folder. Errors answer ``{"error": {"type", "message", ...}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ryla_gen._prepare import prepare
from ryla_gen._version import __version__
from ryla_gen.errors import GraphValidationError, InputError
from ryla_gen.models import all_model_files, for_workflow, workflow_names
from ryla_gen.types import JobRequest
from ryla_gen_modal import modelcheck
from ryla_gen_modal.jobs import BackendUnavailableError, Executor, ExecutorBusyError
from ryla_gen_modal.loras import (
    DEFAULT_MAX_LORA_BYTES,
    InvalidLoraError,
    InvalidLoraNameError,
    LoraNotFoundError,
    LoraStore,
    LoraTooLargeError,
    check_lora_name,
)
from ryla_gen_modal.schemas import (
    ErrorBody,
    GenerateCreate,
    HealthView,
    JobCreate,
    JobView,
    LoraEntry,
    LoraList,
    ModelsView,
    canonical_job_id,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_IMAGES",
    "MAX_LONG_POLL",
    "ApiError",
    "create_app",
]

log = logging.getLogger("ryla_gen_modal.server")

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest JSON request body (base64 images included)."""
DEFAULT_MAX_IMAGES = 16
MAX_LONG_POLL = 60.0
"""Longest ``GET /jobs/{id}?wait=`` in seconds (well under Modal's 150 s web limit)."""
"""Most input images one job may carry."""

_IMAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.(png|jpg|jpeg|webp)$", re.I)
_OPEN_PATHS = frozenset({"/health"})

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Invalid graph (node_errors) or missing models."},
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token."},
    413: {"model": ErrorBody, "description": "Body or an input image too large."},
    422: {"model": ErrorBody, "description": "Malformed body or parameters."},
    429: {"model": ErrorBody, "description": "Too many jobs waiting; retry later."},
    503: {"model": ErrorBody, "description": "The GPU backend could not be reached."},
}


class ApiError(Exception):
    """An error answer: HTTP ``status`` and the body's ``type``, ``message`` and extras."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.headers = dict(headers or {})
        self.extra = {k: v for k, v in extra.items() if v is not None}

    def response(self) -> JSONResponse:
        """The JSON answer."""
        body = {"error": {"type": self.type, "message": self.message, **self.extra}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _error_response(status: int, type: str, message: str, **extra: Any) -> JSONResponse:
    return ApiError(status, type, message, **extra).response()


# -- the guard: authentication and body size, before FastAPI sees the request ------------------


class _Guard:
    """ASGI middleware: bearer token on every path but ``/health``; body size caps.

    The token is compared with :func:`hmac.compare_digest`; it is never logged or echoed.
    A body larger than its cap is refused with 413, from ``Content-Length`` at once or
    while streaming (so chunked uploads are capped too).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        max_body_bytes: int,
        max_upload_bytes: int,
    ) -> None:
        self.app = app
        self._token = token.encode("utf-8") if token is not None else None
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    def _authorized(self, scope: Scope) -> bool:
        if self._token is None:
            return True
        given = b""
        for key, value in scope.get("headers") or []:
            if key.lower() == b"authorization":
                given = value
                break
        scheme, _, credentials = given.partition(b" ")
        ok_scheme = hmac.compare_digest(scheme.lower(), b"bearer")
        ok_token = hmac.compare_digest(credentials.strip(), self._token)
        return ok_scheme and ok_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        if path not in _OPEN_PATHS and not self._authorized(scope):
            response = _error_response(
                401,
                "unauthorized",
                "Missing or invalid bearer token: "
                "send 'Authorization: Bearer <RYLA_GEN_API_TOKEN>'.",
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        upload = scope.get("method") == "PUT" and path.startswith("/loras/")
        limit = self.max_upload_bytes if upload else self.max_body_bytes
        for key, value in scope.get("headers") or []:
            if key.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > limit:
                    await _too_large(limit)(scope, receive, send)
                    return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise StarletteHTTPException(413, f"The body is larger than {limit} bytes.")
            return message

        await self.app(scope, limited, send)


def _too_large(limit: int) -> JSONResponse:
    return _error_response(413, "payload_too_large", f"The body is larger than {limit} bytes.")


# -- helpers -------------------------------------------------------------------------------------


def _clean_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic errors without the (possibly huge) input, JSON-safe."""
    out = []
    for e in errors:
        if not isinstance(e, Mapping):
            continue
        out.append(
            {
                "loc": [str(p) if not isinstance(p, int) else p for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
        )
    return out


def _describe(errors: list[dict[str, Any]]) -> str:
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e["loc"] if p != "body")
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def _validation_error(exc: GraphValidationError) -> ApiError:
    return ApiError(
        400,
        "validation_error",
        str(exc),
        node_errors=[dataclasses.asdict(e) for e in exc.errors],
    )


def _decode_images(images: Mapping[str, str], max_images: int) -> dict[str, bytes]:
    """Base64 input images -> checked PNG bytes, under the names the graph uses."""
    from ryla_gen.workflows import InputImage

    if len(images) > max_images:
        raise ApiError(413, "payload_too_large", f"At most {max_images} input images per job.")
    out: dict[str, bytes] = {}
    for name, value in images.items():
        if not _IMAGE_NAME.fullmatch(name):
            raise ApiError(
                422,
                "invalid_image",
                f"Invalid input image name {name[:100]!r}: use a plain file name ending in "
                ".png, .jpg, .jpeg or .webp (no folders).",
            )
        try:
            image = InputImage.load(value, allow_paths=False, field=f"images[{name!r}]")
        except ValueError as exc:
            kind = getattr(exc, "type", "")
            if kind == "image_too_large":
                raise ApiError(413, "payload_too_large", str(exc)) from None
            raise ApiError(422, "invalid_image", str(exc)) from None
        out[name] = image.data
    return out


@dataclasses.dataclass
class _Context:
    executor: Executor
    loras: LoraStore | None
    models_dirs: list[Path]
    lora_dirs: list[Path]
    max_images: int
    refresh_volumes: Callable[[], Awaitable[None]] | None
    on_loras_changed: Callable[[], Awaitable[None]] | None

    async def check_models(self, files: Sequence[Any]) -> None:
        if not self.models_dirs and not self.lora_dirs:
            return
        if not self.models_dirs:
            # Only a LoRA folder is known here: the models live wherever ComfyUI has
            # them, and ComfyUI's own validation reports any that are missing.
            files = [f for f in files if _folder_of(f) == "loras"]
        missing = modelcheck.missing_files(
            files, models_dirs=self.models_dirs, lora_dirs=self.lora_dirs
        )
        if missing and self.refresh_volumes is not None:
            await self.refresh_volumes()
            missing = modelcheck.missing_files(
                files, models_dirs=self.models_dirs, lora_dirs=self.lora_dirs
            )
        if missing:
            raise ApiError(
                400,
                "model_missing",
                f"Model files missing on the server: {', '.join(missing)}. Download them "
                "(on Modal: run the app's download_models function; LoRAs: PUT /loras/{name}).",
                missing_models=missing,
            )

    async def start(
        self, request: JobRequest, job_id: str | None, wait: float
    ) -> tuple[dict[str, Any], int]:
        try:
            view, created = await self.executor.create(request, job_id=job_id)
        except ExecutorBusyError as exc:
            raise ApiError(
                429, "busy", str(exc), headers={"Retry-After": str(int(exc.retry_after))}
            ) from None
        except BackendUnavailableError as exc:
            raise ApiError(503, "backend_unavailable", str(exc)) from None
        terminal = view["status"] in ("completed", "failed", "cancelled")
        if wait > 0:
            if not terminal:
                view = await self.executor.wait(view["id"], wait) or view
                terminal = view["status"] in ("completed", "failed", "cancelled")
            return view, 200 if terminal else 202
        return view, 202 if created else 200


def _folder_of(f: Any) -> str:
    return str(f.folder) if hasattr(f, "folder") else str(f[0])


def _job_id(value: str) -> str:
    try:
        return canonical_job_id(value)
    except ValueError:
        raise ApiError(404, "not_found", f"No job {value[:80]!r}.") from None


# -- the app ---------------------------------------------------------------------------


def create_app(
    executor: Executor,
    *,
    token: str | None,
    lora_dir: str | Path | None = None,
    models_dir: str | Path | None = None,
    extra_models_dirs: Sequence[str | Path] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_lora_bytes: int = DEFAULT_MAX_LORA_BYTES,
    max_images: int = DEFAULT_MAX_IMAGES,
    refresh_volumes: Callable[[], Awaitable[None]] | None = None,
    on_loras_changed: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    """The job API around ``executor``.

    Args:
        executor: Runs the jobs (:class:`~ryla_gen_modal.jobs.LocalExecutor` or
            :class:`~ryla_gen_modal.jobs.ModalExecutor`); closed when the app shuts down.
        token: The bearer token every route but ``/health`` requires. ``None`` turns
            authentication off (only for a server on loopback); ``""`` is refused.
        lora_dir: Folder of uploaded LoRAs (ComfyUI must see it as a ``loras`` folder);
            the LoRA routes answer 501 without one.
        models_dir: ComfyUI's models folder (or the models volume). With it, graphs
            naming missing files are refused before they run, and ``GET /models`` works.
        extra_models_dirs: More folders laid out like ``models/`` to look in.
        max_body_bytes: Largest JSON body; ``max_lora_bytes``: largest LoRA upload.
        max_images: Most input images per job.
        refresh_volumes: Awaited before a model or LoRA looks missing for good (Modal
            reloads its volumes there).
        on_loras_changed: Awaited after a LoRA was stored or deleted (Modal commits).
    """
    if token is not None and not token.strip():
        raise ValueError("token must be a non-empty string (or None to disable auth)")
    loras = LoraStore(lora_dir, max_bytes=max_lora_bytes) if lora_dir is not None else None
    models_dirs = [Path(p) for p in ([models_dir] if models_dir else []) + list(extra_models_dirs)]
    ctx = _Context(
        executor=executor,
        loras=loras,
        models_dirs=models_dirs,
        lora_dirs=[loras.directory] if loras else [],
        max_images=max_images,
        refresh_volumes=refresh_volumes,
        on_loras_changed=on_loras_changed,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await executor.aclose()

    app = FastAPI(
        title="ryla-gen job API",
        version=__version__,
        description=(
            "Runs ComfyUI graphs and typed workflows (Flux Dev, LoRA, InstantID, "
            "Z-Image-Turbo). Every route but /health needs 'Authorization: Bearer <token>'."
        ),
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.add_middleware(
        _Guard,
        token=token,
        max_body_bytes=max_body_bytes,
        max_upload_bytes=max_lora_bytes + 1024,
    )
    _install_error_handlers(app)
    _add_job_routes(app, ctx)
    _add_workflow_routes(app, ctx)
    _add_file_routes(app, ctx)
    _add_openapi(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = _clean_errors(exc.errors())
        return _error_response(
            422, "invalid_request", f"Invalid request: {_describe(details)}", details=details
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }
        return _error_response(
            exc.status_code, kinds.get(exc.status_code, "http_error"), str(exc.detail)
        )


def _add_job_routes(app: FastAPI, ctx: _Context) -> None:
    @app.get("/health", response_model=HealthView, tags=["meta"])
    async def health() -> dict[str, Any]:
        """Liveness (no token needed): version and whether ComfyUI answers."""
        return {
            "status": "ok",
            "version": __version__,
            "comfyui": await ctx.executor.backend_info(),
        }

    async def accept(body: JobCreate) -> JobRequest:
        images = await run_in_threadpool(_decode_images, body.images, ctx.max_images)
        raw = JobRequest(graph=body.graph, images=images, workflow=body.workflow, seed=body.seed)
        try:
            request = await run_in_threadpool(prepare, raw)
        except GraphValidationError as exc:
            raise _validation_error(exc) from None
        except InputError as exc:
            raise ApiError(400, "invalid_request", str(exc)) from None
        await ctx.check_models(modelcheck.graph_model_files(request.graph))
        return request

    @app.post(
        "/jobs",
        response_model=JobView,
        status_code=202,
        responses={200: {"model": JobView, "description": "A job with this id exists."}, **_ERRORS},
        tags=["jobs"],
    )
    async def create_job(body: JobCreate, response: Response) -> dict[str, Any]:
        """Start a job from an API-format graph. 202 when created, 200 for a known ``id``."""
        if body.id is not None:
            existing = await ctx.executor.get(body.id)
            if existing is not None:
                response.status_code = 200
                return existing
        request = await accept(body)
        view, status = await ctx.start(request, body.id, 0)
        response.status_code = status
        return view

    @app.post(
        "/generate",
        response_model=JobView,
        responses={
            202: {"model": JobView, "description": "Still running: poll GET /jobs/{id}."},
            **_ERRORS,
        },
        tags=["jobs"],
    )
    async def generate(body: GenerateCreate, response: Response) -> dict[str, Any]:
        """Start a job and wait up to ``wait`` seconds: 200 once it ended, else 202."""
        request = None
        if body.id is None or await ctx.executor.get(body.id) is None:
            request = await accept(body)
        if request is None:
            assert body.id is not None
            view = await ctx.executor.wait(body.id, body.wait)
            assert view is not None
            terminal = view["status"] in ("completed", "failed", "cancelled")
            response.status_code = 200 if terminal else 202
            return view
        view, status = await ctx.start(request, body.id, max(body.wait, 1e-3))
        response.status_code = status
        return view

    @app.get("/jobs/{job_id}", response_model=JobView, responses=_ERRORS, tags=["jobs"])
    async def get_job(
        job_id: str,
        wait: Annotated[float, Query(ge=0, le=MAX_LONG_POLL)] = 0.0,
        since: Annotated[float | None, Query()] = None,
    ) -> dict[str, Any]:
        """A job's state; ``images`` once it completed.

        Long poll: with ``wait`` > 0 the answer comes as soon as the job differs from
        the view whose ``updated_at`` was ``since`` (or has ended), at the latest after
        ``wait`` seconds. Clients learn of progress and completion at once instead of
        at their next poll.
        """
        if wait > 0:
            view = await ctx.executor.watch(_job_id(job_id), since, wait)
        else:
            view = await ctx.executor.get(_job_id(job_id))
        if view is None:
            raise ApiError(404, "not_found", f"No job {job_id[:80]!r}.")
        return view

    @app.post("/jobs/{job_id}/cancel", response_model=JobView, responses=_ERRORS, tags=["jobs"])
    async def cancel_job(job_id: str) -> dict[str, Any]:
        """Cancel a job: dequeued, or interrupted if it runs. A finished job is returned as is."""
        view = await ctx.executor.cancel(_job_id(job_id))
        if view is None:
            raise ApiError(404, "not_found", f"No job {job_id[:80]!r}.")
        return view


def _add_workflow_routes(app: FastAPI, ctx: _Context) -> None:
    from ryla_gen.workflows import WORKFLOWS, Workflow

    @app.get("/workflows", tags=["workflows"])
    async def list_workflows() -> dict[str, list[str]]:
        """The typed workflows, each served at ``POST /workflows/{name}``."""
        return {"workflows": sorted(WORKFLOWS)}

    def add(name: str, cls: type[Workflow]) -> None:
        async def run_workflow(
            request: Request,
            response: Response,
            wait: float = Query(
                0.0, ge=0, le=140, description="Seconds to wait for the result (0: just start)."
            ),
            id: str | None = Query(
                None, description="Client-chosen job id (UUID) for safe retries."
            ),
        ) -> dict[str, Any]:
            job_id = None
            if id is not None:
                try:
                    job_id = canonical_job_id(id)
                except ValueError:
                    raise ApiError(422, "invalid_request", "id must be a UUID.") from None
                if await ctx.executor.get(job_id) is not None:
                    view = (
                        await ctx.executor.wait(job_id, wait)
                        if wait
                        else await ctx.executor.get(job_id)
                    )
                    assert view is not None
                    response.status_code = 200
                    if wait and view["status"] not in ("completed", "failed", "cancelled"):
                        response.status_code = 202
                    return view
            try:
                data = json.loads(await request.body() or b"null")
            except ValueError as exc:
                raise ApiError(422, "invalid_request", f"The body is not JSON: {exc}") from None
            if not isinstance(data, dict):
                raise ApiError(
                    422,
                    "invalid_request",
                    f"The body must be a JSON object of {cls.__name__} parameters.",
                )
            try:
                workflow = await run_in_threadpool(
                    cls.model_validate, data, context={"untrusted": True}
                )
            except ValidationError as exc:
                details = _clean_errors(exc.errors(include_url=False, include_input=False))
                status = 413 if any(d["type"] == "image_too_large" for d in details) else 422
                raise ApiError(
                    status,
                    "invalid_request" if status == 422 else "payload_too_large",
                    f"Invalid {name} parameters: {_describe(details)}",
                    details=details,
                ) from None
            try:
                job_request = await run_in_threadpool(prepare, workflow)
            except GraphValidationError as exc:
                raise _validation_error(exc) from None
            except InputError as exc:
                raise ApiError(400, "invalid_request", str(exc)) from None
            await ctx.check_models(workflow.required_models())
            view, status = await ctx.start(job_request, job_id, wait)
            response.status_code = status
            return view

        run_workflow.__doc__ = (cls.__doc__ or name).strip().split("\n\n")[0]
        app.add_api_route(
            f"/workflows/{name}",
            run_workflow,
            methods=["POST"],
            response_model=JobView,
            status_code=202,
            name=f"workflow_{name.replace('-', '_')}",
            summary=f"Run {name}",
            tags=["workflows"],
            responses={200: {"model": JobView}, 404: {"model": ErrorBody}, **_ERRORS},
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{cls.__name__}"}
                        }
                    },
                }
            },
        )

    for name, cls in WORKFLOWS.items():
        add(name, cls)

    @app.post("/workflows/{name}", include_in_schema=False)
    async def unknown_workflow(name: str) -> None:
        raise ApiError(
            404,
            "not_found",
            f"Unknown workflow {name[:64]!r}; known: {', '.join(sorted(WORKFLOWS))}.",
        )


def _add_file_routes(app: FastAPI, ctx: _Context) -> None:
    def store() -> LoraStore:
        if ctx.loras is None:
            raise ApiError(
                501,
                "not_configured",
                "This server has no LoRA folder (start it with --lora-dir).",
            )
        return ctx.loras

    @app.get("/models", response_model=ModelsView, responses=_ERRORS, tags=["files"])
    async def models() -> dict[str, Any]:
        """Every manifest file: present in the models folder or not, and who needs it."""
        if not ctx.models_dirs:
            raise ApiError(
                501,
                "not_configured",
                "This server has no models folder (start it with --models-dir).",
            )
        if ctx.refresh_volumes is not None:
            await ctx.refresh_volumes()
        return await run_in_threadpool(_models_view, ctx)

    @app.get("/loras", response_model=LoraList, responses=_ERRORS, tags=["files"])
    async def list_loras() -> dict[str, Any]:
        """The stored LoRAs (name and size)."""
        s = store()
        return {"loras": [f.as_dict() for f in await run_in_threadpool(s.list)]}

    @app.put(
        "/loras/{name}",
        status_code=201,
        response_model=LoraEntry,
        responses=_ERRORS,
        tags=["files"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    async def put_lora(name: str, request: Request) -> dict[str, Any]:
        """Upload a LoRA (raw ``.safetensors`` bytes); replaces one of the same name."""
        s = store()
        try:
            check_lora_name(name)
            saved = await s.save_stream(name, request.stream())
        except InvalidLoraNameError as exc:
            raise ApiError(400, "invalid_name", str(exc)) from None
        except LoraTooLargeError as exc:
            raise ApiError(413, "payload_too_large", str(exc)) from None
        except InvalidLoraError as exc:
            raise ApiError(400, "invalid_file", str(exc)) from None
        if ctx.on_loras_changed is not None:
            await ctx.on_loras_changed()
        log.info("LoRA %s stored (%d bytes)", saved.name, saved.size)
        return saved.as_dict()

    @app.delete("/loras/{name}", status_code=204, responses=_ERRORS, tags=["files"])
    async def delete_lora(name: str) -> Response:
        """Delete a stored LoRA."""
        s = store()
        try:
            await run_in_threadpool(s.delete, name)
        except InvalidLoraNameError as exc:
            raise ApiError(400, "invalid_name", str(exc)) from None
        except LoraNotFoundError as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        if ctx.on_loras_changed is not None:
            await ctx.on_loras_changed()
        return Response(status_code=204)


def _models_view(ctx: _Context) -> dict[str, Any]:
    needs: dict[str, list[str]] = {}
    for w in workflow_names():
        for f in for_workflow(w):
            needs.setdefault(f.relpath, []).append(w)
    entries = []
    for f in all_model_files():
        size = modelcheck.present_size(
            f.folder, f.filename, models_dirs=ctx.models_dirs, lora_dirs=ctx.lora_dirs
        )
        entries.append(
            {
                "folder": f.folder,
                "filename": f.filename,
                "present": size is not None,
                "size": size,
                "expected_size": f.size,
                "in_graph": f.in_graph,
                "gated": f.gated,
                "workflows": needs.get(f.relpath, []),
            }
        )
    missing = modelcheck.missing_files(
        all_model_files(), models_dirs=ctx.models_dirs, lora_dirs=ctx.lora_dirs
    )
    return {"models": entries, "missing": missing}


def _add_openapi(app: FastAPI) -> None:
    from ryla_gen.workflows import WORKFLOWS

    def schema() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for cls in WORKFLOWS.values():
            js = cls.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(js.pop("$defs", {}))
            schemas[cls.__name__] = js
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = schema  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(await asyncio.to_thread(schema))
