"""examples/quickstart.ipynb runs top to bottom against the real ComfyUI, and the helpers."""

from __future__ import annotations

import os
import random
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from ryla_gen import Client
from ryla_gen.notebook import JobProgressBar, caption, generate_with_progress, show
from ryla_gen.testing import slow_graph, tiny_graph
from ryla_gen.types import NodeExecuting, Progress, Queued, Started

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO_ROOT / "examples" / "quickstart.ipynb"

pytestmark = pytest.mark.comfyui


def test_quickstart_notebook_executes_and_shows_images(
    comfyui_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel inherits this process's environment: that is how it finds the server.
    monkeypatch.setenv("RYLA_GEN_COMFYUI_URL", comfyui_url)
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        "commit the notebook without outputs"
    )
    client = NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO_ROOT)}},
    )
    client.execute()  # raises CellExecutionError on any failing cell

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 2  # the single result and the batch grid
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"ComfyUI 0.3.75 at {comfyui_url}" in text
    assert "prompt sent: film grain, a lighthouse" in text
    assert "multiple of 16" in text
    assert "diffusion_models/flux1-dev.safetensors" not in text  # the test server has it


def test_generate_with_progress_returns_the_result(
    comfyui_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Client("comfyui", comfyui_url=comfyui_url) as client:
        result = generate_with_progress(client, slow_graph(1.0), desc="slow")
        batch = generate_with_progress(
            client, tiny_graph(color=random.randrange(1 << 24), batch_size=3)
        )
    assert result.image.width == 512
    assert len(batch.images) == 3
    err = capsys.readouterr().err
    assert "slow: done, 1 image" in err
    assert "ImageBlur" in err


def test_progress_bar_follows_sampler_steps(capsys: pytest.CaptureFixture[str]) -> None:
    bar = JobProgressBar("job-1234567890", class_types={"1": "KSampler"})
    with bar:
        bar.update(Queued("job-1234567890", position=2))
        assert "queued, 2 ahead" in bar.bar.desc
        bar.update(Started("job-1234567890"))
        bar.update(NodeExecuting("job-1234567890", "1", "KSampler"))
        bar.update(Progress("job-1234567890", 3, 20, "1"))
        assert (bar.bar.n, bar.bar.total) == (3, 20)
        assert "KSampler #1" in bar.bar.desc
        bar.update(Progress("job-1234567890", 20, 20, "1"))
        assert bar.bar.n == 20


def test_show_and_caption(comfyui_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with Client("comfyui", comfyui_url=comfyui_url) as client:
        result = client.generate(tiny_graph(width=40, height=30, color=random.randrange(1 << 24)))
    text = caption(result)
    assert "1 image (40x30) from comfyui" in text and result.job_id in text
    show(result)  # outside a notebook IPython's display prints reprs; must not raise
