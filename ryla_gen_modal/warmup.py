"""Warm a GPU container up before its first user job: load the models into VRAM.

A fresh container's first Flux Dev image spends ~35 s reading 31 GiB of weights
(BENCHMARKS.md). With ``RYLA_GEN_WARMUP=flux-dev`` (a comma-separated list of
workflows), the worker runs one small job of each listed workflow right after ComfyUI
starts, so that cost is paid at container start, off users' requests (pair it with
``RYLA_GEN_MIN_CONTAINERS`` to keep such containers ready). The warm-up job is 256x256,
one step: it loads every model the workflow needs at full size but renders almost
nothing. With ``RYLA_GEN_COMPILE`` it is 1024x1024 instead, the size the compiled model is
then ready for (compiled twice, see :func:`warm_up`). With ``RYLA_GEN_PREFETCH=1`` the
worker also reads the warm-up workflows' files into the page cache in parallel while
ComfyUI starts (:mod:`ryla_gen_modal.prefetch`). After the warm-up the worker freezes
ComfyUI's heap (:func:`freeze_heap`). A failed warm-up is logged, never fatal: the
container still serves jobs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ryla_gen._http import Deadline
from ryla_gen._prepare import prepare
from ryla_gen.providers import AsyncProvider
from ryla_gen.providers.comfyui import ComfyUIProvider
from ryla_gen.types import JobRequest
from ryla_gen_modal.jobs import run_job

__all__ = ["WARMUP_WORKFLOWS", "freeze_heap", "warm_up", "warmup_request"]

log = logging.getLogger("ryla_gen_modal.warmup")

WARMUP_WORKFLOWS: tuple[str, ...] = ("flux-dev", "flux-schnell", "z-image-turbo")
"""Workflows that can be warmed up (they need no input image)."""
COMPILED_WORKFLOWS: tuple[str, ...] = ("flux-dev", "flux-schnell")
"""Workflows whose graphs a worker with ``RYLA_GEN_COMPILE`` compiles (Flux)."""


def warmup_request(name: str, size: int = 256, steps: int = 1) -> JobRequest:
    """The small, validated job (``steps`` steps, ``size`` square) that loads workflow ``name``."""
    from ryla_gen.workflows import get_workflow

    if name not in WARMUP_WORKFLOWS:
        raise ValueError(f"cannot warm up {name!r}: choose from {', '.join(WARMUP_WORKFLOWS)}")
    cls = get_workflow(name)
    fields: dict[str, Any] = {
        "prompt": "warm-up",
        "width": size,
        "height": size,
        "steps": steps,
        "seed": 0,
        "filename_prefix": "ryla_warmup",
    }
    return prepare(cls(**fields))


async def warm_up(
    provider: AsyncProvider,
    names: tuple[str, ...] | list[str],
    *,
    timeout: float = 600.0,
    size: int = 256,
    compiled: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run the warm-up job of each workflow in ``names``, one after another.

    With ``compiled`` (the worker runs torch.compile) each Flux workflow runs twice at
    ``size``, with 1 and then 2 steps: torch.compile guards on the length of the step
    schedule, so the second run compiles the variant that serves every step count, during
    the warm-up instead of on a user's first job. Other workflows are not compiled and
    warm up once at 256x256.

    Returns, per workflow, ``{"status": ..., "seconds": ..., "error": message or None}``.
    Never raises for a failed job: the container must still serve.
    """
    report: dict[str, dict[str, Any]] = {}
    for name in names:
        t0 = time.monotonic()
        status, message = "completed", None
        # Only Flux graphs are compiled (ryla_gen_modal.tuning); others warm up small.
        this_compiled = compiled and name in COMPILED_WORKFLOWS
        this_size = size if this_compiled or not compiled else 256
        for steps in (1, 2) if this_compiled else (1,):
            try:
                outcome = await run_job(
                    provider,
                    warmup_request(name, this_size, steps),
                    created_at=time.time(),
                    timeout=timeout,
                )
                status = str(outcome.get("status"))
                error = outcome.get("error")
                message = error.get("message") if isinstance(error, dict) else None
            except Exception as exc:  # a warm-up must never take the container down
                status, message = "failed", f"{type(exc).__name__}: {exc}"
            if status != "completed":
                break
        seconds = round(time.monotonic() - t0, 3)
        report[name] = {"status": status, "seconds": seconds, "error": message}
        if status == "completed":
            log.info("warm-up %s done in %.1f s", name, seconds)
        else:
            log.warning("warm-up %s %s after %.1f s: %s", name, status, seconds, message)
    return report


async def freeze_heap(provider: ComfyUIProvider) -> int | None:
    """Ask ComfyUI (with ryla-gen's nodes loaded) to ``gc.freeze()`` its warmed-up heap.

    Returns the number of frozen objects, or None when the server lacks the route or
    does not answer: like the warm-up itself, this only saves time.
    """
    try:
        r = await provider.http.request(
            "POST", "/ryla/gc_freeze", idempotent=True, deadline=Deadline(60.0), ok=(404, 405)
        )
        if r.status_code != 200:
            return None
        return int(r.json().get("frozen_objects", 0))
    except Exception as exc:
        log.warning("freezing ComfyUI's heap failed: %s", exc)
        return None
