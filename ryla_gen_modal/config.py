"""Everything the Modal deployment is built from: pinned versions, paths, deploy knobs.

``app.py`` reads these constants and :class:`DeployConfig` so that every decorator
argument has one documented source, and so tests can check them without a Modal
account. Knobs are read from the environment of ``modal deploy`` (not of the running
containers): change one, deploy again.

=============================  ======================  ===================================
variable                       default                 what
=============================  ======================  ===================================
``RYLA_GEN_APP_NAME``          ``ryla-gen``            Modal app name (prefix of volumes)
``RYLA_GEN_GPU``               ``H100``                GPU type (``A100-80GB``, ``L40S``)
``RYLA_GEN_JOB_TIMEOUT``       ``1800``                seconds one job may run
``RYLA_GEN_STARTUP_TIMEOUT``   ``600``                 seconds to start ComfyUI
``RYLA_GEN_MAX_CONTAINERS``    ``4``                   most GPU containers at once
``RYLA_GEN_MIN_CONTAINERS``    ``0``                   GPU containers kept warm (billed)
``RYLA_GEN_SCALEDOWN_WINDOW``  ``300``                 seconds an idle container stays
``RYLA_GEN_GPU_CONCURRENCY``   ``2``                   jobs one GPU container accepts
``RYLA_GEN_API_SECRET``        ``ryla-gen-api``        secret with ``RYLA_GEN_API_TOKEN``
``RYLA_GEN_HF_SECRET``         ``huggingface-secret``  secret with ``HF_TOKEN`` ("" = none)
``RYLA_GEN_VRAM``              ``normal``              ``high``: keep models and LoRA
                                                       backups in GPU memory (see below)
``RYLA_GEN_COMFYUI_ARGS``      ``""``                  extra ComfyUI flags (shell words)
``RYLA_GEN_WARMUP``            ``""``                  workflows whose models load at
                                                       container start, e.g. ``flux-dev``
``RYLA_GEN_PREFETCH``          ``""``                  ``1``: read the warm-up models in
                                                       parallel while ComfyUI starts
``RYLA_GEN_LORA_MODE``         ``merge``               ``unmerged``: LoRAs applied at run
                                                       time (``ryla_gen_modal.tuning``)
``RYLA_GEN_LORA_RANK``         ``64``                  LoRA slot rank per layer
``RYLA_GEN_COMPILE``           ``""``                  ``1``: torch.compile Flux (warm-up
                                                       at 1024x1024 compiles at start)
=============================  ======================  ===================================

Worker speed options (measured on an H200, BENCHMARKS.md). The default runs ComfyUI
with stock flags, so output is the stock graph's. ``RYLA_GEN_VRAM=high`` starts ComfyUI
with ``--highvram``: weights and the backups ComfyUI keeps while a LoRA is merged stay
in GPU memory, so changing a user's LoRA or its strength costs a GPU copy instead of a
host round trip (stock: +4 to +20 s a change; high: +0.2 to +0.8 s), at the price of
about 22 GB more GPU memory for Flux Dev (59 GB peak: fits an H100 80 GB). It moves
weights, not math: the images are the same. ``RYLA_GEN_LORA_MODE=unmerged`` and
``RYLA_GEN_COMPILE=1`` change the graph ComfyUI runs (see :mod:`ryla_gen_modal.tuning` for
what each costs and buys); the compile cache lives on its own Volume, so a new container
compiles from a warm cache.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath

from ryla_gen_modal.tuning import WorkerTuning

__all__ = [
    "ANTELOPEV2_DIR",
    "COMFYUI_DIR",
    "COMFYUI_PORT",
    "COMFYUI_VERSION",
    "COMFY_CLI_VERSION",
    "COMPILE_CACHE_DIR",
    "EXTRA_MODEL_PATHS_FILE",
    "INSIGHTFACE_VERSION",
    "INSTANTID_COMMIT",
    "INSTANTID_REPO",
    "LORAS_DIR",
    "MINUTES",
    "MODELS_DIR",
    "MODEL_FOLDERS",
    "ONNXRUNTIME_GPU_VERSION",
    "OPENCV_VERSION",
    "PYTHON_VERSION",
    "RUNTIME_PACKAGES",
    "SOURCE_PACKAGES",
    "WEB_PACKAGES",
    "DeployConfig",
    "antelopev2_commands",
    "compile_cache_env",
    "extra_model_paths_yaml",
    "source_ignore",
]

MINUTES = 60
"""Seconds in a minute, for readable timeouts."""

# -- pinned versions -----------------------------------------------------------------------

PYTHON_VERSION = "3.11"
"""Python of every image (ComfyUI 0.3.75 and insightface 0.7.3 both support it)."""
COMFY_CLI_VERSION = "1.5.3"
"""comfy-cli, used only at build time to install ComfyUI and its CUDA torch."""
COMFYUI_VERSION = "0.3.75"
"""ComfyUI release; the same one the test suite runs (ryla_gen.testing)."""
INSTANTID_REPO = "https://github.com/cubiq/ComfyUI_InstantID"
INSTANTID_COMMIT = "1ef34ef573581bd9727c1e0ac05aa956b356a510"
"""cubiq/ComfyUI_InstantID, pinned by commit (the repository has no release tags)."""
INSIGHTFACE_VERSION = "0.7.3"
"""insightface: face detection and embeddings for InstantID (built from source)."""
ONNXRUNTIME_GPU_VERSION = "1.22.0"
"""onnxruntime-gpu (CUDA 12 wheels) to run the antelopev2 ONNX models on the GPU."""
OPENCV_VERSION = "4.11.0.86"
"""opencv-python-headless, imported by ComfyUI_InstantID."""

RUNTIME_PACKAGES = (
    "httpx==0.28.1",
    "pydantic==2.14.4",
    "pydantic-settings==2.16.3",
    "tenacity==9.2.1",
    "websocket-client==1.9.2",
    "pillow==13.0.0",
    "rich==15.0.0",
)
"""What ``ryla_gen`` itself imports, pinned to the versions the test suite runs with."""

WEB_PACKAGES = (
    "fastapi==0.165.0",
    "starlette==1.10.0",
    "python-multipart==0.0.34",
)
"""The job API's web stack (Modal serves ASGI itself: no uvicorn needed)."""

SOURCE_PACKAGES = ("ryla_gen", "ryla_gen_modal")
"""Local packages added to every image (``add_local_python_source``)."""


def source_ignore(path: PurePath) -> bool:
    """Files of :data:`SOURCE_PACKAGES` left out of the images: bytecode caches only.

    Modal's default keeps only ``.py`` files; ryla_gen needs its bundled node schemas
    (``ryla_gen/schemas/*.json``) and ``py.typed`` too.
    """
    return "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo")


# -- paths inside the containers -------------------------------------------------------------

COMFYUI_DIR = "/root/comfy/ComfyUI"
"""Where ``comfy install`` puts ComfyUI in the image."""
COMFYUI_PORT = 8188
"""ComfyUI listens on 127.0.0.1 only: nothing outside the container reaches it."""
MODELS_DIR = "/models"
"""Mount point of the models Volume, laid out like ``ComfyUI/models``."""
LORAS_DIR = "/loras"
"""Mount point of the LoRA Volume (flat folder of ``*.safetensors``)."""
ANTELOPEV2_DIR = f"{COMFYUI_DIR}/models/insightface/models/antelopev2"
"""Where ComfyUI_InstantID loads the face models from (hard-coded there, so baked in)."""
COMPILE_CACHE_DIR = "/compile-cache"
"""Mount point of the Volume with torch.compile's caches (inductor and Triton)."""
EXTRA_MODEL_PATHS_FILE = "/root/extra_model_paths.yaml"
"""Written at container start; passed to ComfyUI with ``--extra-model-paths-config``."""

MODEL_FOLDERS = (
    "checkpoints",
    "diffusion_models",
    "text_encoders",
    "vae",
    "loras",
    "controlnet",
    "instantid",
    "clip_vision",
    "upscale_models",
    "embeddings",
)
"""Models Volume sub-folders ComfyUI is told about (the manifest's folders and common extras)."""


def extra_model_paths_yaml(
    models_dir: str = MODELS_DIR,
    loras_dir: str = LORAS_DIR,
    custom_nodes_dir: str | None = None,
) -> str:
    """ComfyUI's ``extra_model_paths.yaml`` pointing at the two volumes.

    The legacy folder names ``unet`` and ``clip`` are mapped too, so files laid out
    either way are found. ``custom_nodes_dir`` adds a folder of custom nodes (ryla-gen's
    own, :data:`ryla_gen_modal.tuning.COMFY_NODES_DIR`, when a worker option needs them).
    """
    lines = ["ryla_gen_models:", f"  base_path: {models_dir}"]
    for folder in MODEL_FOLDERS:
        if folder == "diffusion_models":
            lines += ["  diffusion_models: |", "    diffusion_models", "    unet"]
        elif folder == "text_encoders":
            lines += ["  text_encoders: |", "    text_encoders", "    clip"]
        else:
            lines.append(f"  {folder}: {folder}")
    lines += ["ryla_gen_loras:", f"  base_path: {loras_dir}", "  loras: ."]
    if custom_nodes_dir is not None:
        lines += ["ryla_gen_nodes:", f"  custom_nodes: {custom_nodes_dir}"]
    return "\n".join(lines) + "\n"


def compile_cache_env(cache_dir: str = COMPILE_CACHE_DIR) -> dict[str, str]:
    """Environment that puts torch.compile's on-disk caches under ``cache_dir``.

    Kept on a Volume, the caches let a new container compile from warm caches (42 s
    instead of 74 s for the first compiled Flux Dev image on an H200, BENCHMARKS.md).
    """
    return {
        "TORCHINDUCTOR_CACHE_DIR": f"{cache_dir}/inductor",
        "TRITON_CACHE_DIR": f"{cache_dir}/triton",
        "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
        "TORCHINDUCTOR_AUTOGRAD_CACHE": "1",
    }


def antelopev2_commands(target_dir: str = ANTELOPEV2_DIR) -> list[str]:
    """Shell commands that download the antelopev2 face models and check their SHA-256.

    Built from the manifest (``ryla_gen.models.ANTELOPEV2``): each file is fetched with
    curl and verified with ``sha256sum -c``, so a changed upstream file fails the build.
    """
    from ryla_gen.models import ANTELOPEV2

    commands = [f"mkdir -p {shlex.quote(target_dir)}"]
    for f in ANTELOPEV2:
        if f.url is None or f.sha256 is None:  # pragma: no cover - the manifest has both
            raise ValueError(f"{f.relpath} lacks a download URL or SHA-256")
        dest = shlex.quote(f"{target_dir}/{PurePath(f.filename).name}")
        commands.append(
            f"curl -fsSL --retry 5 -o {dest} {shlex.quote(f.url)} && "
            f"echo {shlex.quote(f'{f.sha256}  {target_dir}/{PurePath(f.filename).name}')} "
            "| sha256sum -c -"
        )
    return commands


# -- deploy-time knobs -------------------------------------------------------------------------

_RESERVED_COMFYUI_FLAGS = frozenset(
    {"--listen", "--port", "--extra-model-paths-config", "--disable-auto-launch"}
)
_GPU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class DeployConfig:
    """The knobs of one deployment; see the module docstring for the variables."""

    app_name: str = "ryla-gen"
    gpu: str = "H100"
    job_timeout: int = 30 * MINUTES
    startup_timeout: int = 10 * MINUTES
    max_containers: int = 4
    min_containers: int = 0
    scaledown_window: int = 5 * MINUTES
    gpu_concurrency: int = 2
    api_secret: str = "ryla-gen-api"
    hf_secret: str = "huggingface-secret"
    vram: str = "normal"
    comfyui_args: tuple[str, ...] = ()
    warmup: tuple[str, ...] = ()
    tuning: WorkerTuning = field(default_factory=WorkerTuning)
    prefetch: bool = False

    def __post_init__(self) -> None:
        from ryla_gen_modal.warmup import WARMUP_WORKFLOWS

        for name in self.warmup:
            if name not in WARMUP_WORKFLOWS:
                raise ValueError(
                    f"RYLA_GEN_WARMUP names {name!r}; choose from {', '.join(WARMUP_WORKFLOWS)}"
                )
        if self.vram not in ("normal", "high"):
            raise ValueError(f"RYLA_GEN_VRAM must be 'normal' or 'high', got {self.vram!r}")
        for arg in self.comfyui_args:
            if arg.split("=")[0] in _RESERVED_COMFYUI_FLAGS:
                raise ValueError(
                    f"RYLA_GEN_COMFYUI_ARGS may not set {arg.split('=')[0]}: the worker owns it"
                )
        if not _NAME.fullmatch(self.app_name):
            raise ValueError(f"RYLA_GEN_APP_NAME {self.app_name!r} is not a valid Modal name")
        if not _GPU.fullmatch(self.gpu):
            raise ValueError(f"RYLA_GEN_GPU {self.gpu!r} is not a GPU type such as 'H100'")
        if not 60 <= self.job_timeout <= 24 * 60 * MINUTES:
            raise ValueError("RYLA_GEN_JOB_TIMEOUT must be 60..86400 seconds")
        if not 30 <= self.startup_timeout <= 60 * MINUTES:
            raise ValueError("RYLA_GEN_STARTUP_TIMEOUT must be 30..3600 seconds")
        if not 1 <= self.max_containers <= 1000:
            raise ValueError("RYLA_GEN_MAX_CONTAINERS must be 1..1000")
        if not 0 <= self.min_containers <= self.max_containers:
            raise ValueError("RYLA_GEN_MIN_CONTAINERS must be 0..RYLA_GEN_MAX_CONTAINERS")
        if not 2 <= self.scaledown_window <= 60 * MINUTES:
            raise ValueError("RYLA_GEN_SCALEDOWN_WINDOW must be 2..3600 seconds")
        if not 1 <= self.gpu_concurrency <= 32:
            raise ValueError("RYLA_GEN_GPU_CONCURRENCY must be 1..32")
        if not _NAME.fullmatch(self.api_secret):
            raise ValueError(f"RYLA_GEN_API_SECRET {self.api_secret!r} is not a secret name")
        if self.hf_secret and not _NAME.fullmatch(self.hf_secret):
            raise ValueError(f"RYLA_GEN_HF_SECRET {self.hf_secret!r} is not a secret name")

    @property
    def comfyui_flags(self) -> list[str]:
        """Extra ComfyUI command-line flags of the GPU worker (none by default)."""
        return (["--highvram"] if self.vram == "high" else []) + list(self.comfyui_args)

    @property
    def models_volume(self) -> str:
        """Name of the models Volume."""
        return f"{self.app_name}-models"

    @property
    def loras_volume(self) -> str:
        """Name of the LoRA Volume."""
        return f"{self.app_name}-loras"

    @property
    def compile_cache_volume(self) -> str:
        """Name of the Volume that keeps torch.compile's caches between containers."""
        return f"{self.app_name}-compile-cache"

    @property
    def warmup_size(self) -> int:
        """Side of the square warm-up image: 1024 with compile (the size it compiles for)."""
        return 1024 if self.tuning.compile else 256

    @property
    def jobs_dict(self) -> str:
        """Name of the Dict that maps job ids to Modal function calls and progress."""
        return f"{self.app_name}-jobs"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DeployConfig:
        """The config from ``RYLA_GEN_*`` variables (defaults for unset ones)."""
        env = os.environ if env is None else env
        d = cls()

        def num(name: str, default: int) -> int:
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                return default
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"{name} must be an integer, got {raw!r}") from None

        return cls(
            app_name=env.get("RYLA_GEN_APP_NAME") or d.app_name,
            gpu=env.get("RYLA_GEN_GPU") or d.gpu,
            job_timeout=num("RYLA_GEN_JOB_TIMEOUT", d.job_timeout),
            startup_timeout=num("RYLA_GEN_STARTUP_TIMEOUT", d.startup_timeout),
            max_containers=num("RYLA_GEN_MAX_CONTAINERS", d.max_containers),
            min_containers=num("RYLA_GEN_MIN_CONTAINERS", d.min_containers),
            scaledown_window=num("RYLA_GEN_SCALEDOWN_WINDOW", d.scaledown_window),
            gpu_concurrency=num("RYLA_GEN_GPU_CONCURRENCY", d.gpu_concurrency),
            api_secret=env.get("RYLA_GEN_API_SECRET") or d.api_secret,
            hf_secret=env.get("RYLA_GEN_HF_SECRET", d.hf_secret),
            vram=(env.get("RYLA_GEN_VRAM") or d.vram).strip().lower(),
            comfyui_args=tuple(shlex.split(env.get("RYLA_GEN_COMFYUI_ARGS", ""))),
            warmup=tuple(w.strip() for w in env.get("RYLA_GEN_WARMUP", "").split(",") if w.strip()),
            tuning=WorkerTuning.from_env(env),
            prefetch=(env.get("RYLA_GEN_PREFETCH") or "").strip().lower() in ("1", "true", "yes"),
        )

    def worker_env(self) -> dict[str, str]:
        """The knobs the GPU container reads at run time (baked into its image)."""
        return {
            "RYLA_GEN_VRAM": self.vram,
            "RYLA_GEN_COMFYUI_ARGS": shlex.join(self.comfyui_args),
            "RYLA_GEN_WARMUP": ",".join(self.warmup),
            "RYLA_GEN_PREFETCH": "1" if self.prefetch else "",
            **self.tuning.env(),
        }
