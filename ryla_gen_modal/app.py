# ---
# deploy: true
# cmd: ["modal", "deploy", "-m", "ryla_gen_modal.app"]
# ---

# # ryla-gen on Modal: typed ComfyUI workflows behind a job API

# This file deploys ryla-gen's GPU backend on [Modal](https://modal.com): a ComfyUI
# 0.3.75 server with the InstantID custom node on an H100, the models on a Volume, and a
# small authenticated job API in front (the one `ryla_gen.Client` talks to when
# `RYLA_GEN_PROVIDER=modal`).

# ## Quickstart

# ```bash
# pip install "ryla-gen[modal]" && modal setup
#
# # 1. The token clients must send (Authorization: Bearer ...):
# TOKEN=$(python -c "import secrets; print(secrets.token_urlsafe(32))")
# modal secret create ryla-gen-api RYLA_GEN_API_TOKEN=$TOKEN
# # 2. A Hugging Face token, for FLUX.1-dev (gated: accept its licence on the hub first):
# modal secret create huggingface-secret HF_TOKEN=hf_...
# # 3. Download the weights into the models Volume (resumable; a second run fetches 0 bytes):
# modal run -m ryla_gen_modal.app::download_models --workflows flux-dev,z-image-turbo,instantid
# # 4. Deploy, then smoke-test (runs a tiny graph on a GPU, then through the web API):
# modal deploy -m ryla_gen_modal.app
# modal run -m ryla_gen_modal.app
# ```

# Then point the SDK at it: `RYLA_GEN_PROVIDER=modal`, `RYLA_GEN_MODAL_URL=<the web URL>`,
# `RYLA_GEN_MODAL_TOKEN=<the token>`. GPU type, timeouts and scaling are read from
# `RYLA_GEN_*` variables at deploy time (see `ryla_gen_modal/config.py`), e.g.
# `RYLA_GEN_GPU=L40S RYLA_GEN_MAX_CONTAINERS=2 modal deploy -m ryla_gen_modal.app`.

# ## How it fits together

# ```
#  client ──HTTPS──▶ web (CPU, FastAPI) ──spawn──▶ Worker (GPU) ──HTTP──▶ ComfyUI (127.0.0.1)
#                      │  validates graphs,           │  runs the job through
#                      │  images, models; tracks      │  ryla_gen's ComfyUI driver
#                      └── jobs Dict ◀── progress ────┘
# ```

# Long jobs never hold a web request open: the web front `spawn`s the GPU worker and
# answers `202` with a job id; `GET /jobs/{id}` polls the function call. Modal cuts web
# requests at 150 s, so `POST /generate` waits at most 140 s before answering `202`.

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import modal

from ryla_gen_modal.config import (
    COMFY_CLI_VERSION,
    COMFYUI_DIR,
    COMFYUI_PORT,
    COMFYUI_VERSION,
    COMPILE_CACHE_DIR,
    EXTRA_MODEL_PATHS_FILE,
    INSIGHTFACE_VERSION,
    INSTANTID_COMMIT,
    INSTANTID_REPO,
    LORAS_DIR,
    MINUTES,
    MODELS_DIR,
    ONNXRUNTIME_GPU_VERSION,
    OPENCV_VERSION,
    PYTHON_VERSION,
    RUNTIME_PACKAGES,
    SOURCE_PACKAGES,
    WEB_PACKAGES,
    DeployConfig,
    antelopev2_commands,
    compile_cache_env,
    extra_model_paths_yaml,
    source_ignore,
)

log = logging.getLogger("ryla_gen_modal.app")

config = DeployConfig.from_env()

# ## Building the GPU image

# We grow the image in stages, each pinned, so a rebuild gives the same bytes and a
# change to a late stage reuses the cached earlier ones.

# First ComfyUI itself, installed by [comfy-cli](https://github.com/Comfy-Org/comfy-cli)
# together with a CUDA build of torch. `build-essential` is there because insightface
# compiles a small C++ extension; the GL/GLib libraries are what OpenCV loads.

comfy_image = (
    modal.Image.debian_slim(python_version=PYTHON_VERSION)
    .apt_install("git", "curl", "build-essential", "libgl1", "libglib2.0-0")
    .uv_pip_install(f"comfy-cli=={COMFY_CLI_VERSION}")
    .run_commands(f"comfy --skip-prompt install --fast-deps --nvidia --version {COMFYUI_VERSION}")
)

# Then the [InstantID custom node](https://github.com/cubiq/ComfyUI_InstantID), pinned by
# commit (it has no release tags), and the face-analysis stack it imports. Only
# `onnxruntime-gpu` is installed: the CPU `onnxruntime` wheel would shadow it.

comfy_image = comfy_image.run_commands(
    f"git clone {INSTANTID_REPO} {COMFYUI_DIR}/custom_nodes/ComfyUI_InstantID",
    f"git -C {COMFYUI_DIR}/custom_nodes/ComfyUI_InstantID checkout --detach {INSTANTID_COMMIT}",
).pip_install(
    f"insightface=={INSIGHTFACE_VERSION}",
    f"onnxruntime-gpu=={ONNXRUNTIME_GPU_VERSION}",
    f"opencv-python-headless=={OPENCV_VERSION}",
)

# InstantID loads insightface's antelopev2 face models from a path it hard-codes,
# `ComfyUI/models/insightface/models/antelopev2`, which `extra_model_paths.yaml` cannot
# redirect. So these ~430 MB are baked into the image rather than put on the Volume,
# each file checked against the SHA-256 in ryla-gen's model manifest.

comfy_image = comfy_image.run_commands(*antelopev2_commands())

# Last, ryla-gen itself: its few pinned dependencies, then its source. The source is
# added at container start (not baked), so editing it does not rebuild anything above.
# Every ComfyUI call goes through `ryla_gen.providers.comfyui.ComfyUIProvider`, the same
# driver the SDK uses against any ComfyUI: there is no second client here.

gpu_image = (
    comfy_image.uv_pip_install(*RUNTIME_PACKAGES)
    .env(config.worker_env())  # RYLA_GEN_VRAM / RYLA_GEN_COMFYUI_ARGS, read at container start
    .add_local_python_source(*SOURCE_PACKAGES, ignore=source_ignore)
)

# The web front and the downloader need no GPU and no ComfyUI: a slim image does.

web_image = (
    modal.Image.debian_slim(python_version=PYTHON_VERSION)
    .uv_pip_install(*RUNTIME_PACKAGES, *WEB_PACKAGES)
    .add_local_python_source(*SOURCE_PACKAGES, ignore=source_ignore)
)

# ## Volumes, the job registry and secrets

# Model weights live on a Volume laid out like `ComfyUI/models`
# (`diffusion_models/`, `text_encoders/`, `vae/`, `checkpoints/`, `controlnet/`,
# `instantid/`, ...); uploaded LoRAs on a second one, so the API can write LoRAs without
# touching the weights. ComfyUI finds both through the `extra_model_paths.yaml` the worker
# writes at start (see `extra_model_paths_yaml` in `config.py`).

models_volume = modal.Volume.from_name(config.models_volume, create_if_missing=True)
loras_volume = modal.Volume.from_name(config.loras_volume, create_if_missing=True)

# torch.compile's caches (only used with `RYLA_GEN_COMPILE=1`) get a Volume of their own,
# committed after each container's warm-up, so later containers compile from a warm cache.

compile_cache_volume = modal.Volume.from_name(config.compile_cache_volume, create_if_missing=True)

# A Dict maps each job id to its function call, and holds the worker's live progress,
# so any web container can answer for any job.

jobs_dict = modal.Dict.from_name(config.jobs_dict, create_if_missing=True)

# The API token is a Secret (never in code or image). The Hugging Face token is needed
# only for gated repositories; deploy with `RYLA_GEN_HF_SECRET=""` to go without one.

api_secret = modal.Secret.from_name(config.api_secret, required_keys=["RYLA_GEN_API_TOKEN"])
hf_secrets = (
    [modal.Secret.from_name(config.hf_secret, required_keys=["HF_TOKEN"])]
    if config.hf_secret
    else []
)

app = modal.App(
    name=config.app_name,  # RYLA_GEN_APP_NAME, "ryla-gen" by default
    include_source=False,  # the images add ryla_gen and ryla_gen_modal themselves, schemas included
)

# ## Downloading the models

# `download_models` fetches the manifest's files (all of them, or those of the named
# workflows) straight into the models Volume: several at once, each into a `.part` file
# that is renamed only once its size and SHA-256 match, resuming with HTTP `Range` where
# a previous run stopped. Files already present and verified are skipped, so a second
# run downloads 0 bytes. It returns the report, e.g. `{"bytes_downloaded": ...}`.


@app.function(
    image=web_image,  # httpx + the manifest are all it needs
    volumes={MODELS_DIR: models_volume},  # writes the weights here
    secrets=hf_secrets,  # HF_TOKEN, for gated repositories (FLUX.1-dev)
    timeout=3 * 60 * MINUTES,  # ~90 GB for every workflow; a cut run resumes next time
    cpu=4.0,  # four parallel streams plus SHA-256 hashing
    memory=2048,  # MiB; downloads stream to disk, memory stays small
)
def download_models(workflows: str = "") -> dict[str, Any]:
    """Download the model files of ``workflows`` (comma-separated; all when empty)."""
    from ryla_gen.models import all_model_files, for_workflow
    from ryla_gen_modal import downloads

    names = [w.strip() for w in workflows.split(",") if w.strip()]
    files = [f for w in names for f in for_workflow(w)] if names else all_model_files()
    # The antelopev2 face models (in_graph=False) are baked into the image instead.
    files = [f for f in files if f.in_graph]
    try:
        report = downloads.download_models(files, MODELS_DIR)
    finally:
        models_volume.commit()  # keep finished files (and .part files to resume) even on error
    print(f"downloaded {report.bytes_downloaded} bytes: {report.as_dict()}")
    return report.as_dict()


async def _reload(*volumes: Any) -> None:
    """See the latest committed state of ``volumes`` (best effort: failures are logged)."""
    for volume in volumes:
        try:
            await volume.reload.aio()
        except Exception as exc:  # e.g. files held open; the next reload catches up
            log.warning("reloading a volume failed: %s", exc)


# ## The GPU worker

# One class runs ComfyUI. `@modal.enter` starts the server once per container, and every
# job first checks that it still answers: if ComfyUI died (an out-of-memory kill, a
# crashing node) it is restarted, and if that fails the container stops taking inputs so
# Modal replaces it.

# **Why no memory snapshot?** Snapshots cut ComfyUI's own start from ~10-15 s to ~3 s,
# but CUDA is absent while snapshotting, so ComfyUI must be patched to start on the CPU
# and re-pointed at the GPU after restore (its `model_management` picks the device and
# VRAM mode once, at import); InstantID's onnxruntime-gpu would need the same care, and
# loading the 12-24 GB checkpoints, which dominates a cold start, is not snapshotted at
# all. We start ComfyUI on the GPU directly instead, and lean on warm containers:
# ComfyUI keeps the last models in VRAM between jobs, `scaledown_window` keeps a container
# around after its last job, and `RYLA_GEN_MIN_CONTAINERS` can keep one always warm.


@app.cls(
    image=gpu_image,  # ComfyUI + InstantID + antelopev2 + ryla-gen
    gpu=config.gpu,  # RYLA_GEN_GPU, "H100" by default: Flux Dev bf16 needs ~33 GB of VRAM
    volumes={
        MODELS_DIR: models_volume,  # read by ComfyUI
        LORAS_DIR: loras_volume,
        COMPILE_CACHE_DIR: compile_cache_volume,  # torch.compile caches (RYLA_GEN_COMPILE)
    },
    timeout=config.job_timeout + 2 * MINUTES,  # the job's own deadline fires first
    startup_timeout=config.startup_timeout,  # ComfyUI start plus custom node imports
    max_containers=config.max_containers,  # caps GPU spend under bursts
    min_containers=config.min_containers,  # 0: scale to zero when idle
    scaledown_window=config.scaledown_window,  # keep a warm container (models in VRAM) this long
    retries=0,  # never run a job twice behind the client's back; failures are reported
)
@modal.concurrent(max_inputs=config.gpu_concurrency)  # ComfyUI queues them; uploads overlap
class Worker:
    """A GPU container running one ComfyUI, fed jobs by the web front."""

    @modal.enter()
    def start_comfyui(self) -> None:
        """Write extra_model_paths.yaml, start ComfyUI on the GPU, warm it up (once)."""
        from ryla_gen_modal.comfy_process import ComfyUIProcess, comfyui_command
        from ryla_gen_modal.prefetch import prefetch_in_background, workflow_files
        from ryla_gen_modal.tuning import COMFY_NODES_DIR

        tuning = config.tuning  # RYLA_GEN_LORA_MODE / RYLA_GEN_COMPILE; stock by default
        # ryla-gen's own nodes are always loaded: unused unless an option rewrites graphs,
        # and their /ryla/gc_freeze route is what the warm-up ends with.
        Path(EXTRA_MODEL_PATHS_FILE).write_text(
            extra_model_paths_yaml(MODELS_DIR, LORAS_DIR, custom_nodes_dir=str(COMFY_NODES_DIR))
        )
        if config.warmup and config.prefetch:  # read the warm-up models while ComfyUI starts
            prefetch_in_background(workflow_files(config.warmup, [Path(MODELS_DIR)]))
        self.comfyui = ComfyUIProcess(
            comfyui_command(
                sys.executable,
                COMFYUI_DIR,
                port=COMFYUI_PORT,
                extra_model_paths=EXTRA_MODEL_PATHS_FILE,
                extra_args=config.comfyui_flags,  # worker speed options; none by default
            ),
            url=f"http://127.0.0.1:{COMFYUI_PORT}",
            cwd=COMFYUI_DIR,
            startup_timeout=config.startup_timeout,
            env={**tuning.comfyui_env(), **compile_cache_env(COMPILE_CACHE_DIR)},
        )
        self.comfyui.start()
        if config.warmup:  # load the listed workflows' models now, not on a user's job
            asyncio.run(self._warm_up())
            if tuning.compile:
                try:  # share what this container compiled with the next ones
                    compile_cache_volume.commit()
                except Exception as exc:
                    log.warning("committing the compile cache failed: %s", exc)
        self.provider: Any = None
        self.volumes_reloaded_at = 0.0

    def _new_provider(self) -> Any:
        from ryla_gen.providers.comfyui import ComfyUIProvider

        tuning = config.tuning
        return ComfyUIProvider(
            self.comfyui.url, graph_transform=tuning.apply if tuning.active else None
        )

    async def _warm_up(self) -> None:
        from ryla_gen_modal.warmup import freeze_heap, warm_up

        provider = self._new_provider()
        try:
            await warm_up(
                provider,
                config.warmup,
                timeout=config.startup_timeout,
                size=config.warmup_size,
                compiled=config.tuning.compile,
            )
            await freeze_heap(provider)  # later gc.collect() calls skip the warmed-up heap
        finally:
            await provider.aclose()

    @modal.method()
    async def run_job(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Run one job (sent by the web front's ModalExecutor); return its JobView result."""
        from ryla_gen_modal.jobs import HEALTH_KEY, progress_key, worker_run

        try:
            await asyncio.to_thread(self.comfyui.ensure_healthy)
        except Exception:
            # Let Modal replace this container; the job fails with the reason.
            import modal.experimental

            await asyncio.to_thread(modal.experimental.stop_fetching_inputs)
            raise
        try:  # tells the web front's /health that a GPU worker is up (best effort)
            await jobs_dict.put.aio(
                HEALTH_KEY, {"version": self.comfyui.version, "at": time.time()}
            )
        except Exception as exc:
            log.warning("recording worker health failed: %s", exc)
        await self._refresh_volumes(payload.get("graph") or {})
        if self.provider is None:  # created on the container's event loop
            self.provider = self._new_provider()
        key = progress_key(str(payload["job_id"]))

        async def publish(state: dict[str, Any]) -> None:
            await jobs_dict.put.aio(key, state)

        return await worker_run(self.provider, payload, publish=publish)

    async def _refresh_volumes(self, graph: dict[str, Any]) -> None:
        """Reload the Volumes when the graph names a file this container cannot see yet."""
        from ryla_gen_modal.modelcheck import graph_model_files, missing_files

        dirs = [Path(MODELS_DIR), Path(COMFYUI_DIR) / "models"]
        files = graph_model_files(graph)
        if not missing_files(files, models_dirs=dirs, lora_dirs=[Path(LORAS_DIR)]):
            return
        if time.monotonic() - self.volumes_reloaded_at < 5:
            return
        self.volumes_reloaded_at = time.monotonic()
        # ComfyUI's own validation reports whatever is still missing afterwards.
        await _reload(loras_volume, models_volume)

    @modal.exit()
    def stop_comfyui(self) -> None:
        """Stop ComfyUI when the container shuts down."""
        self.comfyui.stop()


# ## The web front

# A cheap CPU container serves the job API (`ryla_gen_modal.server.create_app`) with a
# `ModalExecutor`: it validates each request (graph against the node schemas, images with
# Pillow, model files against the Volume) *before* spawning a GPU, then tracks the call
# in the Dict. The bearer token comes from the `ryla-gen-api` Secret.


class _VolumeRefresher:
    """Reloads the Volumes in the web container at most every ``interval`` seconds."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.last = 0.0

    async def __call__(self) -> None:
        if time.monotonic() - self.last < self.interval:
            return
        self.last = time.monotonic()
        await _reload(models_volume, loras_volume)


async def _commit_loras() -> None:
    """Make an uploaded or deleted LoRA visible to the GPU workers."""
    volume: Any = loras_volume
    await volume.commit.aio()


@app.function(
    image=web_image,  # slim: FastAPI and ryla-gen, no torch
    volumes={MODELS_DIR: models_volume, LORAS_DIR: loras_volume},  # model checks, LoRA uploads
    secrets=[api_secret],  # RYLA_GEN_API_TOKEN
    cpu=1.0,  # it only validates and spawns; the GPU work happens in Worker
    memory=1024,  # MiB; base64 images of a few requests at once
    timeout=10 * MINUTES,  # a large LoRA upload may take a while
    scaledown_window=5 * MINUTES,  # stay up between a client's polls
)
@modal.concurrent(max_inputs=100)  # async FastAPI: one container serves many requests
@modal.asgi_app()
def web() -> Any:
    """The job API (see ryla_gen_modal.server)."""
    from ryla_gen_modal.jobs import ModalBackend, ModalExecutor
    from ryla_gen_modal.server import create_app

    executor = ModalExecutor(
        ModalBackend(Worker().run_job, jobs_dict), job_timeout=config.job_timeout
    )
    return create_app(
        executor,
        token=os.environ["RYLA_GEN_API_TOKEN"],
        lora_dir=LORAS_DIR,
        models_dir=MODELS_DIR,
        refresh_volumes=_VolumeRefresher(),
        on_loras_changed=_commit_loras,
    )


# ## Smoke test

# `modal run -m ryla_gen_modal.app` runs a tiny model-free graph (an empty image, saved)
# on a GPU worker and checks that a PNG comes back; with `RYLA_GEN_API_TOKEN` set locally
# it then does the same through the web API. It needs no model downloads.


@app.local_entrypoint()
def smoke_test() -> None:
    """Run a tiny graph on the worker (and through the web API when a token is set)."""
    import base64
    import random

    import httpx

    from ryla_gen.testing import tiny_graph

    graph = tiny_graph(color=random.randrange(0x1000000), prefix="ryla_smoke")
    payload = {
        "job_id": str(uuid.uuid4()),
        "graph": graph,
        "images": {},
        "created_at": time.time(),
        "timeout": 300,
    }
    result = Worker().run_job.remote(payload)
    if result["status"] != "completed":
        raise SystemExit(f"worker smoke test failed: {result.get('error')}")
    png = base64.b64decode(result["images"][0]["data"])
    assert png.startswith(b"\x89PNG"), "the worker did not return a PNG"
    print(f"worker: {len(png)}-byte PNG, timings {result['timings']}")

    token = os.environ.get("RYLA_GEN_API_TOKEN")
    if not token:
        print("set RYLA_GEN_API_TOKEN to also test the web API")
        return
    url = web.get_web_url()
    if not url:
        raise SystemExit("the web endpoint has no URL (is the app running?)")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=180) as http:
        print("health:", http.get("/health").json())
        graph = tiny_graph(color=random.randrange(0x1000000), prefix="ryla_smoke")
        r = http.post("/generate", json={"graph": graph, "wait": 120})
        view = r.json()
        if view.get("status") != "completed":
            raise SystemExit(f"web smoke test failed: HTTP {r.status_code} {view}")
        print(f"web: job {view['id']} completed, timings {view['timings']}")


# ## More

# - `docs/deploy.md`: every knob, the Volumes' layout, LoRA uploads, costs.
# - `python -m ryla_gen_modal serve --comfyui-url ...` serves the same API over any ComfyUI.
