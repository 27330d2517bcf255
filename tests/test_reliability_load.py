"""Load: 200 concurrent jobs through ONE ``AsyncClient(provider="modal")`` -> the local job
API server (``python -m ryla_gen_modal serve``, LocalExecutor) -> the real ComfyUI.

The server's queue cap is set below the load (64 for 200 jobs), so it answers 429 with
Retry-After and the client has to retry. Every job must end completed with its own
image (size and colour are unique per job), ComfyUI must have run each exactly once,
and memory must stay bounded. The figures go to the test's output (``-s``) and, when
``RYLA_GEN_LOAD_REPORT`` names a file, into it as JSON. The same code runs by hand as
``benchmarks/load_test.py`` (see docs/reliability.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import load_benchmark

from ryla_gen.testing import ComfyUIServer

TOKEN = "rg-load-0b8e4d21-token"
JOBS = 200
QUEUE_CAP = 64


bench = load_benchmark("load_test")


@pytest.mark.comfyui
@pytest.mark.timeout(180)
async def test_200_concurrent_jobs_through_one_client_all_end_right(
    comfyui_server: ComfyUIServer, record_property: Any
) -> None:
    with bench.serve(comfyui_server.url, TOKEN, "--max-queued", str(QUEUE_CAP)) as served:
        report = await bench.run_load(
            served.url,
            TOKEN,
            JOBS,
            server_pid=served.process.pid,
            poll_interval=1.0,
            timeout=150,
        )
        server_output = served.output()
    figures = {"machine": {"cpus": os.cpu_count()}, "queue_cap": QUEUE_CAP, **report.as_dict()}
    print("\nload report:", json.dumps(figures, indent=2))
    record_property("load_report", json.dumps(figures))
    if os.environ.get("RYLA_GEN_LOAD_REPORT"):
        Path(os.environ["RYLA_GEN_LOAD_REPORT"]).write_text(json.dumps(figures, indent=2))

    # Every job reached a terminal state, completed, with its own image.
    assert report.failed == [], report.failed[:5]
    assert report.mixed_up == [], report.mixed_up[:5]
    assert report.completed == JOBS
    # The cap was hit and the client coped; each job was created exactly once ...
    assert report.http_429 > 0
    assert report.statuses.get("202") == JOBS
    # ... and ComfyUI ran each graph exactly once.
    async with httpx.AsyncClient(timeout=30) as http:
        history = (await http.get(f"{comfyui_server.url}/history")).json()
    colors = [bench.job_spec(i, report.salt).color for i in range(JOBS)]
    runs: dict[int, int] = {}
    for entry in history.values():
        graph = entry["prompt"][2]
        if str(graph.get("2", {}).get("inputs", {}).get("filename_prefix", "")).startswith("load_"):
            color = graph["1"]["inputs"]["color"]
            runs[color] = runs.get(color, 0) + 1
    wrong = {c: runs.get(c, 0) for c in colors if runs.get(c, 0) != 1}
    assert wrong == {}, wrong
    # Bounded: well inside the CI budget, memory growth small and not per-job.
    assert report.wall_s < 90
    assert report.client_rss_after_mib - report.client_rss_before_mib < 100
    assert report.server_rss_after_mib is not None and report.server_rss_before_mib is not None
    assert report.server_rss_after_mib - report.server_rss_before_mib < 100
    assert TOKEN not in server_output
