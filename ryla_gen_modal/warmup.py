"""Warm a GPU container up before its first user job: load the models into VRAM.

A fresh container's first Flux Dev image spends ~35 s reading 31 GiB of weights
(BENCHMARKS.md). With ``RYLA_GEN_WARMUP=flux-dev`` (a comma-separated list of
workflows), the worker runs one small job of each listed workflow right after ComfyUI
starts, so that cost is paid at container start, off users' requests (pair it with
``RYLA_GEN_MIN_CONTAINERS`` to keep such containers ready). The warm-up job is 256x256,
one step: it loads every model the workflow needs at full size but renders almost
nothing. A failed warm-up is logged, never fatal: the container still serves jobs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ryla_gen._prepare import prepare
from ryla_gen.providers import AsyncProvider
from ryla_gen.types import JobRequest
from ryla_gen_modal.jobs import run_job

__all__ = ["WARMUP_WORKFLOWS", "warm_up", "warmup_request"]

log = logging.getLogger("ryla_gen_modal.warmup")

WARMUP_WORKFLOWS: tuple[str, ...] = ("flux-dev", "flux-schnell", "z-image-turbo")
"""Workflows that can be warmed up (they need no input image)."""


def warmup_request(name: str) -> JobRequest:
    """The small, validated job that loads every model of workflow ``name``."""
    from ryla_gen.workflows import get_workflow

    if name not in WARMUP_WORKFLOWS:
        raise ValueError(f"cannot warm up {name!r}: choose from {', '.join(WARMUP_WORKFLOWS)}")
    cls = get_workflow(name)
    fields: dict[str, Any] = {
        "prompt": "warm-up",
        "width": 256,
        "height": 256,
        "steps": 1,
        "seed": 0,
        "filename_prefix": "ryla_warmup",
    }
    return prepare(cls(**fields))


async def warm_up(
    provider: AsyncProvider, names: tuple[str, ...] | list[str], *, timeout: float = 600.0
) -> dict[str, dict[str, Any]]:
    """Run the warm-up job of each workflow in ``names``, one after another.

    Returns, per workflow, ``{"status": ..., "seconds": ..., "error": message or None}``.
    Never raises for a failed job: the container must still serve.
    """
    report: dict[str, dict[str, Any]] = {}
    for name in names:
        t0 = time.monotonic()
        try:
            outcome = await run_job(
                provider, warmup_request(name), created_at=time.time(), timeout=timeout
            )
            status = str(outcome.get("status"))
            error = outcome.get("error")
            message = error.get("message") if isinstance(error, dict) else None
        except Exception as exc:  # a warm-up must never take the container down
            status, message = "failed", f"{type(exc).__name__}: {exc}"
        seconds = round(time.monotonic() - t0, 3)
        report[name] = {"status": status, "seconds": seconds, "error": message}
        if status == "completed":
            log.info("warm-up %s done in %.1f s", name, seconds)
        else:
            log.warning("warm-up %s %s after %.1f s: %s", name, status, seconds, message)
    return report
