"""The Modal deployment, checked without a Modal account, plus the pieces it runs.

* ``ryla_gen_modal.app`` is re-imported with spies on the Modal API it calls, so every
  image step, Volume, Secret and decorator argument is checked as app.py passes it
  (Modal keeps most of them in private structures).
* :class:`~ryla_gen_modal.jobs.ModalExecutor` runs against an in-process stand-in for
  Modal's spawn/poll/Dict whose "GPU worker" is the real worker code on the real
  ComfyUI test server.
* :class:`~ryla_gen_modal.comfy_process.ComfyUIProcess` starts, loses and restarts a
  real ComfyUI configured by the same ``extra_model_paths.yaml`` the worker writes.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import importlib
import io
import os
import re
import socket
import sys
import time
import uuid
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import modal
import pytest
from helpers import fresh_color
from PIL import Image

from ryla_gen.models import ANTELOPEV2
from ryla_gen.providers.comfyui import ComfyUIProvider
from ryla_gen.testing import ComfyUIInstall, slow_graph, tiny_graph
from ryla_gen.types import JobRequest
from ryla_gen_modal import config as cfg
from ryla_gen_modal.comfy_process import ComfyUIProcess, ComfyUIStartError, comfyui_command
from ryla_gen_modal.config import DeployConfig, extra_model_paths_yaml, source_ignore
from ryla_gen_modal.jobs import (
    HEALTH_KEY,
    BackendUnavailableError,
    ModalExecutor,
    progress_key,
)
from ryla_gen_modal.server import create_app

KNOBS = (
    "RYLA_GEN_APP_NAME",
    "RYLA_GEN_GPU",
    "RYLA_GEN_JOB_TIMEOUT",
    "RYLA_GEN_STARTUP_TIMEOUT",
    "RYLA_GEN_MAX_CONTAINERS",
    "RYLA_GEN_MIN_CONTAINERS",
    "RYLA_GEN_SCALEDOWN_WINDOW",
    "RYLA_GEN_GPU_CONCURRENCY",
    "RYLA_GEN_API_SECRET",
    "RYLA_GEN_HF_SECRET",
)
"""The deploy-time variables DeployConfig reads (see ryla_gen_modal.config)."""

# -- re-importing app.py with spies on the Modal API ----------------------------------------------


@dataclass
class Recorded:
    """Every Modal call app.py made while it was imported."""

    calls: dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    classes: dict[str, type] = field(default_factory=dict)
    module: Any = None

    def kwargs(self, name: str) -> list[dict[str, Any]]:
        return [kw for _, kw in self.calls[name]]

    def args(self, name: str) -> list[Any]:
        return [a for args, _ in self.calls[name] for a in args if isinstance(a, str)]


def _import_app(monkeypatch: pytest.MonkeyPatch, env: dict[str, str] | None = None) -> Recorded:
    rec = Recorded()
    for key in KNOBS:
        monkeypatch.delenv(key, raising=False)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)

    def method(owner: type, name: str) -> None:
        original = getattr(owner, name)

        def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
            rec.calls[name].append((args, kwargs))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(owner, name, spy)

    def static(owner: type, name: str, key: str) -> None:
        original = getattr(owner, name)

        def spy(*args: Any, **kwargs: Any) -> Any:
            rec.calls[key].append((args, kwargs))
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, staticmethod(spy))

    for name in (
        "apt_install",
        "pip_install",
        "uv_pip_install",
        "run_commands",
        "add_local_python_source",
    ):
        method(modal.Image, name)
    static(modal.Image, "debian_slim", "debian_slim")
    static(modal.Volume, "from_name", "Volume.from_name")
    static(modal.Secret, "from_name", "Secret.from_name")
    static(modal.Dict, "from_name", "Dict.from_name")

    for name in ("function", "cls"):
        original_decorator = getattr(modal.App, name)

        def deco_spy(
            self: Any, *args: Any, _orig: Any = original_decorator, _name: str = name, **kwargs: Any
        ) -> Any:
            rec.calls[f"app.{_name}"].append((args, kwargs))
            decorator = _orig(self, *args, **kwargs)

            def capture(obj: Any) -> Any:
                if isinstance(obj, type):
                    rec.classes[obj.__name__] = obj
                return decorator(obj)

            return capture

        monkeypatch.setattr(modal.App, name, deco_spy)

    original_concurrent = modal.concurrent

    def concurrent_spy(*args: Any, **kwargs: Any) -> Any:
        rec.calls["concurrent"].append((args, kwargs))
        decorator = original_concurrent(*args, **kwargs)

        def capture(obj: Any) -> Any:
            if isinstance(obj, type):
                rec.classes[obj.__name__] = obj
            return decorator(obj)

        return capture

    monkeypatch.setattr(modal, "concurrent", concurrent_spy)

    if "ryla_gen_modal.app" in sys.modules:
        rec.module = importlib.reload(sys.modules["ryla_gen_modal.app"])
    else:
        rec.module = importlib.import_module("ryla_gen_modal.app")
    return rec


@pytest.fixture
def rec(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    yield _import_app(monkeypatch)
    monkeypatch.undo()
    import ryla_gen_modal.app as app_module

    importlib.reload(app_module)  # leave a pristine module for others


_PIN = re.compile(r"^[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.+\-]*$")


def test_every_installed_package_is_pinned(rec: Recorded) -> None:
    packages = [
        p for args, _ in rec.calls["uv_pip_install"] + rec.calls["pip_install"] for p in args
    ]
    assert packages, "no pip installs recorded"
    for p in packages:
        assert _PIN.match(p), f"{p!r} is not pinned with =="
    assert f"comfy-cli=={cfg.COMFY_CLI_VERSION}" in packages
    assert "insightface==0.7.3" in packages
    assert f"onnxruntime-gpu=={cfg.ONNXRUNTIME_GPU_VERSION}" in packages
    assert not any(p.startswith("onnxruntime==") for p in packages)  # would shadow the GPU build
    for pin in cfg.RUNTIME_PACKAGES + cfg.WEB_PACKAGES:
        assert pin in packages


def test_comfyui_and_instantid_are_pinned_in_the_image(rec: Recorded) -> None:
    assert {kw.get("python_version") for kw in rec.kwargs("debian_slim")} == {"3.11"}
    commands = rec.args("run_commands")
    assert "comfy --skip-prompt install --fast-deps --nvidia --version 0.3.75" in commands
    assert cfg.COMFYUI_VERSION == "0.3.75"
    clone = [c for c in commands if "git clone" in c and "ComfyUI_InstantID" in c]
    checkout = [c for c in commands if "checkout" in c]
    assert clone and "cubiq/ComfyUI_InstantID" in clone[0]
    assert checkout and checkout[0].endswith("1ef34ef573581bd9727c1e0ac05aa956b356a510")
    assert f"{cfg.COMFYUI_DIR}/custom_nodes/ComfyUI_InstantID" in checkout[0]


def test_antelopev2_is_baked_at_the_path_instantid_hard_codes(rec: Recorded) -> None:
    assert cfg.ANTELOPEV2_DIR == "/root/comfy/ComfyUI/models/insightface/models/antelopev2"
    commands = rec.args("run_commands")
    for f in ANTELOPEV2:
        name = PurePosixPath(f.filename).name
        [cmd] = [c for c in commands if f"{cfg.ANTELOPEV2_DIR}/{name}" in c and "curl" in c]
        assert f.url is not None and f.url in cmd
        assert f"{f.sha256}  {cfg.ANTELOPEV2_DIR}/{name}" in cmd and "sha256sum -c" in cmd


def test_the_package_source_is_added_with_its_data_files(rec: Recorded) -> None:
    for args, kw in rec.calls["add_local_python_source"]:
        assert set(args) == {"ryla_gen", "ryla_gen_modal"}
        assert kw["ignore"] is source_ignore
    assert len(rec.calls["add_local_python_source"]) == 2  # GPU image and web image
    assert not source_ignore(Path("ryla_gen/schemas/core.json"))
    assert not source_ignore(Path("ryla_gen/py.typed"))
    assert not source_ignore(Path("ryla_gen_modal/app.py"))
    assert source_ignore(Path("ryla_gen/__pycache__/x.cpython-311.pyc"))


def test_volumes_dict_and_secrets(rec: Recorded) -> None:
    volumes = {args[0]: kw for args, kw in rec.calls["Volume.from_name"]}
    assert volumes == {
        "ryla-gen-models": {"create_if_missing": True},
        "ryla-gen-loras": {"create_if_missing": True},
        "ryla-gen-compile-cache": {"create_if_missing": True},
    }
    assert [a for a, _ in rec.calls["Dict.from_name"]] == [("ryla-gen-jobs",)]
    secrets = {args[0]: kw.get("required_keys") for args, kw in rec.calls["Secret.from_name"]}
    assert secrets == {"ryla-gen-api": ["RYLA_GEN_API_TOKEN"], "huggingface-secret": ["HF_TOKEN"]}


def _by_function(rec: Recorded) -> dict[str, dict[str, Any]]:
    names = ["download_models", "web"]  # app.function calls, in file order
    kws = rec.kwargs("app.function")
    assert len(kws) == len(names)
    return dict(zip(names, kws, strict=True))


def test_gpu_worker_decorator_arguments(rec: Recorded) -> None:
    m = rec.module
    [kw] = rec.kwargs("app.cls")
    assert kw["gpu"] == "H100"
    assert kw["timeout"] == 30 * 60 + 2 * 60
    assert kw["startup_timeout"] == 600
    assert kw["max_containers"] == 4 and kw["min_containers"] == 0
    assert kw["scaledown_window"] == 300
    assert kw["retries"] == 0
    assert kw["volumes"] == {
        "/models": m.models_volume,
        "/loras": m.loras_volume,
        "/compile-cache": m.compile_cache_volume,
    }
    assert kw["image"] is m.gpu_image
    assert "secrets" not in kw  # the GPU worker needs no secret
    assert rec.kwargs("concurrent")[0] == {"max_inputs": 2}
    worker = rec.classes["Worker"]
    for name in ("start_comfyui", "run_job", "stop_comfyui"):
        assert hasattr(worker, name), name


def test_download_and_web_function_arguments(rec: Recorded) -> None:
    m = rec.module
    fns = _by_function(rec)
    dl = fns["download_models"]
    assert dl["volumes"] == {"/models": m.models_volume}
    assert dl["secrets"] == m.hf_secrets and len(m.hf_secrets) == 1
    assert dl["timeout"] >= 60 * 60 and "gpu" not in dl
    web = fns["web"]
    assert web["secrets"] == [m.api_secret]
    assert web["volumes"] == {"/models": m.models_volume, "/loras": m.loras_volume}
    assert "gpu" not in web and web["cpu"] <= 2
    assert web["image"] is m.web_image and dl["image"] is m.web_image
    assert rec.kwargs("concurrent")[1] == {"max_inputs": 100}


def test_the_app_holds_its_functions(rec: Recorded) -> None:
    app = rec.module.app
    assert app.name == "ryla-gen"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert set(app.registered_functions) == {"download_models", "Worker.*", "web"}
        assert set(app.registered_classes) == {"Worker"}
        assert set(app.registered_entrypoints) == {"smoke_test"}
        assert app.registered_web_endpoints == ["web"]
    assert isinstance(rec.module.Worker, modal.Cls)
    assert isinstance(rec.module.web, modal.Function)
    assert isinstance(rec.module.download_models, modal.Function)


def test_deploy_knobs_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = _import_app(
        monkeypatch,
        {
            "RYLA_GEN_GPU": "L40S",
            "RYLA_GEN_MAX_CONTAINERS": "2",
            "RYLA_GEN_MIN_CONTAINERS": "1",
            "RYLA_GEN_JOB_TIMEOUT": "600",
            "RYLA_GEN_GPU_CONCURRENCY": "1",
            "RYLA_GEN_APP_NAME": "ryla-staging",
            "RYLA_GEN_HF_SECRET": "",
        },
    )
    try:
        [kw] = rec.kwargs("app.cls")
        assert kw["gpu"] == "L40S" and kw["max_containers"] == 2 and kw["min_containers"] == 1
        assert kw["timeout"] == 600 + 120
        assert rec.kwargs("concurrent")[0] == {"max_inputs": 1}
        assert rec.module.app.name == "ryla-staging"
        assert {a[0] for a, _ in rec.calls["Volume.from_name"]} == {
            "ryla-staging-models",
            "ryla-staging-loras",
            "ryla-staging-compile-cache",
        }
        assert rec.module.hf_secrets == []
        assert _by_function(rec)["download_models"]["secrets"] == []
    finally:
        monkeypatch.undo()
        import ryla_gen_modal.app as app_module

        importlib.reload(app_module)


def test_modal_cli_reads_the_app_offline() -> None:
    """``modal run -m ryla_gen_modal.app::download_models --help`` needs no account."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "modal",
            "run",
            "-m",
            "ryla_gen_modal.app::download_models",
            "--help",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "--workflows" in r.stdout


# -- config ---------------------------------------------------------------------------------------


def test_deploy_config_defaults_and_validation() -> None:
    d = DeployConfig.from_env({})
    assert d == DeployConfig()
    assert (d.models_volume, d.loras_volume, d.jobs_dict) == (
        "ryla-gen-models",
        "ryla-gen-loras",
        "ryla-gen-jobs",
    )
    for env in (
        {"RYLA_GEN_GPU": "H100; rm -rf /"},
        {"RYLA_GEN_MAX_CONTAINERS": "0"},
        {"RYLA_GEN_MAX_CONTAINERS": "two"},
        {"RYLA_GEN_MIN_CONTAINERS": "5"},
        {"RYLA_GEN_JOB_TIMEOUT": "10"},
        {"RYLA_GEN_GPU_CONCURRENCY": "0"},
        {"RYLA_GEN_APP_NAME": "bad name"},
        {"RYLA_GEN_API_SECRET": "../x"},
    ):
        with pytest.raises(ValueError):
            DeployConfig.from_env(env)
    assert DeployConfig.from_env({"RYLA_GEN_GPU": "A100-80GB:2"}).gpu == "A100-80GB:2"


def test_worker_speed_options_are_opt_in_and_reach_comfyui() -> None:
    # Default: stock ComfyUI flags, so the output is the stock graph's.
    assert DeployConfig.from_env({}).comfyui_flags == []
    high = DeployConfig.from_env(
        {"RYLA_GEN_VRAM": "High", "RYLA_GEN_COMFYUI_ARGS": "--fast fp16_accumulation"}
    )
    assert high.comfyui_flags == ["--highvram", "--fast", "fp16_accumulation"]
    # The container reads the same knobs back from its image's environment.
    assert DeployConfig.from_env(high.worker_env()).comfyui_flags == high.comfyui_flags
    for env in (
        {"RYLA_GEN_VRAM": "max"},
        {"RYLA_GEN_COMFYUI_ARGS": "--port 9999"},
        {"RYLA_GEN_COMFYUI_ARGS": "--listen=0.0.0.0"},
    ):
        with pytest.raises(ValueError):
            DeployConfig.from_env(env)


def test_gpu_image_carries_the_worker_options(
    rec: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert rec.module.config.comfyui_flags == []
    monkeypatch.setenv("RYLA_GEN_VRAM", "high")
    again = _import_app(monkeypatch)
    assert again.module.config.comfyui_flags == ["--highvram"]
    assert again.module.config.worker_env()["RYLA_GEN_VRAM"] == "high"


def test_extra_model_paths_maps_both_volumes() -> None:
    text = extra_model_paths_yaml("/models", "/loras")
    assert "base_path: /models" in text and "base_path: /loras" in text
    for folder in (
        "checkpoints",
        "diffusion_models",
        "text_encoders",
        "vae",
        "controlnet",
        "instantid",
    ):
        assert f"  {folder}:" in text
    assert "    unet" in text and "    clip" in text  # legacy names too


# -- ModalExecutor against an in-process Modal stand-in --------------------------------------------


class LoopbackBackend:
    """Modal's spawn/poll/cancel and Dict, in this process.

    ``spawn`` runs the real worker code (:func:`ryla_gen_modal.jobs.worker_run`) as a
    task on a real ComfyUI; values are deep-copied in and out of the store, as Modal
    pickles them.
    """

    def __init__(self, provider: ComfyUIProvider) -> None:
        from ryla_gen_modal.jobs import worker_run

        self.provider = provider
        self.worker_run = worker_run
        self.store: dict[str, Any] = {}
        self.tasks: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self.spawned: list[dict[str, Any]] = []
        self.fail_spawn = False

    async def spawn(self, payload: dict[str, Any]) -> str:
        if self.fail_spawn:
            raise ConnectionError("control plane unreachable")
        payload = copy.deepcopy(payload)
        self.spawned.append(payload)
        call_id = f"fc-{uuid.uuid4().hex}"

        async def publish(state: dict[str, Any]) -> None:
            await self.put(progress_key(payload["job_id"]), state)

        self.tasks[call_id] = asyncio.create_task(
            self.worker_run(self.provider, payload, publish=publish, publish_interval=0.05)
        )
        return call_id

    async def poll(self, call_id: str, timeout: float) -> dict[str, Any] | None:
        task = self.tasks[call_id]
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            return None
        if task.cancelled():
            raise RuntimeError("input was cancelled")
        return copy.deepcopy(task.result())

    async def cancel(self, call_id: str) -> None:
        self.tasks[call_id].cancel()

    async def get(self, key: str) -> Any:
        return copy.deepcopy(self.store.get(key))

    async def put(self, key: str, value: Any, *, if_absent: bool = False) -> bool:
        if if_absent and key in self.store:
            return False
        self.store[key] = copy.deepcopy(value)
        return True

    async def delete(self, key: str) -> None:
        self.store.pop(key, None)

    async def aclose(self) -> None:
        for t in self.tasks.values():
            t.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=15)
        await self.provider.aclose()


async def _until(check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.mark.comfyui
async def test_modal_executor_runs_a_job_on_the_worker_code(comfyui_url: str) -> None:
    backend = LoopbackBackend(ComfyUIProvider(comfyui_url))
    executor = ModalExecutor(backend, job_timeout=120)
    try:
        request = JobRequest(graph=tiny_graph(32, 24, color=fresh_color()), workflow="tiny", seed=3)
        job_id = str(uuid.uuid4())
        view, created = await executor.create(request, job_id=job_id)
        assert created and view["status"] == "queued" and view["id"] == job_id
        assert backend.store[f"job:{job_id}"]["call_id"] in backend.tasks
        payload = backend.spawned[0]
        assert payload["graph"] == request.graph and payload["timeout"] == 120

        again, created = await executor.create(request, job_id=job_id)
        assert not created and again["id"] == job_id and len(backend.spawned) == 1

        done = await executor.wait(job_id, 60)
        assert done is not None and done["status"] == "completed", done
        assert (done["workflow"], done["seed"]) == ("tiny", 3)
        data = base64.b64decode(done["images"][0]["data"])
        with Image.open(io.BytesIO(data)) as im:
            assert im.size == (32, 24)
        assert done["timings"]["total"] > 0
        assert backend.store[progress_key(job_id)]["status"] in ("queued", "running")
        assert await executor.get(job_id) == done  # served from the cache now
        assert await executor.get(str(uuid.uuid4())) is None
    finally:
        await backend.aclose()


@pytest.mark.comfyui
async def test_modal_executor_reports_progress_and_cancels_into_comfyui(comfyui_url: str) -> None:
    backend = LoopbackBackend(ComfyUIProvider(comfyui_url))
    executor = ModalExecutor(backend, job_timeout=120)
    try:
        view, _ = await executor.create(JobRequest(graph=slow_graph(30)))
        job_id = view["id"]

        async def running() -> Any:
            v = await executor.get(job_id)
            return v if v and v["status"] == "running" else None

        await _until(running)
        cancelled = await executor.cancel(job_id)
        assert cancelled is not None and cancelled["status"] == "cancelled"
        assert cancelled["error"]["type"] == "cancelled"
        assert backend.store[f"job:{job_id}"]["cancelled"] is True

        async def idle() -> bool:
            async with httpx.AsyncClient() as http:
                q = (await http.get(f"{comfyui_url}/queue")).json()
            return not q["queue_running"] and not q["queue_pending"]

        await _until(idle, timeout=15)  # the worker interrupted its ComfyUI prompt
        assert (await executor.get(job_id) or {})["status"] == "cancelled"
    finally:
        await backend.aclose()


@pytest.mark.comfyui
async def test_modal_web_front_serves_jobs_through_the_executor(comfyui_url: str) -> None:
    backend = LoopbackBackend(ComfyUIProvider(comfyui_url))
    app = create_app(ModalExecutor(backend), token="t0ken")
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://modal.test",
            headers={"Authorization": "Bearer t0ken"},
        ) as client:
            r = await client.post(
                "/generate", json={"graph": tiny_graph(color=fresh_color()), "wait": 60}
            )
            assert r.status_code == 200 and r.json()["status"] == "completed"
            r = await client.post("/jobs", json={"graph": tiny_graph(color=fresh_color())})
            assert r.status_code == 202
            job_id = r.json()["id"]

            async def done() -> Any:
                v = (await client.get(f"/jobs/{job_id}")).json()
                return v if v["status"] == "completed" else None

            assert (await _until(done))["images"]
    finally:
        await backend.aclose()


async def test_modal_executor_failures_are_reported() -> None:
    provider = ComfyUIProvider("http://127.0.0.1:9")
    backend = LoopbackBackend(provider)
    executor = ModalExecutor(backend, health_ttl=60)
    try:
        backend.fail_spawn = True
        job_id = str(uuid.uuid4())
        with pytest.raises(BackendUnavailableError):
            await executor.create(JobRequest(graph=tiny_graph()), job_id=job_id)
        assert f"job:{job_id}" not in backend.store  # a retry with the same id can start it

        backend.fail_spawn = False
        await executor.create(JobRequest(graph=tiny_graph()), job_id=job_id)
        call_id = backend.store[f"job:{job_id}"]["call_id"]
        backend.tasks[call_id].cancel()  # the call dies without a result
        failed = await executor.wait(job_id, 10)
        assert failed is not None and failed["status"] == "failed"
        assert failed["error"]["type"] == "worker_error"

        assert await executor.backend_info() == {"reachable": False, "version": None}
        await backend.put(HEALTH_KEY, {"version": "0.3.75", "at": time.time()})
        assert await executor.backend_info() == {"reachable": True, "version": "0.3.75"}
        await backend.put(HEALTH_KEY, {"version": "0.3.75", "at": time.time() - 3600})
        assert (await executor.backend_info())["reachable"] is False
    finally:
        await backend.aclose()


# -- ComfyUI as a supervised process ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_server_that_exits_or_never_answers_fails_to_start(tmp_path: Path) -> None:
    quits = ComfyUIProcess(
        [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
        url=f"http://127.0.0.1:{_free_port()}",
        log_path=tmp_path / "quit.log",
        startup_timeout=30,
    )
    with pytest.raises(ComfyUIStartError, match="status 3") as info:
        quits.start()
    assert "boom" in str(info.value)

    hangs = ComfyUIProcess(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        url=f"http://127.0.0.1:{_free_port()}",
        log_path=tmp_path / "hang.log",
        startup_timeout=1,
    )
    with pytest.raises(ComfyUIStartError, match="did not answer"):
        hangs.start()
    assert not hangs.alive()


@pytest.mark.comfyui
def test_comfyui_restarts_after_dying_and_sees_both_volumes(
    comfyui_install: ComfyUIInstall, tmp_path: Path
) -> None:
    models, loras, base = tmp_path / "models", tmp_path / "loras", tmp_path / "base"
    (models / "diffusion_models").mkdir(parents=True)
    (models / "diffusion_models" / "vol_model.safetensors").write_bytes(b"x")
    (models / "unet").mkdir()
    (models / "unet" / "legacy_model.safetensors").write_bytes(b"x")
    loras.mkdir()
    (loras / "uploaded.safetensors").write_bytes(b"x")
    yaml_path = tmp_path / "extra_model_paths.yaml"
    yaml_path.write_text(extra_model_paths_yaml(str(models), str(loras)))
    for sub in ("input", "output", "temp", "user", "custom_nodes"):
        (base / sub).mkdir(parents=True)
    port = _free_port()
    command = comfyui_command(
        str(comfyui_install.python),
        comfyui_install.comfy_dir,
        port=port,
        extra_model_paths=yaml_path,
        extra_args=[
            "--cpu",
            "--front-end-root",
            str(comfyui_install.frontend_dir),
            "--base-directory",
            str(base),
            "--user-directory",
            str(base / "user"),
            "--database-url",
            f"sqlite:///{base / 'user' / 'comfyui.db'}",
        ],
    )
    proc = ComfyUIProcess(
        command,
        url=f"http://127.0.0.1:{port}",
        cwd=comfyui_install.comfy_dir,
        log_path=tmp_path / "comfyui.log",
        startup_timeout=240,
    )
    try:
        proc.start()
        assert proc.healthy() and proc.version == "0.3.75"
        assert proc.ensure_healthy() is False
        listed = httpx.get(f"{proc.url}/models/diffusion_models", timeout=30).json()
        assert {"vol_model.safetensors", "legacy_model.safetensors"} <= set(listed)
        assert "uploaded.safetensors" in httpx.get(f"{proc.url}/models/loras", timeout=30).json()

        first_pid = proc.pid
        proc.kill()
        assert not proc.healthy()
        assert proc.ensure_healthy() is True
        assert proc.restarts == 1 and proc.pid != first_pid and proc.healthy()
    finally:
        proc.stop()
    assert not proc.alive()
