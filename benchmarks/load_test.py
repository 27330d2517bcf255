"""Load test: many concurrent jobs through ONE ``AsyncClient(provider="modal")``.

The path under load is the real one: the SDK's modal provider -> HTTP -> the local job
API (``python -m ryla_gen_modal serve``, a separate process running the LocalExecutor)
-> a real ComfyUI 0.3.75 on the CPU. Every job runs a model-free graph
(``EmptyImage -> SaveImage``) with its own size and colour, so each result can be
checked to belong to its job: the PNG's dimensions and its pixel colour must match.

Measured: wall time and throughput, the client's CPU time (``time.process_time``), the
slowest and median job latency, the client's and the server's resident memory before and
after, and how often the server answered 429 (its queue cap) and the client retried.

Run it by hand (prints a JSON report; exits 1 if any job failed or was mixed up)::

    .venv/bin/python benchmarks/load_test.py --jobs 200
    .venv/bin/python benchmarks/load_test.py --jobs 200 --max-queued 64   # 429s under load
    .venv/bin/python benchmarks/load_test.py --comfyui-url http://127.0.0.1:8188

Without ``--comfyui-url`` it installs (first run: minutes) and starts the test ComfyUI of
:mod:`ryla_gen.testing`. ``tests/test_reliability_load.py`` runs the same code in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import json
import os
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from ryla_gen import AsyncClient  # noqa: E402
from ryla_gen.errors import RylaGenError  # noqa: E402
from ryla_gen.testing import tiny_graph  # noqa: E402

__all__ = [
    "JobSpec",
    "LoadReport",
    "Served",
    "job_spec",
    "rss_mib",
    "run_load",
    "serve",
]


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """What job ``index`` asks for: a ``width`` x ``height`` image of one ``color``."""

    index: int
    width: int
    height: int
    color: int

    @property
    def rgb(self) -> tuple[int, int, int]:
        return (self.color >> 16) & 255, (self.color >> 8) & 255, self.color & 255

    def graph(self) -> dict[str, Any]:
        return tiny_graph(self.width, self.height, self.color, prefix=f"load_{self.index}")


def job_spec(index: int, salt: int = 0) -> JobSpec:
    """A distinct colour for every index (an odd multiplier is a bijection mod 2**24) and
    one of 17 x 13 sizes, so that neighbouring jobs differ in size as well as colour.
    ``salt`` shifts the colours between runs (ComfyUI caches identical graphs)."""
    color = ((index + salt) * 0x9E3779 + 0x123457) & 0xFFFFFF
    return JobSpec(index, 16 + (index % 17) * 4, 16 + (index // 17 % 13) * 4, color)


@dataclasses.dataclass
class LoadReport:
    """What one load run measured (seconds, MiB)."""

    jobs: int
    salt: int = 0
    completed: int = 0
    failed: list[str] = dataclasses.field(default_factory=list)
    mixed_up: list[str] = dataclasses.field(default_factory=list)
    wall_s: float = 0.0
    jobs_per_s: float = 0.0
    client_cpu_s: float = 0.0
    latency_max_s: float = 0.0
    latency_p50_s: float = 0.0
    latency_p95_s: float = 0.0
    client_rss_before_mib: float = 0.0
    client_rss_after_mib: float = 0.0
    server_rss_before_mib: float | None = None
    server_rss_after_mib: float | None = None
    http_requests: int = 0
    http_429: int = 0
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 3)
        return out


def rss_mib(pid: int | None = None) -> float:
    """Resident memory of process ``pid`` (default: this one) in MiB, from /proc."""
    path = f"/proc/{pid or 'self'}/status"
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    # Not Linux: the peak is the best there is (KiB on Linux, bytes on macOS).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Served:
    """A running ``python -m ryla_gen_modal serve``: its URL, process and output."""

    url: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    def output(self) -> str:
        """Everything the server printed so far (logs included)."""
        self.log.flush()
        self.log.seek(0)
        text = self.log.read().decode(errors="replace")
        self.log.seek(0, os.SEEK_END)
        return text


@contextlib.contextmanager
def serve(
    comfyui_url: str, token: str, *args: str, startup_timeout: float = 60.0
) -> Iterator[Served]:
    """``python -m ryla_gen_modal serve`` on a free port (``args`` added to its command).

    The token goes through the environment, as in production. The server's output goes
    to a temporary file (:meth:`Served.output`), shown if the server fails to start.
    """
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RYLA_GEN_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["RYLA_GEN_API_TOKEN"] = token
    cmd = [sys.executable, "-m", "ryla_gen_modal", "serve", "--comfyui-url", comfyui_url]
    cmd += ["--port", str(port), "--log-level", "warning", *args]
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    served = Served(url, proc, log)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the job API server exited: {served.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the job API server did not start within {startup_timeout} s")
            time.sleep(0.1)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def run_load(
    url: str,
    token: str,
    jobs: int,
    *,
    server_pid: int | None = None,
    poll_interval: float = 1.0,
    timeout: float = 300.0,
    salt: int | None = None,
) -> LoadReport:
    """Run ``jobs`` jobs at once through one ``AsyncClient(provider="modal")``.

    Every job's outcome is checked: completed, one PNG of its own size and colour.
    """
    from PIL import Image

    salt = secrets.randbelow(1 << 24) if salt is None else salt
    specs = [job_spec(i, salt) for i in range(jobs)]
    report = LoadReport(jobs=jobs, salt=salt)
    statuses: dict[str, int] = {}

    async def count(response: httpx.Response) -> None:
        key = str(response.status_code)
        statuses[key] = statuses.get(key, 0) + 1

    latencies: list[float] = []

    async with AsyncClient(
        "modal", modal_url=url, modal_token=token, poll_interval=poll_interval, timeout=timeout
    ) as client:
        client.provider.http.client.event_hooks["response"].append(count)  # type: ignore[attr-defined]

        async def one(spec: JobSpec) -> None:
            t0 = time.monotonic()
            try:
                result = await client.generate(spec.graph())
            except RylaGenError as exc:
                report.failed.append(f"job {spec.index}: {type(exc).__name__}: {exc}"[:400])
                return
            finally:
                latencies.append(time.monotonic() - t0)
            problems = []
            if len(result.images) != 1:
                problems.append(f"{len(result.images)} images")
            else:
                with Image.open(io.BytesIO(result.images[0].data)) as im:
                    if im.size != (spec.width, spec.height):
                        problems.append(f"size {im.size} != {(spec.width, spec.height)}")
                    pixel = im.convert("RGB").getpixel((im.width // 2, im.height // 2))
                    if pixel != spec.rgb:
                        problems.append(f"colour {pixel} != {spec.rgb}")
            if problems:
                report.mixed_up.append(f"job {spec.index} ({result.job_id}): {', '.join(problems)}")
            else:
                report.completed += 1

        report.client_rss_before_mib = rss_mib()
        if server_pid is not None:
            report.server_rss_before_mib = rss_mib(server_pid)
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.gather(*(one(s) for s in specs))
        report.wall_s = time.monotonic() - wall0
        report.client_cpu_s = time.process_time() - cpu0
        report.client_rss_after_mib = rss_mib()
        if server_pid is not None:
            report.server_rss_after_mib = rss_mib(server_pid)

    report.jobs_per_s = jobs / report.wall_s if report.wall_s else 0.0
    ordered = sorted(latencies)
    report.latency_max_s = ordered[-1] if ordered else 0.0
    report.latency_p50_s = statistics.median(ordered) if ordered else 0.0
    report.latency_p95_s = ordered[int(0.95 * (len(ordered) - 1))] if ordered else 0.0
    report.statuses = statuses
    report.http_requests = sum(statuses.values())
    report.http_429 = statuses.get("429", 0)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--comfyui-url", help="a running ComfyUI (default: start the test one)")
    parser.add_argument("--max-queued", type=int, default=256, help="the server's queue cap")
    parser.add_argument("--max-concurrency", type=int, default=2)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    token = secrets.token_urlsafe(24)

    with contextlib.ExitStack() as stack:
        comfyui_url = args.comfyui_url
        if comfyui_url is None:
            from ryla_gen.testing import ComfyUIServer, install_comfyui

            home = Path(os.environ.get("RYLA_GEN_COMFYUI_HOME") or REPO / ".comfyui")
            server = stack.enter_context(ComfyUIServer(install_comfyui(home)))
            comfyui_url = server.url
        served = stack.enter_context(
            serve(
                comfyui_url,
                token,
                "--max-queued",
                str(args.max_queued),
                "--max-concurrency",
                str(args.max_concurrency),
            )
        )
        report = asyncio.run(
            run_load(
                served.url,
                token,
                args.jobs,
                server_pid=served.process.pid,
                poll_interval=args.poll_interval,
            )
        )
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    print(json.dumps({"machine": machine, **report.as_dict()}, indent=2))
    return 0 if report.completed == report.jobs else 1


if __name__ == "__main__":
    raise SystemExit(main())
