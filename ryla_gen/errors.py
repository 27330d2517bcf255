"""Every error ryla-gen raises.

Catch :class:`RylaGenError` to handle them all. The tree::

    RylaGenError
    ├── ConfigurationError          settings missing or contradictory (names the variable)
    ├── InputError (ValueError)     bad input found before anything was sent
    │   ├── GraphValidationError    graph rejected (by our schemas or by ComfyUI), every node error
    │   └── ModelMissingError       the server lacks model files the work needs
    ├── APIError                    a provider answered with an error or did not answer
    │   ├── AuthenticationError     401/403: token missing or wrong
    │   ├── NotFoundError           404: unknown job, file or route
    │   ├── RateLimitError          429 after retries, with Retry-After
    │   ├── ProviderUnavailableError  unreachable or 5xx after retries
    │   └── ProtocolError           the answer was malformed or truncated
    └── JobError                    the job itself did not produce a result
        ├── JobFailedError          execution error: node id, node type, server message, traceback
        ├── JobCancelledError       cancelled or interrupted
        └── JobTimeoutError         the call's deadline passed (the remote job was cancelled)

Every message says what happened and, where there is one, what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "ConfigurationError",
    "GraphValidationError",
    "InputError",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobTimeoutError",
    "ModelMissingError",
    "NodeError",
    "NotFoundError",
    "ProtocolError",
    "ProviderUnavailableError",
    "RateLimitError",
    "RylaGenError",
]


class RylaGenError(Exception):
    """Base class of every error raised by ryla-gen."""


# -- configuration -----------------------------------------------------------------------


class ConfigurationError(RylaGenError):
    """Settings are missing, malformed or contradict each other.

    ``variable`` names the environment variable (or argument) to fix, where there is one.
    """

    def __init__(self, message: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


# -- bad input ---------------------------------------------------------------------------


class InputError(RylaGenError, ValueError):
    """Input was rejected before any GPU work started."""


@dataclass(frozen=True)
class NodeError:
    """One problem with one node of a graph, in the shape of ComfyUI's ``node_errors``."""

    node_id: str
    """The node's id in the API-format graph ("" for problems with the graph as a whole)."""
    class_type: str
    """The node's class, e.g. ``KSampler`` ("" when unknown)."""
    input_name: str | None
    """The input at fault, or None when the node as a whole is at fault."""
    message: str
    """What is wrong, in words."""
    type: str = "invalid"
    """ComfyUI's error type, e.g. ``value_not_in_list`` or ``required_input_missing``."""
    details: str = ""
    """Extra detail from the server, if any."""

    def __str__(self) -> str:
        where = f"node {self.node_id}" if self.node_id else "graph"
        if self.class_type:
            where += f" ({self.class_type})"
        if self.input_name:
            where += f" input '{self.input_name}'"
        text = f"{where}: {self.message}"
        if self.details and self.details not in self.message:
            text += f" [{self.details}]"
        return text


class GraphValidationError(InputError):
    """A graph is invalid. ``errors`` lists every problem found, not just the first.

    Raised by local validation against node schemas and when ComfyUI itself rejects a
    prompt (HTTP 400 ``prompt_outputs_failed_validation`` and friends), in which case
    ``server_message`` holds ComfyUI's own top-level message.
    """

    def __init__(
        self,
        errors: Iterable[NodeError],
        *,
        server_message: str | None = None,
        error_type: str | None = None,
    ) -> None:
        self.errors: list[NodeError] = list(errors)
        self.server_message = server_message
        self.error_type = error_type
        lines = []
        if server_message:
            lines.append(server_message)
        n = len(self.errors)
        if n:
            lines.append(f"{n} problem{'s' if n != 1 else ''} in the graph:")
            lines.extend(f"  - {e}" for e in self.errors)
        if not lines:
            lines.append("The graph is invalid.")
        super().__init__("\n".join(lines))

    @property
    def node_ids(self) -> list[str]:
        """The ids of the nodes at fault, in order, without repeats."""
        return list(dict.fromkeys(e.node_id for e in self.errors))


class ModelMissingError(InputError):
    """The server lacks model files that the work needs.

    ``missing`` holds the :class:`ryla_gen.models.ModelFile` entries (or ``folder/filename``
    strings for files the manifest does not know).
    """

    def __init__(self, missing: Sequence[Any], *, provider: str | None = None) -> None:
        self.missing = list(missing)
        self.provider = provider
        where = f" on the {provider} provider" if provider else ""
        lines = [f"Model files missing{where}:"]
        lines.extend(f"  - {_model_label(m)}" for m in self.missing)
        lines.append(
            "Put them under the server's ComfyUI models folder (on the Modal app: run "
            "`modal run -m ryla_gen_modal.app::download_models`), or point RYLA_GEN_PROVIDER "
            "at a provider that has them (modal or runpod)."
        )
        super().__init__("\n".join(lines))


def _model_label(m: Any) -> str:
    """``folder/filename``, plus size and download source when the manifest knows them."""
    if isinstance(m, str) and "/" in m:
        from ryla_gen.models import find

        folder, _, filename = m.partition("/")
        m = find(folder, filename) or m
    relpath = getattr(m, "relpath", None)
    if not relpath:
        return str(m)
    extra = []
    size = getattr(m, "size", None)
    if size:
        extra.append(f"{size / 1e9:.2f} GB")
    url = getattr(m, "url", None)
    if url:
        extra.append(f"from {url}")
    if getattr(m, "gated", False):
        extra.append("gated: accept the licence on the hub and use an HF token")
    return f"{relpath} ({'; '.join(extra)})" if extra else str(relpath)


# -- provider answers --------------------------------------------------------------------


class APIError(RylaGenError):
    """A provider answered with an error, an unusable answer, or not at all."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        body: Any = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        self.provider = provider


class AuthenticationError(APIError):
    """The provider refused our credentials (HTTP 401/403). Check the token or API key."""


class NotFoundError(APIError):
    """The provider does not know the job, file or route (HTTP 404)."""


class RateLimitError(APIError):
    """The provider kept answering 429 until retries ran out. ``retry_after`` in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ProviderUnavailableError(APIError):
    """The provider could not be reached or kept failing (5xx) after every safe retry."""


class ProtocolError(APIError):
    """The provider's answer was malformed, truncated or not what its contract says."""


# -- job outcomes ------------------------------------------------------------------------


class JobError(RylaGenError):
    """The job ran (or was queued) but did not produce a result."""

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobFailedError(JobError):
    """The job failed while executing.

    Carries the server's own message and the node at fault where the server names one.
    """

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        node_id: str | None = None,
        node_type: str | None = None,
        exception_type: str | None = None,
        traceback: str | None = None,
    ) -> None:
        self.server_message = message
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.traceback = traceback
        where = ""
        if node_id or node_type:
            where = f" at node {node_id or '?'}" + (f" ({node_type})" if node_type else "")
        kind = f"{exception_type}: " if exception_type else ""
        super().__init__(
            f"Job {job_id or ''} failed{where}: {kind}{message}".replace("  ", " "), job_id=job_id
        )


class JobCancelledError(JobError):
    """The job was cancelled before it finished (by us, another client, or an interrupt)."""


class JobTimeoutError(JobError):
    """The job did not finish before the call's deadline.

    ``remote_cancelled`` tells whether the remote job was cancelled so it stops using a GPU.
    """

    def __init__(
        self, message: str, *, job_id: str | None = None, remote_cancelled: bool = False
    ) -> None:
        super().__init__(message, job_id=job_id)
        self.remote_cancelled = remote_cancelled
