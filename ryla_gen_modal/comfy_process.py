"""ComfyUI as a supervised child process (what the Modal GPU worker runs).

:class:`ComfyUIProcess` starts ``main.py`` in its own process group, waits until
``GET /system_stats`` answers, and can tell whether the server is still healthy.
:meth:`~ComfyUIProcess.ensure_healthy` restarts it when it died or stopped answering
(an out-of-memory kill, a crashing custom node), so one bad job does not poison every
later job of a warm container.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["ComfyUIProcess", "ComfyUIStartError", "comfyui_command"]

log = logging.getLogger("ryla_gen_modal.comfyui")


class ComfyUIStartError(RuntimeError):
    """ComfyUI did not come up; the message carries the end of its log where known."""


def comfyui_command(
    python: str,
    comfy_dir: str | os.PathLike[str],
    *,
    port: int,
    extra_model_paths: str | os.PathLike[str] | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line of a headless ComfyUI on 127.0.0.1:``port``."""
    cmd = [
        python,
        os.fspath(Path(comfy_dir) / "main.py"),
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-auto-launch",
        "--preview-method",
        "none",
    ]
    if extra_model_paths is not None:
        cmd += ["--extra-model-paths-config", os.fspath(extra_model_paths)]
    return cmd + list(extra_args)


class ComfyUIProcess:
    """One ComfyUI server process, started and restarted on demand.

    Args:
        command: The command line (see :func:`comfyui_command`).
        url: Where it answers, e.g. ``http://127.0.0.1:8188``.
        cwd: Working directory (ComfyUI's folder).
        log_path: File for its output; ``None`` passes it through to our stdout/stderr
            (on Modal that is the container log).
        startup_timeout: Seconds to wait for ``/system_stats``.
        env: Extra environment variables.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        url: str,
        cwd: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 600.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.command = list(command)
        self.url = url.rstrip("/")
        self.cwd = os.fspath(cwd) if cwd is not None else None
        self.log_path = Path(log_path) if log_path is not None else None
        self.startup_timeout = startup_timeout
        self.env = dict(env or {})
        self.restarts = 0
        self.version: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        pid = self._proc.pid if self._proc is not None else None
        return f"ComfyUIProcess(url={self.url!r}, pid={pid}, restarts={self.restarts})"

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self._proc.pid if self.alive() and self._proc is not None else None

    def alive(self) -> bool:
        """Whether the process was started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def system_stats(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """``GET /system_stats`` as a dict, or None when it does not answer 200."""
        try:
            with urllib.request.urlopen(f"{self.url}/system_stats", timeout=timeout) as r:
                if r.status != 200:
                    return None
                data = json.loads(r.read())
        except (OSError, ValueError, urllib.error.URLError):
            return None
        return data if isinstance(data, dict) else None

    def healthy(self, timeout: float = 5.0) -> bool:
        """Alive and answering ``/system_stats``."""
        if not self.alive():
            return False
        stats = self.system_stats(timeout)
        if stats is None:
            return False
        system = stats.get("system")
        if isinstance(system, dict) and system.get("comfyui_version"):
            self.version = str(system["comfyui_version"])
        return True

    def start(self) -> None:
        """Start the server (if not running) and wait until it answers."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self.alive():
            return
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open while it runs
        started = time.monotonic()
        self._proc = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log is not None else None,
            start_new_session=True,
        )
        log.info("ComfyUI starting (pid %d): %s", self._proc.pid, " ".join(self.command))
        while time.monotonic() - started < self.startup_timeout:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._cleanup()
                raise ComfyUIStartError(
                    f"ComfyUI exited with status {code} while starting.{self._tail()}"
                )
            if self.healthy(timeout=2.0):
                log.info(
                    "ComfyUI %s ready in %.1f s", self.version or "?", time.monotonic() - started
                )
                return
            time.sleep(0.25)
        self._stop()
        raise ComfyUIStartError(
            f"ComfyUI did not answer within {self.startup_timeout:.0f} s.{self._tail()}"
        )

    def ensure_healthy(self, timeout: float = 10.0) -> bool:
        """Restart the server if it died or stopped answering; True if it was restarted.

        A busy server gets a second chance before it is declared hung.
        """
        if self.healthy(timeout) or (self.alive() and self.healthy(timeout)):
            return False
        with self._lock:
            if self.healthy(timeout):  # another thread restarted it meanwhile
                return False
            log.warning("ComfyUI is %s; restarting it", "unresponsive" if self.alive() else "dead")
            self._stop()
            self._start()
            self.restarts += 1
            return True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM to its process group, SIGKILL after ``timeout``."""
        with self._lock:
            self._stop(timeout)

    def _stop(self, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                proc.wait(timeout)
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL the process group at once (for tests of the restart path)."""
        self._signal(signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(10)

    def _signal(self, sig: int) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _cleanup(self) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def _tail(self, lines: int = 30) -> str:
        if self.log_path is None:
            return " (its output is in the container log)"
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return ""
        return "\nLast lines of its log:\n" + "\n".join(text.splitlines()[-lines:])
