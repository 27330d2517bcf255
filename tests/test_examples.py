"""Every example builds and validates (--dry-run); async_batch runs for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.py"))


def run_example(
    script: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RYLA_GEN_")}
    full_env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def test_every_expected_example_exists() -> None:
    names = {p.name for p in EXAMPLES}
    assert {
        "flux_dev.py",
        "lora_trigger_words.py",
        "instantid_face.py",
        "character_sheet.py",
        "async_batch.py",
        "switch_provider.py",
    } <= names
    assert (REPO_ROOT / "examples" / "quickstart.ipynb").is_file()


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_dry_run(script: Path) -> None:
    # No server runs for these: --dry-run must build and validate without connecting.
    proc = run_example(script, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "Traceback" not in proc.stderr


def test_lora_example_puts_triggers_in_front_once() -> None:
    proc = run_example(REPO_ROOT / "examples" / "lora_trigger_words.py", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "prompt sent: ohwx woman, film grain, portrait" in proc.stdout
    assert "no repeat:   film grain, ohwx woman reading a book" in proc.stdout
    assert "LoraLoader(example_person.safetensors)" in proc.stdout
    assert "LoraLoaderModelOnly(example_film.safetensors)" in proc.stdout


def test_switch_provider_reports_missing_configuration() -> None:
    proc = run_example(
        REPO_ROOT / "examples" / "switch_provider.py",
        "--dry-run",
        env={"RYLA_GEN_PROVIDER": "modal"},
    )
    assert proc.returncode == 3
    assert "RYLA_GEN_MODAL_URL" in proc.stderr


@pytest.mark.comfyui
def test_async_batch_runs_for_real(comfyui_url: str, tmp_path: Path) -> None:
    out = tmp_path / "batch"
    proc = run_example(
        REPO_ROOT / "examples" / "async_batch.py",
        "--tiny",
        "6",
        "--concurrency",
        "2",
        "--out",
        str(out),
        env={"RYLA_GEN_COMFYUI_URL": comfyui_url},
    )
    assert proc.returncode == 0, proc.stderr
    assert "6/6 jobs succeeded" in proc.stdout
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 6
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)


@pytest.mark.comfyui
def test_switch_provider_tiny_runs_on_comfyui(comfyui_url: str, tmp_path: Path) -> None:
    proc = run_example(
        REPO_ROOT / "examples" / "switch_provider.py",
        "--tiny",
        "--out",
        str(tmp_path),
        env={"RYLA_GEN_COMFYUI_URL": comfyui_url},
    )
    assert proc.returncode == 0, proc.stderr
    assert "via comfyui" in proc.stdout
