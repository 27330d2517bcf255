"""Shared fixtures: one real ComfyUI 0.3.75 server (CPU, no weights) per test session.

The server is installed on first use into ``$RYLA_GEN_COMFYUI_HOME`` or ``<repo>/.comfyui``
(a few minutes the first time, instant afterwards) and started once per session (about
15-45 s). If either step fails, every test that needs it errors loudly: nothing is
skipped. Tests that use these fixtures should carry ``pytest.mark.comfyui``.

Its ``models/`` folder holds a placeholder (a few bytes) for every file of the model
manifest (``ryla_gen.models.all_model_files``), so graphs naming them pass validation,
plus the deliberately corrupt files of ``ryla_gen.testing.CORRUPT_MODEL_FILES``
(``<folder>/ryla_corrupt.safetensors``), which pass validation and then fail at run time.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ryla_gen.testing import (
    CORRUPT_MODEL_BYTES,
    CORRUPT_MODEL_FILES,
    ComfyUIInstall,
    ComfyUIServer,
    install_comfyui,
    manifest_placeholders,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def _comfyui_home() -> Path:
    env = os.environ.get("RYLA_GEN_COMFYUI_HOME")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / ".comfyui"


def _progress(line: str) -> None:
    # Bypass pytest's capture: a first install runs for minutes.
    print(f"[ryla-gen comfyui] {line}", file=sys.__stderr__, flush=True)


@pytest.fixture(scope="session")
def comfyui_install() -> ComfyUIInstall:
    """The installed ComfyUI (installed now if missing); fails the tests if that fails."""
    home = _comfyui_home()
    try:
        return install_comfyui(home, log=_progress)
    except Exception as exc:
        pytest.fail(f"installing ComfyUI into {home} failed: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def comfyui_server(
    comfyui_install: ComfyUIInstall, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ComfyUIServer]:
    """A running ComfyUI server shared by the session, stopped at its end.

    Tests may :meth:`~ryla_gen.testing.ComfyUIServer.kill` and
    :meth:`~ryla_gen.testing.ComfyUIServer.restart` it (same URL afterwards), and add
    model files with :meth:`~ryla_gen.testing.ComfyUIServer.add_model_file`.
    """
    base_dir = tmp_path_factory.mktemp("comfyui")
    server = ComfyUIServer(comfyui_install, base_dir=base_dir, placeholders=manifest_placeholders())
    for folder, filename in CORRUPT_MODEL_FILES:
        server.add_model_file(folder, filename, CORRUPT_MODEL_BYTES)
    started = time.monotonic()
    try:
        server.start()
    except Exception as exc:
        server.stop()
        pytest.fail(f"starting ComfyUI failed: {exc}", pytrace=False)
    _progress(f"ComfyUI ready at {server.url} in {time.monotonic() - started:.1f} s")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def comfyui_url(comfyui_server: ComfyUIServer) -> str:
    """Base URL of the session's ComfyUI server, e.g. ``http://127.0.0.1:40123``."""
    return comfyui_server.url
