"""ryla-gen: typed ComfyUI workflows, run on Modal, RunPod or any ComfyUI server.

Quick tour::

    from ryla_gen import Client
    from ryla_gen.workflows import FluxDev, LoRA

    client = Client.from_env()            # RYLA_GEN_PROVIDER=comfyui|modal|runpod
    result = client.generate(FluxDev(prompt="portrait", loras=[LoRA(name="me.safetensors",
                                                                  trigger="ohwx")]))
    result.image.save("portrait.png")

Public names live here; submodules: ``ryla_gen.workflows`` (builders),
``ryla_gen.graph`` (graph core), ``ryla_gen.models`` (manifest), ``ryla_gen.errors``,
``ryla_gen.providers``, ``ryla_gen.testing`` (a real ComfyUI for tests).
"""

from ryla_gen._client import NOT_GIVEN, AsyncClient, AsyncJob
from ryla_gen._settings import Settings
from ryla_gen._sync import Client, Job
from ryla_gen._version import __version__
from ryla_gen.errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    GraphValidationError,
    InputError,
    JobCancelledError,
    JobError,
    JobFailedError,
    JobTimeoutError,
    ModelMissingError,
    NodeError,
    NotFoundError,
    ProtocolError,
    ProviderUnavailableError,
    RateLimitError,
    RylaGenError,
)
from ryla_gen.types import (
    Cancelled,
    Completed,
    Failed,
    GenerationResult,
    JobEvent,
    JobRequest,
    JobState,
    JobStatus,
    NodeExecuting,
    NodeFinished,
    OutputImage,
    Progress,
    Queued,
    Started,
    Timings,
)

__all__ = [
    "NOT_GIVEN",
    "APIError",
    "AsyncClient",
    "AsyncJob",
    "AuthenticationError",
    "Cancelled",
    "Client",
    "Completed",
    "ConfigurationError",
    "Failed",
    "GenerationResult",
    "GraphValidationError",
    "InputError",
    "Job",
    "JobCancelledError",
    "JobError",
    "JobEvent",
    "JobFailedError",
    "JobRequest",
    "JobState",
    "JobStatus",
    "JobTimeoutError",
    "ModelMissingError",
    "NodeError",
    "NodeExecuting",
    "NodeFinished",
    "NotFoundError",
    "OutputImage",
    "Progress",
    "ProtocolError",
    "ProviderUnavailableError",
    "Queued",
    "RateLimitError",
    "RylaGenError",
    "Settings",
    "Started",
    "Timings",
    "__version__",
]
