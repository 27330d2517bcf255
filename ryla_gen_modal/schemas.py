"""Request and response bodies of the ryla-gen job API (they document ``/openapi.json``)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "DEFAULT_WAIT_SECONDS",
    "MAX_WAIT_SECONDS",
    "ComfyUIHealth",
    "ErrorBody",
    "ErrorDetail",
    "GenerateCreate",
    "HealthView",
    "ImageView",
    "JobCreate",
    "JobErrorView",
    "JobView",
    "LoraEntry",
    "LoraList",
    "ModelEntry",
    "ModelsView",
    "NodeErrorView",
    "ProgressView",
    "TimingsView",
    "canonical_job_id",
]

DEFAULT_WAIT_SECONDS = 110.0
"""How long ``POST /generate`` waits by default (Modal cuts web requests at 150 s)."""
MAX_WAIT_SECONDS = 140.0
"""The longest wait a request may ask for."""


def canonical_job_id(value: str) -> str:
    """A job id as the server stores it: a UUID in canonical lowercase form.

    Raises ValueError for anything that is not a UUID.
    """
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("id must be a UUID string")
    return str(uuid.UUID(value))


class JobCreate(BaseModel):
    """``POST /jobs``: an API-format graph and the input images its LoadImage nodes name."""

    model_config = ConfigDict(extra="forbid")

    graph: dict[str, Any] = Field(
        description="API-format ComfyUI graph: {node_id: {class_type, inputs}}; links are "
        "[node_id, output_index]."
    )
    images: dict[str, str] = Field(
        default_factory=dict,
        description="Input images by the file name a LoadImage node uses: base64 or "
        "data:image/...;base64, (PNG, JPEG or WebP, at most 4096x4096 pixels and 20 MB).",
    )
    workflow: str | None = Field(
        default=None, max_length=64, description="Workflow name, for records."
    )
    seed: int | None = Field(default=None, ge=0, le=2**64 - 1, description="Seed, for records.")
    id: str | None = Field(
        default=None,
        description="Client-chosen job id (a UUID). Creating a job with an id that exists "
        "returns that job (200) instead of starting another, so retries are safe.",
    )

    @field_validator("id")
    @classmethod
    def _uuid(cls, v: str | None) -> str | None:
        return None if v is None else canonical_job_id(v)


class GenerateCreate(JobCreate):
    """``POST /generate``: a job plus how long to wait for it."""

    wait: float = Field(
        default=DEFAULT_WAIT_SECONDS,
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="Seconds to wait for the job to end before answering 202 (poll "
        "GET /jobs/{id} then).",
    )


class ProgressView(BaseModel):
    """The running sampler's progress."""

    value: int
    max: int
    node: str | None = None


class NodeErrorView(BaseModel):
    """One problem with one node (ComfyUI's node_errors, flattened)."""

    node_id: str
    class_type: str
    input_name: str | None = None
    message: str
    type: str
    details: str = ""


class JobErrorView(BaseModel):
    """Why a job failed or ended."""

    type: str = Field(
        description="job_failed, cancelled, backend_died, timeout, validation_error, "
        "model_missing, backend_unavailable, worker_error, internal_error, ..."
    )
    message: str
    node_id: str | None = None
    node_type: str | None = None
    exception_type: str | None = None
    traceback: str | None = None
    node_errors: list[NodeErrorView] | None = None
    missing_models: list[str] | None = None


class ImageView(BaseModel):
    """One output image."""

    filename: str
    content_type: str
    node_id: str | None = None
    data: str = Field(description="The image file, base64.")


class TimingsView(BaseModel):
    """Seconds spent: waiting for a GPU and ComfyUI, executing, transferring, in all."""

    queue_wait: float | None = None
    execution: float | None = None
    transfer: float | None = None
    total: float | None = None


class JobView(BaseModel):
    """A job's state. ``images`` is filled only once it completed."""

    id: str
    status: Literal["queued", "running", "completed", "failed", "cancelled"]
    workflow: str | None = None
    seed: int | None = None
    queue_position: int | None = None
    progress: ProgressView | None = None
    error: JobErrorView | None = None
    images: list[ImageView] = Field(default_factory=list)
    timings: TimingsView = Field(default_factory=TimingsView)
    created_at: float
    updated_at: float


class ErrorDetail(BaseModel):
    """What went wrong with a request."""

    type: str = Field(
        description="unauthorized, validation_error, model_missing, invalid_request, "
        "not_found, payload_too_large, busy, backend_unavailable, ..."
    )
    message: str
    node_errors: list[NodeErrorView] | None = None
    missing_models: list[str] | None = None
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {...}}``."""

    error: ErrorDetail


class ComfyUIHealth(BaseModel):
    """The ComfyUI behind the server."""

    reachable: bool
    version: str | None = None


class HealthView(BaseModel):
    """``GET /health``."""

    status: Literal["ok"] = "ok"
    version: str
    comfyui: ComfyUIHealth


class ModelEntry(BaseModel):
    """One manifest file and whether the models folder has it."""

    folder: str
    filename: str
    present: bool
    size: int | None = Field(description="Size on disk when present, else null.")
    expected_size: int | None = None
    in_graph: bool = True
    gated: bool = False
    workflows: list[str]


class ModelsView(BaseModel):
    """``GET /models``."""

    models: list[ModelEntry]
    missing: list[str]


class LoraEntry(BaseModel):
    """One stored LoRA."""

    name: str
    size: int


class LoraList(BaseModel):
    """``GET /loras``."""

    loras: list[LoraEntry]
