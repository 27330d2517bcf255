"""Helpers shared by the test modules (pytest puts ``tests/`` on sys.path: ``import helpers``)."""

from __future__ import annotations

import importlib.util
import random
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from ryla_gen.types import JobRequest
from ryla_gen_modal.jobs import Executor, make_view

REPO_ROOT = Path(__file__).resolve().parent.parent


def fresh_color() -> int:
    """A random 0xRRGGBB colour: ComfyUI caches identical graphs, a fresh one forces a run."""
    return random.randrange(1 << 24)


def rgb(color: int) -> tuple[int, int, int]:
    """0xRRGGBB as an (r, g, b) tuple, as Pillow reports pixels."""
    return (color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (the folder is not a package), loaded once."""
    module_name = f"ryla_gen_benchmarks_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(
        module_name, REPO_ROOT / "benchmarks" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


class RecordingExecutor(Executor):
    """Keeps jobs as 'queued' views and remembers every request it was given."""

    def __init__(self) -> None:
        self.requests: list[JobRequest] = []
        self.views: dict[str, dict[str, Any]] = {}

    async def create(
        self, request: JobRequest, *, job_id: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        if job_id is not None and job_id in self.views:
            return self.views[job_id], False
        self.requests.append(request)
        jid = job_id or str(uuid.uuid4())
        view = make_view(
            jid, status="queued", created_at=time.time(), workflow=request.workflow, seed=None
        )
        self.views[jid] = view
        return view, True

    async def get(self, job_id: str) -> dict[str, Any] | None:
        return self.views.get(job_id)

    async def wait(self, job_id: str, timeout: float) -> dict[str, Any] | None:
        return self.views.get(job_id)

    async def cancel(self, job_id: str) -> dict[str, Any] | None:
        view = self.views.get(job_id)
        if view is not None:
            view = {**view, "status": "cancelled"}
            self.views[job_id] = view
        return view
