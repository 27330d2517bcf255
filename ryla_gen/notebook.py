"""Jupyter helpers: a live tqdm progress bar for a job, and a captioned inline display.

Results already render inline on their own (``GenerationResult`` and ``OutputImage``
have ``_repr_png_``; several images show as one grid). These helpers add progress and
context::

    from ryla_gen import Client
    from ryla_gen.notebook import generate_with_progress, show
    from ryla_gen.workflows import FluxDev

    client = Client.from_env()
    result = generate_with_progress(client, FluxDev(prompt="a lighthouse at dusk"))
    show(result)

The bar (``tqdm.auto``: a widget where ipywidgets is installed, text otherwise) counts
the sampler's steps; its label says whether the job is queued (and how many jobs are
ahead) and which node runs. Needs ``tqdm`` (``pip install 'ryla-gen[notebook]'``).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ryla_gen._client import NOT_GIVEN
from ryla_gen.types import (
    Cancelled,
    Completed,
    Failed,
    GenerationResult,
    JobEvent,
    NodeExecuting,
    NodeFinished,
    Progress,
    Queued,
    Started,
)

if TYPE_CHECKING:
    from ryla_gen._client import AsyncClient
    from ryla_gen._prepare import Work
    from ryla_gen._sync import Client

__all__ = ["JobProgressBar", "agenerate_with_progress", "caption", "generate_with_progress", "show"]


def _tqdm() -> Any:
    """``tqdm.auto.tqdm``, without the "IProgress not found" warning when ipywidgets is absent."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module("tqdm.auto")
    except ImportError as exc:  # pragma: no cover - tqdm is in the notebook extra
        raise ImportError("ryla_gen.notebook needs tqdm: pip install 'ryla-gen[notebook]'") from exc
    return module.tqdm


def _class_types(work: Any) -> dict[str, str]:
    """Node id -> class type of the graph ``work`` builds (empty where unknown)."""
    graph: Any = None
    try:
        if hasattr(work, "to_api"):
            graph = work.to_api()
        elif hasattr(work, "graph") and isinstance(work.graph, Mapping):
            graph = work.graph
        elif isinstance(work, Mapping):
            graph = work
    except Exception:  # labels are cosmetic; the client reports real problems
        return {}
    if not isinstance(graph, Mapping):
        return {}
    return {
        str(k): str(v.get("class_type", "?")) for k, v in graph.items() if isinstance(v, Mapping)
    }


class JobProgressBar:
    """A tqdm bar fed by job events: sampler steps, current node, queue position.

    Use it with any event stream::

        with JobProgressBar(job.id) as bar:
            for event in job.events():
                bar.update(event)
    """

    def __init__(
        self,
        job_id: str,
        *,
        class_types: Mapping[str, str] | None = None,
        desc: str | None = None,
        leave: bool = True,
    ) -> None:
        self.job_id = job_id
        self.class_types = dict(class_types or {})
        self.prefix = desc or f"job {job_id[:8]}"
        self._seen: set[str] = set()
        self._cached = 0
        self._node: str | None = None
        self._max: int | None = None
        self.bar: Any = _tqdm()(total=None, desc=self.prefix, unit="step", leave=leave)

    def _label(self, node: str | None, class_type: str | None = None) -> str:
        if node is None:
            return "?"
        return f"{class_type or self.class_types.get(node, '?')} #{node}"

    def _describe(self, text: str) -> None:
        self.bar.set_description_str(f"{self.prefix}: {text}", refresh=True)

    def update(self, event: JobEvent) -> None:
        """Apply one event to the bar."""
        if isinstance(event, Queued):
            ahead = f", {event.position} ahead" if event.position else ""
            self._describe(f"queued{ahead}")
        elif isinstance(event, Started):
            self._describe("running")
        elif isinstance(event, NodeExecuting):
            self._node = event.node
            self._seen.add(event.node)
            self._describe(self._label(event.node, event.class_type))
            if self._max is None:  # no sampler yet: count nodes
                total = max(len(self.class_types), len(self._seen))
                if self.bar.total != total:
                    self.bar.reset(total=total)
                self.bar.update(len(self._seen) - 1 + self._cached - self.bar.n)
        elif isinstance(event, Progress):
            if event.max != self._max:
                self._max = event.max
                self.bar.reset(total=event.max)
                self._describe(self._label(event.node or self._node) + " steps")
            self.bar.update(event.value - self.bar.n)
        elif isinstance(event, NodeFinished):
            self._cached += int(event.cached)
        elif isinstance(event, Completed):
            total = self.bar.total or max(1, len(self._seen) + self._cached)
            if self.bar.total != total:
                self.bar.reset(total=total)
            self.bar.update(total - self.bar.n)
            images = len(event.result.images)
            self._describe(f"done, {images} image{'s' if images != 1 else ''}")
        elif isinstance(event, Failed):
            self._describe("failed")
        elif isinstance(event, Cancelled):
            self._describe("cancelled")

    def close(self) -> None:
        """Close the bar (it stays visible when ``leave``)."""
        self.bar.close()

    def __enter__(self) -> JobProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def generate_with_progress(
    client: Client,
    work: Work,
    *,
    images: Mapping[str, bytes] | None = None,
    timeout: float | None = NOT_GIVEN,
    desc: str | None = None,
    leave: bool = True,
) -> GenerationResult:
    """Run ``work`` with the sync :class:`~ryla_gen.Client`, showing a progress bar.

    Same arguments and errors as :meth:`ryla_gen.Client.generate` (the job's typed
    error is raised after the bar shows "failed"); returns the result.
    """
    job = client.submit(work, images=images, timeout=timeout)
    with JobProgressBar(job.id, class_types=_class_types(work), desc=desc, leave=leave) as bar:
        for event in job.events(timeout=timeout):
            bar.update(event)
    return job.wait()


async def agenerate_with_progress(
    client: AsyncClient,
    work: Work,
    *,
    images: Mapping[str, bytes] | None = None,
    timeout: float | None = NOT_GIVEN,
    desc: str | None = None,
    leave: bool = True,
) -> GenerationResult:
    """The :class:`~ryla_gen.AsyncClient` twin of :func:`generate_with_progress`.

    ``await`` it in a notebook cell (Jupyter runs top-level ``await``); run several
    with ``asyncio.gather`` to see one bar per job.
    """
    job = await client.submit(work, images=images, timeout=timeout)
    with JobProgressBar(job.id, class_types=_class_types(work), desc=desc, leave=leave) as bar:
        async for event in job.events(timeout=timeout):
            bar.update(event)
    return await job.wait()


def caption(result: GenerationResult) -> str:
    """One line about ``result``: provider, job, seed, image sizes and timings."""
    sizes = ", ".join(f"{img.width}x{img.height}" for img in result.images)
    t = result.timings
    parts = [
        f"{label} {value:.2f} s"
        for label, value in (
            ("queue", t.queue_wait),
            ("execution", t.execution),
            ("total", t.total),
        )
        if value is not None
    ]
    seed = f", seed {result.seed}" if result.seed is not None else ""
    n = len(result.images)
    return (
        f"{n} image{'s' if n != 1 else ''} ({sizes}) from {result.provider}, "
        f"job {result.job_id}{seed}" + (f"; {', '.join(parts)}" if parts else "")
    )


def show(
    result: GenerationResult, *, columns: int | None = None, with_caption: bool = True
) -> None:
    """Display ``result`` inline: its image (or a grid of its images) and a caption.

    Outside IPython it prints the caption only.
    """
    try:
        display_mod = importlib.import_module("IPython.display")
    except ImportError:
        print(caption(result))
        return
    if not result.images:
        display_mod.display(display_mod.Markdown(f"*job {result.job_id} produced no images*"))
        return
    if len(result.images) == 1:
        display_mod.display(result.images[0])
    else:
        import io

        buf = io.BytesIO()
        result.grid(columns).save(buf, format="PNG")
        display_mod.display(display_mod.Image(data=buf.getvalue(), format="png"))
    if with_caption:
        display_mod.display(display_mod.Markdown(caption(result)))
