"""Data that crosses the API: job requests, states, events and results."""

from __future__ import annotations

import enum
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "Cancelled",
    "Completed",
    "Failed",
    "GenerationResult",
    "JobEvent",
    "JobRequest",
    "JobState",
    "JobStatus",
    "NodeExecuting",
    "NodeFinished",
    "OutputImage",
    "Progress",
    "Queued",
    "Started",
    "Timings",
]


class JobState(str, enum.Enum):
    """Where a job is in its life. The last three are terminal."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True once the job can no longer change."""
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class JobRequest:
    """What a provider runs: an API-format graph plus the input images it loads.

    ``images`` maps the file name a ``LoadImage`` node names to the image's bytes;
    providers upload them (idempotently) before the graph is queued.
    """

    graph: dict[str, Any]
    images: dict[str, bytes] = field(default_factory=dict)
    workflow: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of a job, as a provider reports it."""

    id: str
    state: JobState
    queue_position: int | None = None
    progress: tuple[int, int] | None = None
    """(value, max) of the running sampler, where the provider reports it."""
    node: str | None = None
    """The node being executed, where known."""
    error: str | None = None


# -- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """The job waits in the queue; ``position`` counts jobs ahead of it where known."""

    job_id: str
    position: int | None = None
    kind: Literal["queued"] = "queued"


@dataclass(frozen=True)
class Started:
    """The job started executing."""

    job_id: str
    kind: Literal["started"] = "started"


@dataclass(frozen=True)
class NodeExecuting:
    """A node started executing."""

    job_id: str
    node: str
    class_type: str | None = None
    kind: Literal["node_executing"] = "node_executing"


@dataclass(frozen=True)
class Progress:
    """Progress of a long node (the sampler's steps): ``value`` of ``max``."""

    job_id: str
    value: int
    max: int
    node: str | None = None
    kind: Literal["progress"] = "progress"


@dataclass(frozen=True)
class NodeFinished:
    """A node finished (or was served from ComfyUI's cache when ``cached``)."""

    job_id: str
    node: str
    cached: bool = False
    kind: Literal["node_finished"] = "node_finished"


@dataclass(frozen=True)
class Completed:
    """The job finished with a result."""

    job_id: str
    result: GenerationResult
    kind: Literal["completed"] = "completed"


@dataclass(frozen=True)
class Failed:
    """The job failed; ``error`` is the exception ``wait()`` would raise."""

    job_id: str
    error: Exception
    kind: Literal["failed"] = "failed"


@dataclass(frozen=True)
class Cancelled:
    """The job was cancelled or interrupted."""

    job_id: str
    kind: Literal["cancelled"] = "cancelled"


JobEvent = (
    Queued | Started | NodeExecuting | Progress | NodeFinished | Completed | Failed | Cancelled
)
"""Every event ``Job.events()`` yields. Switch on ``event.kind`` or ``isinstance``."""


# -- results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Timings:
    """Where the time of one job went, in seconds.

    ``queue_wait``: submitted until execution started; ``execution``: on the GPU server;
    ``transfer``: uploads and downloads; ``total``: the whole call as the caller saw it.
    """

    queue_wait: float | None = None
    execution: float | None = None
    transfer: float | None = None
    total: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        """The timings as a plain dict (for JSON output)."""
        return {
            "queue_wait": self.queue_wait,
            "execution": self.execution,
            "transfer": self.transfer,
            "total": self.total,
        }


@dataclass(frozen=True)
class OutputImage:
    """One image a job produced."""

    data: bytes
    filename: str
    content_type: str = "image/png"
    node_id: str | None = None
    """The id of the output node (SaveImage) that wrote it."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, read from the image header."""
        from PIL import Image

        with Image.open(io.BytesIO(self.data)) as im:
            width, height = im.size
            return int(width), int(height)

    @property
    def width(self) -> int:
        """Width in pixels."""
        return self.size[0]

    @property
    def height(self) -> int:
        """Height in pixels."""
        return self.size[1]

    def to_pil(self) -> PILImage.Image:
        """The image as a loaded PIL image."""
        from PIL import Image

        im = Image.open(io.BytesIO(self.data))
        im.load()
        return im

    def save(self, path: str | Path) -> Path:
        """Write the image's bytes; a directory gets the image's own file name. Returns the path."""
        p = Path(path)
        if p.is_dir():
            p = p / Path(self.filename).name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(self.data)
        return p

    def _repr_png_(self) -> bytes | None:
        if self.content_type == "image/png":
            return self.data
        buf = io.BytesIO()
        self.to_pil().save(buf, format="PNG")
        return buf.getvalue()

    def __repr__(self) -> str:
        return (
            f"OutputImage(filename={self.filename!r}, content_type={self.content_type!r}, "
            f"bytes={len(self.data)})"
        )


@dataclass(frozen=True)
class GenerationResult:
    """The outcome of one successful job."""

    job_id: str
    provider: str
    images: list[OutputImage]
    graph: dict[str, Any]
    """The API-format graph that was sent."""
    seed: int | None = None
    timings: Timings = field(default_factory=Timings)

    @property
    def image(self) -> OutputImage:
        """The first image (most workflows make one)."""
        if not self.images:
            raise IndexError(f"job {self.job_id} produced no images")
        return self.images[0]

    def save(self, directory: str | Path) -> list[Path]:
        """Save every image into ``directory`` (created if needed); returns the paths."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        return [img.save(d / Path(img.filename).name) for img in self.images]

    def grid(self, columns: int | None = None) -> PILImage.Image:
        """All images pasted into one PIL image, for a quick look at a batch."""
        from PIL import Image

        ims = [img.to_pil().convert("RGB") for img in self.images]
        if not ims:
            raise IndexError(f"job {self.job_id} produced no images")
        cols = columns or min(len(ims), 4)
        rows = (len(ims) + cols - 1) // cols
        w = max(i.width for i in ims)
        h = max(i.height for i in ims)
        sheet = Image.new("RGB", (cols * w, rows * h), "white")
        for n, im in enumerate(ims):
            sheet.paste(im, ((n % cols) * w, (n // cols) * h))
        return sheet

    def _repr_png_(self) -> bytes | None:
        if len(self.images) == 1:
            return self.images[0]._repr_png_()
        if not self.images:
            return None
        buf = io.BytesIO()
        self.grid().save(buf, format="PNG")
        return buf.getvalue()

    def __repr__(self) -> str:
        return (
            f"GenerationResult(job_id={self.job_id!r}, provider={self.provider!r}, "
            f"images={len(self.images)}, seed={self.seed}, timings={self.timings})"
        )
