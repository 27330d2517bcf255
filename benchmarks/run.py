"""The GPU benchmark harness: our full stack against stock ComfyUI, side by side, in one run.

One process, one GPU, one ComfyUI. It starts ComfyUI the way the Modal GPU worker does
(:mod:`ryla_gen_modal.comfy_process`, models found through the worker's
``extra_model_paths.yaml``) and the job API in local mode (``python -m ryla_gen_modal
serve``) in front of it, then runs every case two ways:

* **full**: ``ryla_gen.Client(provider="modal")`` -> job API -> ComfyUI (what users run);
  ``full_fastpoll`` is the same with the client's ``poll_interval`` at 0.05 s instead
  of the default 1.0 s;
* **direct**: the same API-format graph POSTed straight to ComfyUI's ``/prompt``, then
  ``/history/{id}`` polled every 20 ms and the image fetched from ``/view`` (a minimal
  stock client, no SDK code involved).

Warm runs of the variants are interleaved (the order rotates run by run) and every run
has its own seed and prompt, so ComfyUI's output cache never short-circuits a run.

Cases, in an order that keeps model reloads few: process start -> first Flux Dev image
(page cache dropped first); Flux Dev 1024x1024 20 steps bf16 warm; stock LoRA switching
(A -> A -> B -> B -> B at another strength -> none -> none); Flux Dev + 2 LoRAs; Flux
Schnell 4 steps; Flux Dev fp8_e4m3fn_fast; Z-Image-Turbo 9 steps (its files are still
cold on disk when it starts). For each: the first run (model load or switch), warm p50/p90,
full-stack overhead against direct, peak GPU memory of the whole card (NVML), and the cost
per image at Modal's per-second GPU price.

Results go to ``OUT/results.json`` (rewritten after every phase, so a run cut short
still leaves data) and ``OUT/summary.md``. ``--deadline`` (Unix time) makes the harness
skip or shorten later phases rather than overrun.

    python benchmarks/run.py --comfy-dir DIR --models-dir DIR --out DIR [--drop-caches]
    python benchmarks/run.py --smoke --out /tmp/bench-smoke      # CPU dry run, tiny graphs
    python benchmarks/run.py --render OUT/results.json            # print the markdown
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: Modal's published GPU prices (GPU only; Modal also bills the container's CPU and memory).
PRICES = {
    "H100": {
        "usd_per_hour": 3.9492,
        "usd_per_second": 0.001097,
        "source": "modal.com/pricing: H100 $0.001097/s ($3.9492/h), as quoted by "
        "techbytes.app/posts/serverless-gpu-pricing-matrix-modal-replicate-lambda-2026 "
        "(verified 2026-05-07)",
    },
    "H200": {
        "usd_per_hour": 4.54,
        "usd_per_second": 4.54 / 3600,
        "source": "modal.com/pricing: H200 $4.54/h (the figure the project uses; "
        "not re-verified from a stored copy of the page)",
    },
}

LORA_A = "bench_lora_a_r32.safetensors"
LORA_B = "bench_lora_b_r32.safetensors"
FAST_POLL = 0.05
DIRECT_POLL = 0.02

#: Rough seconds per warm run on an H100/H200, for budgeting only.
WARM_EST = {
    "flux_dev_bf16": 3.8,
    "flux_dev_fp8_fast": 3.6,
    "flux_dev_2loras": 3.8,
    "flux_schnell": 1.3,
    "z_image_turbo": 1.6,
    "flux_dev_compile": 3.2,
}
FIRST_EST = {
    "flux_dev_bf16": 45.0,
    "flux_dev_fp8_fast": 25.0,
    "flux_dev_2loras": 25.0,
    "flux_schnell": 20.0,
    "z_image_turbo": 35.0,
    "flux_dev_compile": 90.0,
}
CASE_TITLES = {
    "flux_dev_bf16": "Flux Dev 1024² 20 steps, bf16",
    "flux_dev_2loras": "Flux Dev 1024² 20 steps + 2 LoRAs (r32, 0.8 each)",
    "flux_schnell": "Flux Schnell 1024² 4 steps, bf16",
    "flux_dev_fp8_fast": "Flux Dev 1024² 20 steps, fp8_e4m3fn_fast",
    "z_image_turbo": "Z-Image-Turbo 1024² 9 steps, bf16",
    "flux_dev_compile": "Flux Dev 1024² 20 steps, bf16 + TorchCompileModel (inductor)",
}


def log(msg: str) -> None:
    print(f"[{dt.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


# -- statistics ---------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    """Percentile with linear interpolation (q in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": _r(pct(values, 50)),
        "p90": _r(pct(values, 90)),
        "min": _r(min(values)) if values else None,
        "max": _r(max(values)) if values else None,
        "mean": _r(statistics.fmean(values)) if values else None,
    }


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


# -- GPU memory ----------------------------------------------------------------------------------


class GpuMonitor:
    """Samples the whole card's used memory (NVML, else nvidia-smi) in a thread."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (monotonic, MiB used)
        self.info: dict[str, Any] = {}
        self._stop = threading.Event()
        self._read: Callable[[], float] | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
            name = pynvml.nvmlDeviceGetName(h)
            self.info = {
                "name": name.decode() if isinstance(name, bytes) else str(name),
                "memory_total_mib": round(pynvml.nvmlDeviceGetMemoryInfo(h).total / 2**20),
                "driver": _s(pynvml.nvmlSystemGetDriverVersion()),
                "source": "nvml",
            }
            self._read = lambda: pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20
        except Exception:
            if shutil.which("nvidia-smi"):
                self.interval = max(interval, 0.5)
                q = subprocess.run(
                    [
                        "nvidia-smi",
                        "--query-gpu=name,memory.total,driver_version",
                        "--format=csv,noheader,nounits",
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if q.returncode == 0 and q.stdout.strip():
                    name, total, driver = [x.strip() for x in q.stdout.splitlines()[0].split(",")]
                    self.info = {
                        "name": name,
                        "memory_total_mib": int(float(total)),
                        "driver": driver,
                        "source": "nvidia-smi",
                    }
                    self._read = self._smi
        self._thread = threading.Thread(target=self._loop, name="gpu-monitor", daemon=True)
        if self._read is not None:
            self._thread.start()

    @staticmethod
    def _smi() -> float:
        q = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            check=False,
        )
        return float(q.stdout.split()[0])

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                assert self._read is not None
                self.samples.append((time.monotonic(), self._read()))
            except Exception:
                pass
            self._stop.wait(self.interval)

    @property
    def available(self) -> bool:
        return self._read is not None

    def peak(self, t0: float, t1: float) -> float | None:
        vals = [m for t, m in self.samples if t0 <= t <= t1]
        return round(max(vals)) if vals else None

    def now(self) -> float | None:
        return round(self.samples[-1][1]) if self.samples else None

    def stop(self) -> None:
        self._stop.set()


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


# -- the two paths ---------------------------------------------------------------------------------


def _http_json(method: str, url: str, body: Any = None, timeout: float = 30.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def _recorded(out: dict[str, Any]) -> Iterator[float]:
    """Time the block into ``out["seconds"]``; an exception becomes ``out["error"]``.

    Yields the start time (``time.monotonic()``).
    """
    t0 = time.monotonic()
    try:
        yield t0
    except urllib.error.HTTPError as e:
        out["error"] = f"HTTP {e.code}: {e.read()[:500]!r}"
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        out["seconds"] = round(time.monotonic() - t0, 4)


def direct_run(comfy_url: str, graph: dict[str, Any], timeout: float = 900.0) -> dict[str, Any]:
    """POST /prompt, poll /history every 20 ms, GET /view the first image. Stock client."""
    out: dict[str, Any] = {"path": "direct", "ok": False}
    with _recorded(out) as t0:
        resp = _http_json(
            "POST", f"{comfy_url}/prompt", {"prompt": graph, "client_id": "ryla-bench"}
        )
        pid = resp["prompt_id"]
        deadline = t0 + timeout
        entry = None
        while time.monotonic() < deadline:
            hist = _http_json("GET", f"{comfy_url}/history/{pid}")
            entry = hist.get(pid) if isinstance(hist, dict) else None
            if entry and (
                entry.get("status", {}).get("completed")
                or entry.get("status", {}).get("status_str") == "error"
            ):
                break
            time.sleep(DIRECT_POLL)
        out["done_s"] = time.monotonic() - t0
        if not entry:
            out["error"] = "timeout"
            return out
        status = entry.get("status", {})
        msgs = {m[0]: m[1] for m in status.get("messages", []) if isinstance(m, list)}
        if "execution_start" in msgs and "execution_success" in msgs:
            out["comfy_exec_s"] = round(
                (msgs["execution_success"]["timestamp"] - msgs["execution_start"]["timestamp"])
                / 1000.0,
                3,
            )
        if status.get("status_str") == "error":
            err = msgs.get("execution_error", {})
            out["error"] = (
                f"{err.get('node_type')}: {err.get('exception_type')}: "
                f"{str(err.get('exception_message'))[:300]}"
            )
            return out
        image = None
        for node_out in entry.get("outputs", {}).values():
            for img in node_out.get("images", []):
                image = img
                break
            if image:
                break
        if image is None:
            out["error"] = "no image in outputs"
            return out
        q = urllib.parse.urlencode(
            {
                "filename": image["filename"],
                "subfolder": image.get("subfolder", ""),
                "type": image.get("type", "output"),
            }
        )
        with urllib.request.urlopen(f"{comfy_url}/view?{q}", timeout=60) as r:
            data = r.read()
        out["image_bytes"] = len(data)
        out["ok"] = len(data) > 0
    return out


def longpoll_run(api_url: str, token: str, work: Any, graph: dict[str, Any]) -> dict[str, Any]:
    """One ``POST /generate`` (the job API waits for the job, then answers with the image).

    The job API without the SDK client (which long-polls ``GET /jobs/{id}?wait=``).
    """
    import base64

    out: dict[str, Any] = {"path": "api_longpoll", "ok": False}
    body = {
        "id": str(uuid.uuid4()),
        "graph": graph,
        "images": {},
        "workflow": getattr(work, "name", None),
        "seed": getattr(work, "seed", None),
        "wait": 120.0,
    }
    with _recorded(out):
        req = urllib.request.Request(
            f"{api_url}/generate",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(req, timeout=300) as r:
            view = json.loads(r.read())
        if view.get("status") != "completed":
            out["error"] = f"status {view.get('status')}: {str(view.get('error'))[:300]}"
        else:
            data = base64.b64decode(view["images"][0]["data"])
            out["image_bytes"] = len(data)
            out["ok"] = len(data) > 0
    return out


def with_torch_compile(graph: dict[str, Any]) -> dict[str, Any]:
    """The graph with a stock ``TorchCompileModel`` (inductor) between UNETLoader and KSampler."""
    g = json.loads(json.dumps(graph))
    unet = next(k for k, n in g.items() if n["class_type"] == "UNETLoader")
    g["torch_compile"] = {
        "class_type": "TorchCompileModel",
        "inputs": {"model": [unet, 0], "backend": "inductor"},
    }
    for node in g.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["model"] = ["torch_compile", 0]
    return g


def full_run(client: Any, work: Any, variant: str) -> dict[str, Any]:
    """``client.generate(work)`` through the job API; wall time as the caller sees it."""
    t0 = time.monotonic()
    out: dict[str, Any] = {"path": variant, "ok": False}
    try:
        result = client.generate(work)
        out["seconds"] = round(time.monotonic() - t0, 4)
        out["image_bytes"] = len(result.images[0].data) if result.images else 0
        out["ok"] = out["image_bytes"] > 0
        t = result.timings
        out["server_exec_s"] = _r(t.execution)
    except Exception as e:
        out["seconds"] = round(time.monotonic() - t0, 4)
        out["error"] = f"{type(e).__name__}: {str(e)[:500]}"
    return out


# -- the bench ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drop_page_cache() -> dict[str, Any]:
    """sync, then ask the kernel to drop clean caches (root only; failure is recorded)."""
    t0 = time.monotonic()
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return {"ok": True, "seconds": round(time.monotonic() - t0, 2)}
    except OSError as e:
        return {"ok": False, "error": str(e)}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.smoke = args.smoke
        self.rng = random.Random(20261128)
        self.counter = 0
        self.deadline = args.deadline or (time.time() + 24 * 3600)
        self.gpu = GpuMonitor()
        self.results: dict[str, Any] = {
            "meta": {},
            "startup": {},
            "cases": {},
            "lora_switching": {},
            "graph_checks": [],
            "skipped": [],
            "errors": [],
        }
        from ryla_gen_modal.tuning import WorkerTuning

        # The tuned plan turns compile on for its second phase only (run_tuned).
        self.tuning = WorkerTuning(
            lora_mode=args.lora_mode, compile=args.compile and not args.tuned
        )
        self.startup_key = "startup"  # where start-up numbers of the running stack go
        self.comfy: Any = None
        self.api_proc: subprocess.Popen[bytes] | None = None
        self.clients: dict[str, Any] = {}

    # -- plumbing -------------------------------------------------------------------------------

    def time_left(self) -> float:
        return self.deadline - time.time()

    def save(self) -> None:
        self.results["meta"]["wall_s"] = round(time.monotonic() - self.t_start, 1)
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=1, default=str))
        tmp.replace(self.out / "results.json")
        with contextlib.suppress(Exception):
            (self.out / "summary.md").write_text(render(self.results))

    def error(self, where: str, exc: BaseException | str) -> None:
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        log(f"ERROR in {where}: {text}")
        if not isinstance(exc, str):
            traceback.print_exc()
        self.results["errors"].append({"where": where, "error": str(text)[:2000]})

    def next_variation(self) -> tuple[int, str]:
        self.counter += 1
        seed = self.rng.randrange(1, 2**48)
        prompt = (
            f"portrait photo of a woman in a red coat on a rainy street at night, "
            f"cinematic light, variation {self.counter}"
        )
        return seed, prompt

    # -- the work of each case ------------------------------------------------------------------

    def work(self, case: str, loras: list[tuple[str, float]] | None = None) -> tuple[Any, dict]:
        """(what the client runs, the API graph sent directly): one fresh seed and prompt."""
        seed, prompt = self.next_variation()
        if self.smoke:
            from ryla_gen.testing import blur_graph

            g = blur_graph(
                width=192, height=192, color=seed % 0x1000000, blur_radius=5, prefix=f"bench_{case}"
            )
            return g, json.loads(json.dumps(g))
        from ryla_gen.workflows import FluxDev, FluxSchnell, LoRA, ZImageTurbo

        lora_objs = [LoRA(name=n, strength=s) for n, s in (loras or [])]
        if case in ("flux_dev_bf16", "flux_dev_compile"):
            wf: Any = FluxDev(prompt=prompt, seed=seed, loras=lora_objs)
            if case == "flux_dev_compile":
                return wf, with_torch_compile(wf.to_graph().to_api())
        elif case == "flux_dev_2loras":
            wf = FluxDev(
                prompt=prompt,
                seed=seed,
                loras=lora_objs
                or [LoRA(name=LORA_A, strength=0.8), LoRA(name=LORA_B, strength=0.8)],
            )
        elif case == "flux_dev_fp8_fast":
            wf = FluxDev(prompt=prompt, seed=seed, weight_dtype="fp8_e4m3fn_fast")
        elif case == "flux_schnell":
            wf = FluxSchnell(prompt=prompt, seed=seed, steps=4)
        elif case == "z_image_turbo":
            wf = ZImageTurbo(prompt=prompt, seed=seed, steps=9)
        else:
            raise ValueError(case)
        return wf, wf.to_graph().to_api()

    def run_one(
        self,
        case: str,
        variant: str,
        loras: list[tuple[str, float]] | None = None,
        tag: str | None = None,
    ) -> dict[str, Any]:
        work, graph = self.work(case, loras)
        graph = self.tuning.apply(graph)  # what the worker (job API) sends ComfyUI, too
        t0 = time.monotonic()
        if variant == "direct":
            r = direct_run(self.comfy_url, graph)
        elif variant == "api_longpoll":
            r = longpoll_run(self.api_url, self.token, work, graph)
        else:
            r = full_run(self.clients[variant], work, variant)
        r["t"] = round(t0 - self.t_start, 2)
        r["case"] = case
        if tag:
            r["tag"] = tag
        ok = "ok" if r.get("ok") else f"FAILED {r.get('error')}"
        extra = f" (comfy exec {r['comfy_exec_s']:.3f})" if r.get("comfy_exec_s") else ""
        log(f"  {case:18s} {tag or variant:16s} {r['seconds']:8.3f} s{extra} {ok}")
        self.results.setdefault("runs", []).append(r)
        if not r.get("ok"):
            self.results["errors"].append(
                {"where": f"{case}/{tag or variant}", "error": str(r.get("error"))[:2000]}
            )
        return r

    # -- phases ---------------------------------------------------------------------------------

    def start_stack(self, key: str = "startup", drop: bool | None = None) -> None:
        """Start ComfyUI and the job API as the worker does (prefetch, warm-up included)."""
        from ryla_gen_modal.comfy_process import ComfyUIProcess, comfyui_command
        from ryla_gen_modal.config import compile_cache_env, extra_model_paths_yaml
        from ryla_gen_modal.tuning import COMFY_NODES_DIR

        a = self.args
        comfy_dir = Path(a.comfy_dir).resolve()
        models = Path(a.models_dir).resolve()
        loras = models / "loras"
        loras.mkdir(parents=True, exist_ok=True)
        work = Path(a.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        paths_file = work / "extra_model_paths.yaml"
        nodes_dir = str(COMFY_NODES_DIR) if (self.tuning.active or a.warmup) else None
        paths_file.write_text(extra_model_paths_yaml(str(models), str(loras), nodes_dir))
        frontend = work / "frontend"
        frontend.mkdir(parents=True, exist_ok=True)
        (frontend / "index.html").write_text("<html></html>")
        port, api_port = _free_port(), _free_port()
        self.comfy_url = f"http://127.0.0.1:{port}"
        self.api_url = f"http://127.0.0.1:{api_port}"
        extra = ["--front-end-root", str(frontend)]
        if self.smoke:
            extra += ["--cpu"]
        extra += a.comfy_arg or []
        cmd = comfyui_command(
            a.comfy_python, comfy_dir, port=port, extra_model_paths=paths_file, extra_args=extra
        )
        self.comfy = ComfyUIProcess(
            cmd,
            url=self.comfy_url,
            cwd=comfy_dir,
            log_path=self.out / "comfyui.log",
            startup_timeout=300,
            env={
                **self.tuning.comfyui_env(),
                **compile_cache_env(str(work / "compile-cache")),
                "TORCH_LOGS": "recompiles",  # why a compiled model recompiles, in comfyui.log
            },
        )
        token = self.token = secrets.token_urlsafe(24)
        env = {**os.environ, "RYLA_GEN_API_TOKEN": token, "PYTHONUNBUFFERED": "1"}
        env.update(self.tuning.env())
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
        )

        st = self.results.setdefault(key, {})
        st["tuning"] = self.tuning.env()
        if a.drop_caches if drop is None else drop:
            st["drop_caches"] = drop_page_cache()
            log(f"page cache drop: {st['drop_caches']}")
        log(f"starting ComfyUI: {' '.join(cmd)} (worker options {self.tuning})")
        t0 = time.monotonic()
        prefetched: dict[str, object] = {}
        prefetch_thread = None
        if a.prefetch and not self.smoke:
            from ryla_gen_modal.prefetch import prefetch_in_background, workflow_files

            files = workflow_files(a.warmup or ["flux-dev"], [models])
            prefetch_thread, prefetched = prefetch_in_background(files)
            st["prefetch"] = prefetched
        comfy_err: list[BaseException] = []

        def start_comfy() -> None:
            try:
                self.comfy.start()
                st["comfy_ready_s"] = round(time.monotonic() - t0, 2)
            except BaseException as e:
                comfy_err.append(e)

        th = threading.Thread(target=start_comfy)
        th.start()
        api_log = open(self.out / "api.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.api_proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ryla_gen_modal",
                "serve",
                "--comfyui-url",
                self.comfy_url,
                "--host",
                "127.0.0.1",
                "--port",
                str(api_port),
                "--models-dir",
                str(models),
                "--lora-dir",
                str(loras),
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            env=env,
            stdout=api_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        while time.monotonic() - t0 < 300:
            if self.api_proc.poll() is not None:
                raise RuntimeError(f"job API exited with {self.api_proc.returncode}; see api.log")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as r:
                    if r.status == 200:
                        st["api_ready_s"] = round(time.monotonic() - t0, 2)
                        break
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        th.join()
        if comfy_err:
            raise comfy_err[0]
        st["both_ready_s"] = round(time.monotonic() - t0, 2)
        log(
            f"ComfyUI ready after {st.get('comfy_ready_s')} s, job API after "
            f"{st.get('api_ready_s')} s"
        )
        self.t_processes = t0
        if a.warmup and not self.smoke:
            import asyncio

            from ryla_gen.providers.comfyui import ComfyUIProvider
            from ryla_gen_modal.warmup import freeze_heap, warm_up

            size = 1024 if self.tuning.compile else 256

            async def _warm() -> dict[str, Any]:
                provider = ComfyUIProvider(self.comfy_url, graph_transform=self.tuning.apply)
                try:
                    report = await warm_up(
                        provider, a.warmup, timeout=600, size=size, compiled=self.tuning.compile
                    )
                    st["gc_frozen_objects"] = await freeze_heap(provider)
                    return report
                finally:
                    await provider.aclose()

            log(f"warm-up {a.warmup} at {size}x{size} (as RYLA_GEN_WARMUP does)")
            st["warmup"] = asyncio.run(_warm())
            st["warmup_size"] = size
            st["ready_after_warmup_s"] = round(time.monotonic() - t0, 2)
            log(f"   warm-up {st['warmup']}; ready {st['ready_after_warmup_s']} s after start")
        if prefetch_thread is not None:
            prefetch_thread.join(timeout=1)
            st["prefetch"] = dict(prefetched) or {"done": False}

        from ryla_gen import Client

        common = {
            "provider": "modal",
            "modal_url": self.api_url,
            "modal_token": token,
            "timeout": 900.0,
        }
        self.clients["full"] = Client(**common)
        self.clients["full_fastpoll"] = Client(**common, poll_interval=FAST_POLL)
        stats = _http_json("GET", f"{self.comfy_url}/system_stats")
        self.results["meta"]["system_stats"] = stats
        self.startup_key = key
        self.save()

    def stop_stack(self) -> None:
        """Stop the job API and ComfyUI (page cache and compile caches stay)."""
        for c in self.clients.values():
            with contextlib.suppress(Exception):
                c.close()
        self.clients = {}
        if self.api_proc is not None and self.api_proc.poll() is None:
            with contextlib.suppress(Exception):
                os.killpg(self.api_proc.pid, 15)
                self.api_proc.wait(10)
        if self.comfy is not None:
            self.comfy.stop()

    def first_image(self) -> None:
        """Process start -> first Flux Dev image, through the full stack."""
        r = self.run_one("flux_dev_bf16", "full", tag="first_image")
        st = self.results[self.startup_key]
        st["first_image_s"] = r["seconds"]
        st["first_image_ok"] = r.get("ok")
        st["process_start_to_first_image_s"] = round(time.monotonic() - self.t_processes, 2)
        st["gpu_peak_mib"] = self.gpu.peak(self.t_processes, time.monotonic())
        if self.startup_key == "startup":
            self.results["cases"].setdefault("flux_dev_bf16", {})["first"] = {
                **r,
                "what": "cold: process start"
                + (", page cache dropped" if st.get("drop_caches") else "")
                + (", after the worker's warm-up" if st.get("warmup") else ""),
            }
        self.save()

    def warm_case(
        self,
        case: str,
        variants: list[str],
        n: int,
        first: bool,
        first_what: str = "",
        first_variant: str = "full",
        key: str | None = None,
    ) -> None:
        est_first = FIRST_EST[case] if first else 0.0
        per_round = WARM_EST[case] * len(variants) + (0.6 if "full" in variants else 0.0)
        if self.smoke:
            est_first, per_round = 1.0, 1.0
        min_rounds = min(3, n)
        need = est_first + per_round * min_rounds + 5
        if self.time_left() < need:
            self.skip(case, f"budget: {self.time_left():.0f} s left, need ~{need:.0f} s")
            return
        log(f"== {key or case}: first={first} variants={variants} n={n}")
        c = self.results["cases"].setdefault(key or case, {})
        c["title"] = CASE_TITLES.get(case, case) + (f" [{key}]" if key else "")
        t_case = time.monotonic()
        if first:
            r = self.run_one(case, first_variant, tag="first")
            c["first"] = {**r, "what": first_what}
            if not r.get("ok"):
                c["aborted"] = "first run failed"
                self.save()
                return
        else:
            self.run_one(case, "direct", tag="warmup")  # untimed warm-up
        t_warm = time.monotonic()
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        for i in range(n):
            if i >= min_rounds and self.time_left() < per_round + 10:
                self.results["skipped"].append(f"{case}: stopped after {i} rounds (budget)")
                break
            k = i % len(variants)
            for v in variants[k:] + variants[:k]:
                runs[v].append(self.run_one(case, v, tag=f"{v}#{i}"))
        t_end = time.monotonic()
        c["warm"] = {}
        for v, rs in runs.items():
            secs = [r["seconds"] for r in rs if r.get("ok")]
            entry = summarize(secs)
            entry["failed"] = sum(1 for r in rs if not r.get("ok"))
            execs = [r.get("comfy_exec_s") for r in rs if r.get("comfy_exec_s")]
            if execs:
                entry["comfy_exec_p50"] = _r(pct(execs, 50))
            c["warm"][v] = entry
        d = [r["seconds"] for r in runs.get("direct", []) if r.get("ok")]
        for v in variants:
            if v == "direct" or not d:
                continue
            f = [r["seconds"] for r in runs[v] if r.get("ok")]
            pairs = [
                b["seconds"] - a["seconds"]
                for a, b in zip(runs["direct"], runs[v], strict=False)
                if a.get("ok") and b.get("ok")
            ]
            if f:
                p50d, p50f = pct(d, 50), pct(f, 50)
                assert p50d is not None and p50f is not None
                c.setdefault("overhead", {})[v] = {
                    "p50_delta_s": _r(p50f - p50d),
                    "p50_delta_pct": _r(100 * (p50f - p50d) / p50d, 2),
                    "paired_median_delta_s": _r(pct(pairs, 50)),
                    "paired_median_delta_pct": _r(100 * (pct(pairs, 50) or 0) / p50d, 2),
                }
        c["gpu_peak_mib"] = self.gpu.peak(t_case, t_end)
        c["gpu_peak_warm_mib"] = self.gpu.peak(t_warm, t_end)
        c["seconds_spent"] = round(t_end - t_case, 1)
        price = self.results["meta"].get("price")
        full = c["warm"].get("full", {}).get("p50")
        direct = c["warm"].get("direct", {}).get("p50")
        if price:
            c["cost_usd_per_image"] = {
                "full": _r(full * price["usd_per_second"], 6) if full else None,
                "direct": _r(direct * price["usd_per_second"], 6) if direct else None,
            }
        with contextlib.suppress(Exception):
            dev = _http_json("GET", f"{self.comfy_url}/system_stats")["devices"][0]
            c["comfy_vram_free_mib_after"] = round(dev["vram_free"] / 2**20)
        self.save()

    def lora_switching(
        self, extended: bool = False, key: str = "lora_switching", warm_case: str = "flux_dev_bf16"
    ) -> None:
        """Direct path: what changing the LoRA between jobs costs (with this worker's options)."""
        case = "flux_dev_bf16"
        steps = [
            ("lora_a_first", [(LORA_A, 0.8)], "first LoRA of the process (A 0.8)"),
            ("lora_a_again", [(LORA_A, 0.8)], "same LoRA again (warm)"),
            ("lora_b_switch", [(LORA_B, 0.8)], "switch to another LoRA (B 0.8)"),
            ("lora_b_again", [(LORA_B, 0.8)], "same LoRA again (warm)"),
            ("lora_b_strength", [(LORA_B, 0.5)], "strength change (B 0.8 -> 0.5)"),
            ("no_lora", [], "LoRA removed (plain Flux Dev)"),
            ("no_lora_again", [], "plain Flux Dev again (warm)"),
        ]
        if extended:
            steps += [
                ("lora_ab", [(LORA_A, 0.8), (LORA_B, 0.8)], "two LoRAs (A+B 0.8) after none"),
                ("lora_ab_again", [(LORA_A, 0.8), (LORA_B, 0.8)], "same two again (warm)"),
                ("lora_a_only", [(LORA_A, 0.8)], "down to one LoRA (A 0.8)"),
                ("lora_b_only", [(LORA_B, 0.8)], "switch to another LoRA (B 0.8)"),
            ]
        need = (75.0 + 25.0 * extended) if not self.smoke else 5.0
        if self.time_left() < need:
            self.skip("lora_switching", f"budget: {self.time_left():.0f} s left")
            return
        log(f"== LoRA switching (direct path, worker options {self.tuning})")
        warm = self.results["cases"].get(warm_case, {}).get("warm", {}).get("direct", {}).get("p50")
        ls = self.results.setdefault(key, {})
        ls["warm_reference_s"] = warm
        ls["tuning"] = self.tuning.env()
        ls["steps"] = []
        t0 = time.monotonic()
        for tag, loras, what in steps:
            r = self.run_one(case, "direct", loras=loras, tag=tag)
            ls["steps"].append(
                {
                    "step": tag,
                    "what": what,
                    "seconds": r["seconds"],
                    "ok": r.get("ok"),
                    "comfy_exec_s": r.get("comfy_exec_s"),
                    "delta_vs_warm_s": _r(r["seconds"] - warm) if warm else None,
                }
            )
            self.save()
        ls["gpu_peak_mib"] = self.gpu.peak(t0, time.monotonic())
        self.save()

    def graph_checks(self) -> None:
        """Smoke only: the real GPU graphs pass ComfyUI's validation on both paths.

        The model files are placeholders here, so each job must fail at a loader node
        (an execution error), never at validation or the job API's model check.
        """
        from ryla_gen.errors import GraphValidationError, JobFailedError, ModelMissingError

        self.smoke = False
        try:
            cases = [
                "flux_dev_bf16",
                "flux_dev_2loras",
                "flux_dev_fp8_fast",
                "flux_schnell",
                "z_image_turbo",
                "flux_dev_compile",
            ]
            for case in cases:
                work, graph = self.work(case)
                r = direct_run(self.comfy_url, self.tuning.apply(graph), timeout=120)
                d_ok = (
                    "error" in r
                    and not str(r["error"]).startswith("HTTP")
                    and "Loader" in str(r.get("error"))
                )
                f_err: str
                try:
                    self.clients["full"].generate(work)
                    f_ok, f_err = False, "unexpectedly succeeded"
                except JobFailedError as e:
                    f_ok, f_err = True, f"JobFailedError at {getattr(e, 'node_type', '?')}"
                except (GraphValidationError, ModelMissingError) as e:
                    f_ok, f_err = False, f"{type(e).__name__}: {e}"
                self.results["graph_checks"].append(
                    {
                        "case": case,
                        "direct_ok": d_ok,
                        "direct": r.get("error"),
                        "full_ok": f_ok,
                        "full": f_err,
                    }
                )
                log(
                    f"  graph check {case:18s} direct {'ok' if d_ok else 'BAD'} ({r.get('error')})"
                    f" | full {'ok' if f_ok else 'BAD'} ({f_err})"
                )
        finally:
            self.smoke = True
        self.save()

    def restart_comfy(self) -> None:
        """Stop and start ComfyUI (same flags); the job API reconnects by itself."""
        log("== restarting ComfyUI (torch.compile caches on disk stay)")
        t0 = time.monotonic()
        self.comfy.stop()
        t1 = time.monotonic()
        self.comfy.start()
        self.results["startup"]["restart"] = {
            "stop_s": round(t1 - t0, 2),
            "start_to_ready_s": round(time.monotonic() - t1, 2),
        }
        log(f"   ComfyUI ready again after {time.monotonic() - t1:.1f} s")
        self.save()

    def run_levers(self) -> None:
        """Second plan: the levers stock ComfyUI already has (flags and nodes), measured."""
        a = self.args
        self.first_image()
        if not self.results["startup"].get("first_image_ok"):
            raise RuntimeError("the first Flux Dev image failed; see errors")
        self.warm_case("flux_dev_bf16", ["direct", "full_fastpoll", "api_longpoll"], a.runs, False)
        self.lora_switching(extended=True)
        self.warm_case(
            "flux_dev_compile",
            ["direct"],
            3,
            first=True,
            first_variant="direct",
            first_what="first compiled run in this process (compiles; cold inductor cache)",
        )
        if self.time_left() < 90:
            self.skip("compile after restart", f"budget: {self.time_left():.0f} s left")
            return
        self.restart_comfy()
        self.warm_case(
            "flux_dev_compile",
            ["direct"],
            2,
            first=True,
            first_variant="direct",
            first_what="new process, inductor/FX cache on disk warm (load + compile)",
            key="flux_dev_compile_restarted",
        )

    def run_tuned(self) -> None:
        """Third plan: ryla-gen's worker options, as a deployment would run them.

        Phase 1 (``--lora-mode``, no compile): process start with prefetch and warm-up ->
        first user image; warm Flux Dev; LoRA switching. Phase 2 (``--compile`` given):
        both processes restarted with compile on (page cache warm, compile cache cold
        unless already filled): warm-up at 1024x1024 compiles before "ready"; then the
        first user image, warm Flux Dev, LoRA switching on the compiled model, and fp8.
        """
        import dataclasses

        a = self.args
        self.first_image()
        if not self.results[self.startup_key].get("first_image_ok"):
            raise RuntimeError("the first Flux Dev image failed; see errors")
        self.warm_case("flux_dev_bf16", ["direct", "full"], a.runs, False)
        self.lora_switching(extended=True)
        if not a.compile:
            return
        if self.time_left() < 240:
            self.skip("compiled phase", f"budget: {self.time_left():.0f} s left")
            return
        log("== restarting both processes with compile on")
        self.stop_stack()
        self.tuning = dataclasses.replace(self.tuning, compile=True)
        self.start_stack(key="startup_compiled", drop=False)
        self.first_image()
        self.warm_case(
            "flux_dev_bf16", ["direct", "full"], a.runs, False, key="flux_dev_bf16_compiled"
        )
        self.lora_switching(
            extended=True, key="lora_switching_compiled", warm_case="flux_dev_bf16_compiled"
        )
        self.warm_case(
            "flux_dev_fp8_fast",
            ["direct", "full"],
            3,
            first=True,
            first_what="fp8 reload + its own compile (on a request: not warmed up)",
            key="flux_dev_fp8_compiled",
        )

    def skip(self, what: str, why: str) -> None:
        log(f"SKIP {what}: {why}")
        self.results["skipped"].append(f"{what}: {why}")
        self.save()

    # -- main -----------------------------------------------------------------------------------

    def meta(self) -> None:
        m = self.results["meta"]
        m["date_utc"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        m["command"] = " ".join([Path(sys.executable).name, *sys.argv])
        m["python"] = platform.python_version()
        m["host"] = platform.node()
        m["smoke"] = self.smoke
        m["mode"] = "levers" if self.args.levers else "tuned" if self.args.tuned else "stock"
        m["tuning"] = self.tuning.env()
        m["comfy_extra_args"] = self.args.comfy_arg or []
        m["gpu"] = self.gpu.info or None
        name = (self.gpu.info or {}).get("name", "")
        kind = "H200" if "H200" in name else "H100" if "H100" in name else None
        m["price"] = {"gpu": kind, **PRICES[kind]} if kind else None
        m["direct_poll_s"] = DIRECT_POLL
        m["fast_poll_s"] = FAST_POLL
        with contextlib.suppress(Exception):
            from ryla_gen import __version__

            m["ryla_gen"] = __version__
        with contextlib.suppress(Exception):
            m["git"] = (
                subprocess.run(
                    ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                    capture_output=True,
                    text=True,
                ).stdout.strip()
                or None
            )
        for extra in ("weights_summary", "setup_log"):
            p = getattr(self.args, extra, None)
            if p and Path(p).is_file():
                with contextlib.suppress(Exception):
                    m[extra] = json.loads(Path(p).read_text())

    def run(self) -> int:
        self.t_start = time.monotonic()
        self.meta()
        a = self.args
        cases = a.cases
        try:
            self.start_stack()
            if self.smoke:
                self.graph_checks()
            if a.levers:
                self.run_levers()
            elif a.tuned:
                self.run_tuned()
            else:
                self.first_image()
                if not self.results["startup"].get("first_image_ok"):
                    raise RuntimeError("the first Flux Dev image failed; see errors")
                v3 = ["direct", "full", "full_fastpoll"]
                v2 = ["direct", "full"]
                if "flux_dev_bf16" in cases:
                    self.warm_case("flux_dev_bf16", v3, a.runs, first=False)
                if "lora_switching" in cases:
                    self.lora_switching()
                if "flux_dev_2loras" in cases:
                    self.warm_case(
                        "flux_dev_2loras",
                        v2,
                        a.runs,
                        first=True,
                        first_what="2 LoRAs applied (after the switching sequence)",
                    )
                if "flux_schnell" in cases:
                    self.warm_case(
                        "flux_schnell",
                        v2,
                        a.runs,
                        first=True,
                        first_what="model switch (flux1-schnell file, page cache warm)",
                    )
                if "flux_dev_fp8_fast" in cases:
                    self.warm_case(
                        "flux_dev_fp8_fast",
                        v2,
                        a.runs,
                        first=True,
                        first_what="reload as fp8 (page cache warm)",
                    )
                if "z_image_turbo" in cases:
                    self.warm_case(
                        "z_image_turbo",
                        v2,
                        a.runs,
                        first=True,
                        first_what="first Z-Image job: its 19 GiB still cold on disk",
                    )
        except Exception as e:
            self.error("harness", e)
        finally:
            self.results["meta"]["gpu_peak_mib_overall"] = (
                round(max(m for _, m in self.gpu.samples)) if self.gpu.samples else None
            )
            self.save()
            self.shutdown()
            self.save()
        print(render(self.results), flush=True)
        return 0 if not self.results["errors"] else 1

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_stack()
        self.gpu.stop()


# -- markdown ---------------------------------------------------------------------------------


def _f(x: Any, nd: int = 2, unit: str = "") -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}{unit}"
    return f"{x}{unit}"


def _render_startup(key: str, st: dict[str, Any]) -> list[str]:
    tuning = st.get("tuning") or {}
    opts = ", ".join(f"{k}={v}" for k, v in tuning.items() if v and v != "merge") or "stock"
    pre = st.get("prefetch") or {}
    warm = st.get("warmup") or {}
    lines = [
        "",
        f"| start-up ({key}; worker options: {opts}) | seconds |",
        "| --- | --- |",
        f"| page cache dropped before start | {(st.get('drop_caches') or {}).get('ok', '–')} |",
        f"| ComfyUI process start → /system_stats answers | {_f(st.get('comfy_ready_s'))} |",
        f"| job API process start → /health answers (started alongside) | "
        f"{_f(st.get('api_ready_s'))} |",
    ]
    if pre:
        lines.append(
            f"| prefetch of the warm-up models, in parallel with the start "
            f"({_f((pre.get('bytes') or 0) / 1e9, 1)} GB, {_f(pre.get('gb_per_s'))} GB/s) | "
            f"{_f(pre.get('seconds'))} |"
        )
    for name, w in warm.items():
        lines.append(
            f"| warm-up {name} at {st.get('warmup_size')}² ({w.get('status')}) | "
            f"{_f(w.get('seconds'))} |"
        )
    if warm:
        lines.append(
            f"| process start → ready (warm-up done) | {_f(st.get('ready_after_warmup_s'))} |"
        )
    lines += [
        f"| first Flux Dev image through the full stack (after ready) | "
        f"{_f(st.get('first_image_s'))} |",
        f"| **process start → first Flux Dev image** | "
        f"**{_f(st.get('process_start_to_first_image_s'))}**"
        + ("" if st.get("first_image_ok", True) else " (FAILED)")
        + " |",
    ]
    return lines


def _render_lora(key: str, ls: dict[str, Any]) -> list[str]:
    if not ls.get("steps"):
        return []
    tuning = ls.get("tuning") or {}
    opts = ", ".join(f"{k}={v}" for k, v in tuning.items() if v and v != "merge") or "stock"
    lines = [
        "",
        f"LoRA switching [{key}] (direct path, Flux Dev bf16 20 steps, worker options: {opts};"
        f" warm reference = direct p50 {_f(ls.get('warm_reference_s'))} s):",
        "",
        "| step | seconds | ComfyUI exec (s) | vs warm (s) |",
        "| --- | --- | --- | --- |",
    ]
    for s in ls["steps"]:
        lines.append(
            f"| {s['what']} | {_f(s['seconds'])} | {_f(s.get('comfy_exec_s'))} | "
            f"{_f(s.get('delta_vs_warm_s'), 2)} |"
        )
    return lines


def render(res: dict[str, Any]) -> str:
    m = res.get("meta", {})
    gpu = (m.get("gpu") or {}).get("name", "no GPU")
    stats = (m.get("system_stats") or {}).get("system", {})
    pyver = str(stats.get("python_version", "?")).split()[0]
    lines = [
        f"Measured {m.get('date_utc')} on **{gpu}** "
        f"({_f((m.get('gpu') or {}).get('memory_total_mib'))} MiB, driver "
        f"{(m.get('gpu') or {}).get('driver', '?')}), ComfyUI {stats.get('comfyui_version', '?')}, "
        f"PyTorch {stats.get('pytorch_version', '?')}, Python {pyver}"
        + (" — **SMOKE RUN (CPU, tiny graphs): numbers mean nothing**" if m.get("smoke") else ""),
        "",
    ]
    for key in [k for k in res if k.startswith("startup")]:
        lines += _render_startup(key, res[key])
    lines += [
        "",
        "| case | first run (s) | direct p50 / p90 (s) | full p50 / p90 (s) | overhead p50 "
        "(paired) | other client paths: p50 (overhead) | ComfyUI exec p50 (s) | peak GPU MiB | "
        "$ / image (full p50) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case, c in res.get("cases", {}).items():
        w = c.get("warm", {})
        d, f = w.get("direct", {}), w.get("full", {})
        ov = c.get("overhead", {})
        o1 = ov.get("full", {})
        others = [
            f"{v}: {_f(e.get('p50'))} ({_f(ov.get(v, {}).get('p50_delta_pct'), 1)} %)"
            for v, e in w.items()
            if v not in ("direct", "full")
        ]
        first = c.get("first", {})
        cost = (c.get("cost_usd_per_image") or {}).get("full")
        lines.append(
            f"| {c.get('title', case)} | {_f(first.get('seconds'))} | "
            f"{_f(d.get('p50'))} / {_f(d.get('p90'))} (n={d.get('n', 0)}) | "
            + (
                f"{_f(f.get('p50'))} / {_f(f.get('p90'))} (n={f.get('n', 0)}) | "
                f"{_f(o1.get('p50_delta_s'), 3)} s = {_f(o1.get('p50_delta_pct'), 1)} % "
                f"({_f(o1.get('paired_median_delta_s'), 3)} s) | "
                if f
                else "– | – | "
            )
            + ("; ".join(others) or "–")
            + f" | {_f(d.get('comfy_exec_p50'))} | {_f(c.get('gpu_peak_mib'))} | "
            f"{'$' + format(cost, '.5f') if cost else '–'} |"
        )
    for key in [k for k in res if k.startswith("lora_switching")]:
        lines += _render_lora(key, res[key])
    if res.get("graph_checks"):
        lines += ["", "| graph check (placeholders) | direct | full |", "| --- | --- | --- |"]
        for g in res["graph_checks"]:
            lines.append(
                f"| {g['case']} | {'ok' if g['direct_ok'] else 'BAD'} | "
                f"{'ok' if g['full_ok'] else 'BAD'} |"
            )
    if res.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(res["skipped"])]
    if res.get("errors"):
        lines += [
            "",
            f"Errors ({len(res['errors'])}): "
            + "; ".join(f"{e['where']}: {e['error'][:160]}" for e in res["errors"][:6]),
        ]
    price = m.get("price")
    if price:
        lines += [
            "",
            f"Price: {price['gpu']} ${price['usd_per_hour']}/h "
            f"(${price['usd_per_second']:.6f}/s), {price['source']}.",
        ]
    lines += ["", f"Command: `{m.get('command')}`"]
    return "\n".join(lines) + "\n"


# -- command line -----------------------------------------------------------------------------

ALL_CASES = [
    "flux_dev_bf16",
    "lora_switching",
    "flux_dev_2loras",
    "flux_schnell",
    "flux_dev_fp8_fast",
    "z_image_turbo",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=False, help="results folder")
    ap.add_argument("--comfy-dir", help="ComfyUI folder (main.py)")
    ap.add_argument("--comfy-python", default=sys.executable, help="python that runs ComfyUI")
    ap.add_argument("--comfy-arg", action="append", help="extra ComfyUI argument (repeatable)")
    ap.add_argument("--models-dir", help="models folder (diffusion_models/, text_encoders/, ...)")
    ap.add_argument("--work-dir", help="scratch folder (default: OUT/work)")
    ap.add_argument("--runs", type=int, default=5, help="warm runs per variant")
    ap.add_argument("--cases", nargs="*", default=ALL_CASES, choices=ALL_CASES)
    ap.add_argument("--drop-caches", action="store_true", help="drop the page cache first")
    ap.add_argument("--deadline", type=float, help="Unix time by which to be done")
    ap.add_argument("--weights-summary", help="make_weights.py --summary JSON to include")
    ap.add_argument(
        "--levers",
        action="store_true",
        help="second plan: long-poll API, LoRA switching, torch.compile (+ cache after restart)",
    )
    ap.add_argument(
        "--tuned",
        action="store_true",
        help="third plan: ryla-gen's worker options (prefetch, warm-up, LoRA mode, compile)",
    )
    ap.add_argument("--lora-mode", default="merge", choices=["merge", "unmerged"])
    ap.add_argument("--compile", action="store_true", help="RYLA_GEN_COMPILE=1 (tuned plan)")
    ap.add_argument("--prefetch", action="store_true", help="prefetch model files at start")
    ap.add_argument("--warmup", nargs="*", default=[], help="workflows to warm up at start")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="CPU dry run against the test suite's ComfyUI with tiny graphs",
    )
    ap.add_argument("--render", help="print the markdown tables of a results.json and exit")
    a = ap.parse_args(argv)
    if a.render:
        print(render(json.loads(Path(a.render).read_text())))
        return 0
    if not a.out:
        ap.error("--out is required")
    if a.smoke:
        from ryla_gen.testing import install_comfyui

        inst = install_comfyui()
        a.comfy_dir = a.comfy_dir or str(inst.comfy_dir)
        a.comfy_python = str(inst.python)
        if not a.models_dir:
            a.models_dir = str(Path(a.out) / "models")
        placeholder = b"ryla-gen benchmark placeholder\n"
        for rel in (
            "diffusion_models/flux1-dev.safetensors",
            "diffusion_models/flux1-schnell.safetensors",
            "diffusion_models/z_image_turbo_bf16.safetensors",
            "text_encoders/t5xxl_fp16.safetensors",
            "text_encoders/clip_l.safetensors",
            "text_encoders/qwen_3_4b.safetensors",
            "vae/ae.safetensors",
            f"loras/{LORA_A}",
            f"loras/{LORA_B}",
        ):
            p = Path(a.models_dir) / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(placeholder)
        a.runs = min(a.runs, 3)
    if not a.comfy_dir or not a.models_dir:
        ap.error("--comfy-dir and --models-dir are required (or --smoke)")
    a.work_dir = a.work_dir or str(Path(a.out) / "work")
    if a.compile and a.lora_mode != "unmerged":
        ap.error("--compile needs --lora-mode unmerged (as RYLA_GEN_COMPILE does)")
    return Bench(a).run()


if __name__ == "__main__":
    raise SystemExit(main())
