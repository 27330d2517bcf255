"""The ``ryla-gen`` command line, in-process (``main([...])``) and as a real subprocess.

Tests marked ``comfyui`` run against the session's real ComfyUI 0.3.75 test server.
"""

from __future__ import annotations

import io
import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ryla_gen.cli import main
from ryla_gen.graph import Graph
from ryla_gen.testing import ComfyUIInstall, slow_graph, tiny_graph
from ryla_gen.workflows import WORKFLOWS

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RYLA_GEN_* setting of the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("RYLA_GEN_") and key != "RYLA_GEN_COMFYUI_HOME":
            monkeypatch.delenv(key)
    monkeypatch.setenv("COLUMNS", "200")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code, out, _ = run(capsys, *argv)
    return code, json.loads(out)


def cli_subprocess(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RYLA_GEN_")}
    full_env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ryla_gen.cli", *argv],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def assert_one_paragraph(err: str) -> None:
    text = err.strip()
    assert text, "expected an error message"
    assert "Traceback" not in text
    assert "\n\n" not in text, f"more than one paragraph:\n{text}"
    assert text.startswith(("Error:", "Configuration error:", "Provider error:")), text


def png_file(tmp_path: Path, name: str = "face.png") -> Path:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 150, 120)).save(buf, format="PNG")
    path = tmp_path / name
    path.write_bytes(buf.getvalue())
    return path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# ---------------------------------------------------------------------------- help


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for line in (
        "0    success",
        "2    usage",
        "3    configuration",
        "4    provider",
        "5    timeout",
    ):
        assert line in out
    assert "RYLA_GEN_MODAL_URL" in out


def test_module_docstring_documents_exit_codes() -> None:
    import ryla_gen.cli

    doc = ryla_gen.cli.__doc__ or ""
    assert "Exit codes" in doc and "timeout" in doc and "configuration error" in doc


# ---------------------------------------------------------------------------- workflows


def test_workflows_lists_every_workflow(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "workflows")
    assert code == 0
    for name in WORKFLOWS:
        assert name in out
    code, data = run_json(capsys, "workflows", "list", "--json")
    assert code == 0
    assert {d["name"] for d in data} == set(WORKFLOWS)
    assert all(d["description"] for d in data)


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_workflows_show_every_parameter(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, _ = run(capsys, "workflows", "show", name)
    assert code == 0
    for field in WORKFLOWS[name].model_fields:
        assert field in out
    assert "required" in out


def test_workflows_show_types_defaults_ranges_and_choices(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "workflows", "show", "flux-dev")
    assert code == 0
    width = next(line for line in out.splitlines() if line.startswith("width"))
    assert "int" in width and "1024" in width and "256..2048" in width and "multiple of 16" in width
    sampler = next(line for line in out.splitlines() if line.startswith("sampler"))
    assert "euler" in sampler and "dpmpp_2m" in sampler
    assert "seed" in out and "random" in out
    assert "LoRA:" in out and "trigger" in out


def test_workflows_show_json_is_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, schema = run_json(capsys, "workflows", "show", "z-image-turbo", "--json")
    assert code == 0
    assert "prompt" in schema["properties"]
    assert schema["properties"]["width"]["maximum"] == 2048


def test_workflows_show_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "workflows", "show", "flux-pro")
    assert code == 2
    assert_one_paragraph(err)
    assert "flux-dev" in err  # lists the valid names


# ---------------------------------------------------------------------------- graph


def test_graph_prints_valid_api_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_json(
        capsys,
        "graph",
        "flux-dev",
        "--prompt",
        "a cat",
        "--seed",
        "7",
        "--size",
        "768x512",
        "--steps",
        "12",
        "--lora",
        "film.safetensors:0.5:film grain",
        "--set",
        "guidance=2.5",
    )
    assert code == 0
    graph = Graph.from_api(data)
    graph.validate()
    by_type = {n.class_type: n for n in graph.nodes.values()}
    assert by_type["KSampler"].inputs["seed"] == 7
    assert by_type["KSampler"].inputs["steps"] == 12
    assert by_type["EmptySD3LatentImage"].inputs["width"] == 768
    assert by_type["FluxGuidance"].inputs["guidance"] == 2.5
    assert by_type["LoraLoaderModelOnly"].inputs["strength_model"] == 0.5
    assert by_type["CLIPTextEncode"].inputs["text"].startswith("film grain, a cat")


def test_graph_is_deterministic_with_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    _, first = run_json(capsys, "graph", "z-image-turbo", "--prompt", "x", "--seed", "3")
    _, second = run_json(capsys, "graph", "z-image-turbo", "--prompt", "x", "--seed", "3")
    assert first == second


def test_graph_to_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "sub" / "g.json"
    code, out, err = run(capsys, "graph", "flux-schnell", "--prompt", "fox", "-o", str(target))
    assert code == 0
    assert out == ""
    assert str(target) in err
    Graph.from_api(json.loads(target.read_text())).validate()


# ---------------------------------------------------------------------------- generate --dry-run


def test_generate_dry_run_prints_graph_and_models(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "generate", "flux-dev", "--prompt", "a cat", "--dry-run")
    assert code == 0
    assert "Nothing was sent" in out
    assert '"class_type": "KSampler"' in out
    assert "diffusion_models/flux1-dev.safetensors" in out
    assert "black-forest-labs/FLUX.1-dev" in out


def test_generate_dry_run_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_json(
        capsys,
        "generate",
        "flux-dev",
        "--prompt",
        "a cat",
        "--seed",
        "11",
        "--dry-run",
        "--json",
        "--lora",
        "me.safetensors:0.9:ohwx",
    )
    assert code == 0
    assert data["ok"] is True and data["dry_run"] is True
    assert data["workflow"] == "flux-dev" and data["seed"] == 11
    Graph.from_api(data["graph"]).validate()
    relpaths = {m["relpath"] for m in data["models"]}
    assert {"diffusion_models/flux1-dev.safetensors", "loras/me.safetensors"} <= relpaths
    assert data["input_images"] == []


def test_generate_dry_run_instantid_with_face_and_pose(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    face = png_file(tmp_path, "face.png")
    pose = png_file(tmp_path, "pose.png")
    code, data = run_json(
        capsys,
        "generate",
        "instantid",
        "--prompt",
        "astronaut",
        "--face",
        str(face),
        "--pose",
        str(pose),
        "--dry-run",
        "--json",
    )
    assert code == 0
    assert len(data["input_images"]) == 1  # same picture twice -> one upload
    applies = [n for n in data["graph"].values() if n["class_type"].startswith("ApplyInstantID")]
    assert "image_kps" in applies[0]["inputs"]  # the pose reference is used


def test_generate_dry_run_character_sheet_takes_one_prompt_per_view(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    face = png_file(tmp_path)
    code, data = run_json(
        capsys,
        "generate",
        "character-sheet",
        "--face",
        str(face),
        "--prompt",
        "front view",
        "--prompt",
        "profile view",
        "--dry-run",
        "--json",
    )
    assert code == 0
    saves = [n for n in data["graph"].values() if n["class_type"] == "SaveImage"]
    assert len(saves) == 2


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--size", "big"], "WIDTHxHEIGHT"),
        (["--size", "1000x768"], "multiple of 16"),
        (["--steps", "0"], "steps must be between 1 and 150"),
        (["--steps", "many"], "--steps"),
        (["--lora", "a.safetensors:strong"], "strength"),
        (["--lora", "a.safetensors:9"], "strength must be between -5 and 5"),
        (["--lora", "../evil.safetensors:1"], "plain file name"),
        (["--set", "nope=1"], "no parameter 'nope'"),
        (["--set", "noequals"], "FIELD=VALUE"),
        (["--set", "weight_dtype=fp4"], "weight_dtype"),
        (["--set", "guidance=lots"], "guidance"),
        (["--seed", "-1"], "seed"),
        (["--timeout", "-1"], "--timeout"),
        (["--face", "face.png"], "--face does not apply to flux-dev"),
    ],
)
def test_bad_values_exit_2_with_one_paragraph(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    code, out, err = run(capsys, "generate", "flux-dev", "--prompt", "x", "--dry-run", *argv)
    assert code == 2, err
    assert out == ""
    assert_one_paragraph(err)
    assert needle in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["generate", "flux-pro", "--prompt", "x"], "Unknown workflow"),
        (["generate", "flux-dev", "--dry-run"], "needs --prompt"),
        (["generate", "instantid", "--prompt", "x", "--dry-run"], "needs --face"),
        (
            ["generate", "instantid", "--prompt", "x", "--face", "/no/such.png", "--dry-run"],
            "no such file",
        ),
        (["generate", "flux-dev", "--prompt", "a", "--prompt", "b", "--dry-run"], "one --prompt"),
        (["frobnicate"], "invalid choice"),
        (["run", "/no/such/graph.json"], "Cannot read"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert_one_paragraph(err)
    assert needle in err


def test_run_rejects_ui_format_workflows(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    code, _, err = run(capsys, "run", str(ui))
    assert code == 2
    assert "Export (API)" in err


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys,
        "--debug",
        "generate",
        "flux-dev",
        "--prompt",
        "x",
        "--size",
        "1000x768",
        "--dry-run",
    )
    assert code == 2
    assert "Traceback" in err


# ---------------------------------------------------------------------------- configuration


def test_modal_without_url_exits_3_naming_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RYLA_GEN_PROVIDER", "modal")
    code, out, err = run(capsys, "models")
    assert code == 3
    assert out == ""
    assert_one_paragraph(err)
    assert "RYLA_GEN_MODAL_URL" in err


def test_config_error_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_json(capsys, "--provider", "modal", "doctor", "--json")
    assert code == 3
    assert data["ok"] is False
    assert data["error"]["variable"] == "RYLA_GEN_MODAL_URL"
    assert data["error"]["exit_code"] == 3


def test_malformed_setting_exits_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RYLA_GEN_TIMEOUT", "soon")
    code, _, err = run(capsys, "jobs", "status", "abc")
    assert code == 3
    assert "RYLA_GEN_TIMEOUT" in err


def test_dry_run_needs_no_configuration(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RYLA_GEN_PROVIDER", "modal")
    code, _, _ = run(capsys, "generate", "flux-schnell", "--prompt", "x", "--dry-run")
    assert code == 0


def test_unreachable_provider_exits_4(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RYLA_GEN_MAX_RETRIES", "0")
    url = f"http://127.0.0.1:{closed_port()}"
    code, data = run_json(capsys, "--comfyui-url", url, "doctor", "--json")
    assert code == 4
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["reachable"]["status"] == "fail"
    assert "ryla-gen comfyui start" in checks["reachable"]["detail"]
    code, _, err = run(capsys, "--comfyui-url", url, "models")
    assert code == 4
    assert_one_paragraph(err)
    assert "ryla-gen comfyui start" in err


def test_lora_upload_explains_where_loras_go_without_modal(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lora = tmp_path / "me.safetensors"
    lora.write_bytes(b"\0" * 16)
    code, _, err = run(capsys, "loras", "upload", str(lora))
    assert code == 2
    assert_one_paragraph(err)
    assert "models/loras" in err


# ---------------------------------------------------------------------------- subprocess


def test_subprocess_workflows_and_dry_run() -> None:
    proc = cli_subprocess("workflows")
    assert proc.returncode == 0, proc.stderr
    assert "flux-dev" in proc.stdout
    proc = cli_subprocess("generate", "z-image-turbo", "--prompt", "tea", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    Graph.from_api(data["graph"]).validate()


def test_subprocess_bad_flag_no_traceback() -> None:
    proc = cli_subprocess(
        "generate", "flux-dev", "--prompt", "x", "--size", "1000x768", "--dry-run"
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert_one_paragraph(proc.stderr)


def test_subprocess_modal_config_error() -> None:
    proc = cli_subprocess("doctor", env={"RYLA_GEN_PROVIDER": "modal"})
    assert proc.returncode == 3
    assert_one_paragraph(proc.stderr)
    assert "RYLA_GEN_MODAL_URL" in proc.stderr


# ---------------------------------------------------------------------------- real ComfyUI


@pytest.fixture
def comfy_env(monkeypatch: pytest.MonkeyPatch, comfyui_url: str) -> str:
    monkeypatch.setenv("RYLA_GEN_COMFYUI_URL", comfyui_url)
    return comfyui_url


def _tiny_file(tmp_path: Path, **kw: Any) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_graph(color=random.randrange(1 << 24), **kw)))
    return path


@pytest.mark.comfyui
def test_doctor_against_real_comfyui(capsys: pytest.CaptureFixture[str], comfy_env: str) -> None:
    code, out, _ = run(capsys, "doctor")
    assert code == 0, out
    assert "0.3.75" in out
    assert "test graph" in out
    assert "The comfyui provider works" in out
    code, data = run_json(capsys, "doctor", "--json")
    assert code == 0 and data["ok"] is True
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["reachable"]["status"] == "ok"
    assert checks["test graph"]["status"] == "ok"
    assert checks["test graph"]["seconds"] > 0
    assert checks["custom nodes"]["status"] in ("ok", "warn")  # InstantID nodes absent here
    assert checks["models: flux-dev"]["status"] == "ok"  # the test server has placeholders


@pytest.mark.comfyui
def test_doctor_subprocess_against_real_comfyui(comfyui_url: str) -> None:
    proc = cli_subprocess("doctor", "--json", env={"RYLA_GEN_COMFYUI_URL": comfyui_url})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True


@pytest.mark.comfyui
def test_run_tiny_graph_saves_png(
    capsys: pytest.CaptureFixture[str], comfy_env: str, tmp_path: Path
) -> None:
    graph = _tiny_file(tmp_path, width=80, height=48, batch_size=2)
    out_dir = tmp_path / "out"
    code, data = run_json(capsys, "run", str(graph), "--out", str(out_dir), "--json")
    assert code == 0
    assert data["ok"] is True and data["provider"] == "comfyui"
    assert len(data["images"]) == 2
    for img in data["images"]:
        path = Path(img["path"])
        assert path.parent == out_dir.resolve()
        assert path.read_bytes().startswith(b"\x89PNG")
        assert (img["width"], img["height"]) == (80, 48)
    assert data["timings"]["total"] > 0

    # Human output: paths and timings; a second identical run does not clobber files.
    code, out, _ = run(capsys, "run", str(graph), "--out", str(out_dir))
    assert code == 0
    assert "timings:" in out and str(out_dir) in out


@pytest.mark.comfyui
def test_run_subprocess_json(comfyui_url: str, tmp_path: Path) -> None:
    graph = _tiny_file(tmp_path)
    proc = cli_subprocess(
        "run",
        str(graph),
        "--out",
        str(tmp_path / "o"),
        "--json",
        env={"RYLA_GEN_COMFYUI_URL": comfyui_url},
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert Path(data["images"][0]["path"]).is_file()


@pytest.mark.comfyui
def test_generate_workflow_fails_at_the_loader_exit_1(
    capsys: pytest.CaptureFixture[str], comfy_env: str, tmp_path: Path
) -> None:
    # The test server's model files are placeholders: the graph validates, then fails.
    code, _, err = run(
        capsys,
        "generate",
        "flux-schnell",
        "--prompt",
        "x",
        "--size",
        "256x256",
        "--steps",
        "1",
        "--out",
        str(tmp_path),
        "--timeout",
        "120",
    )
    assert code == 1, err
    assert "Job failed" in err
    assert "Traceback" not in err


@pytest.mark.comfyui
def test_generate_with_missing_lora_exit_2(
    capsys: pytest.CaptureFixture[str], comfy_env: str, tmp_path: Path
) -> None:
    code, data = run_json(
        capsys,
        "generate",
        "flux-schnell",
        "--prompt",
        "x",
        "--lora",
        "nobody_has_this.safetensors:1",
        "--out",
        str(tmp_path),
        "--json",
    )
    assert code == 2
    assert data["ok"] is False
    assert data["error"]["type"] == "ModelMissingError"
    assert "nobody_has_this.safetensors" in data["error"]["message"]


@pytest.mark.comfyui
def test_timeout_exits_5(
    capsys: pytest.CaptureFixture[str], comfy_env: str, tmp_path: Path
) -> None:
    graph = tmp_path / "slow.json"
    graph.write_text(json.dumps(slow_graph(10)))
    code, _, err = run(capsys, "run", str(graph), "--timeout", "1", "--out", str(tmp_path))
    assert code == 5
    assert "cancelled" in err


@pytest.mark.comfyui
def test_models_and_loras_against_real_comfyui(
    capsys: pytest.CaptureFixture[str], comfy_env: str
) -> None:
    code, data = run_json(capsys, "models", "--workflow", "flux-dev", "--json")
    assert code == 0
    assert data["can_list"] is True
    assert all(m["present"] for m in data["models"])
    code, data = run_json(capsys, "models", "--workflow", "z-image-turbo", "--missing", "--json")
    assert code == 0
    assert data["models"] == []
    code, out, _ = run(capsys, "models")
    assert code == 0 and "flux1-dev.safetensors" in out
    code, data = run_json(capsys, "loras", "list", "--json")
    assert code == 0
    assert any(entry["name"] == "ryla_corrupt.safetensors" for entry in data["loras"])


@pytest.mark.comfyui
def test_jobs_status_and_cancel(
    capsys: pytest.CaptureFixture[str], comfy_env: str, tmp_path: Path
) -> None:
    code, data = run_json(
        capsys, "run", str(_tiny_file(tmp_path)), "--out", str(tmp_path), "--json"
    )
    assert code == 0
    job_id = data["job_id"]
    code, status = run_json(capsys, "jobs", "status", job_id, "--json")
    assert code == 0
    assert status["state"] == "completed" and status["id"] == job_id
    code, _, _ = run(capsys, "jobs", "cancel", job_id)  # finished: not an error
    assert code == 0
    code, _, err = run(capsys, "jobs", "status", "00000000-0000-0000-0000-000000000000")
    assert code == 2
    assert_one_paragraph(err)


# ---------------------------------------------------------------------------- comfyui start/stop


@pytest.fixture
def started_base(
    tmp_path: Path, comfyui_install: ComfyUIInstall
) -> Iterator[tuple[Path, Path, int]]:
    base = tmp_path / "base"
    port = closed_port()
    yield comfyui_install.home, base, port
    main(["comfyui", "stop", "--home", str(comfyui_install.home), "--base-dir", str(base)])


@pytest.mark.comfyui
def test_comfyui_start_status_stop(
    capsys: pytest.CaptureFixture[str], started_base: tuple[Path, Path, int]
) -> None:
    home, base, port = started_base
    where = ["--home", str(home), "--base-dir", str(base)]
    code, _, _ = run(capsys, "comfyui", "status", *where, "--port", str(port))
    assert code == 4
    proc = cli_subprocess("comfyui", "start", *where, "--port", str(port), timeout=300)
    assert proc.returncode == 0, proc.stderr
    url = f"http://127.0.0.1:{port}"
    assert url in proc.stdout
    state = json.loads((base / "comfyui.pid").read_text())
    assert state["port"] == port and (base / "comfyui.log").is_file()
    # The server outlived the command that started it.
    code, data = run_json(capsys, "comfyui", "status", *where, "--json")
    assert code == 0 and data["running"] and data["pid"] == state["pid"]
    assert data["comfyui_version"] == "0.3.75"
    # Starting again is a no-op; the placeholders of the manifest are NOT created.
    code, out, _ = run(capsys, "comfyui", "start", *where, "--port", str(port))
    assert code == 0 and "already running" in out
    assert not (base / "models" / "diffusion_models" / "flux1-dev.safetensors").exists()
    code, out, _ = run(capsys, "comfyui", "stop", *where)
    assert code == 0 and "stopped" in out
    assert not (base / "comfyui.pid").exists()
    code, _, _ = run(capsys, "comfyui", "status", *where, "--port", str(port))
    assert code == 4


# ---------------------------------------------------------------------------- modal (local)


def _safetensors_bytes() -> bytes:
    import struct

    header = json.dumps({"__metadata__": {"format": "pt"}}).encode()
    header += b" " * ((8 - len(header) % 8) % 8)
    return struct.pack("<Q", len(header)) + header


@pytest.fixture
def local_job_api(
    comfyui_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """``ryla-gen serve`` (the job API of the Modal app) over the test ComfyUI."""
    import time
    import urllib.request

    port = closed_port()
    loras = tmp_path / "loras"
    loras.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RYLA_GEN_")}
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["RYLA_GEN_API_TOKEN"] = "cli-test-token"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ryla_gen.cli",
            "serve",
            "--comfyui-url",
            comfyui_url,
            "--port",
            str(port),
            "--lora-dir",
            str(loras),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"ryla-gen serve did not start: {proc.stderr and proc.stderr.read()}"
                    ) from None
                time.sleep(0.2)
        monkeypatch.setenv("RYLA_GEN_PROVIDER", "modal")
        monkeypatch.setenv("RYLA_GEN_MODAL_URL", url)
        monkeypatch.setenv("RYLA_GEN_MODAL_TOKEN", "cli-test-token")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.comfyui
def test_modal_provider_doctor_loras_and_run(
    capsys: pytest.CaptureFixture[str],
    local_job_api: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, data = run_json(capsys, "doctor", "--json")
    assert code == 0, data
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["authenticated"]["status"] == "ok"
    assert checks["LoRA storage"]["status"] == "ok"
    assert checks["test graph"]["status"] == "ok"

    lora = tmp_path / "style.safetensors"
    lora.write_bytes(_safetensors_bytes())
    code, out, err = run(capsys, "loras", "upload", str(lora), "--name", "cli_style.safetensors")
    assert code == 0, err
    assert "cli_style.safetensors" in out
    code, data = run_json(capsys, "loras", "list", "--json")
    assert [entry["name"] for entry in data["loras"]] == ["cli_style.safetensors"]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    code, _, err = run(capsys, "loras", "upload", str(bad))
    assert code == 2  # rejected by the server: an input error
    assert_one_paragraph(err)
    code, _, _ = run(capsys, "loras", "delete", "cli_style.safetensors")
    assert code == 0
    code, _, err = run(capsys, "loras", "delete", "cli_style.safetensors")
    assert code == 2 and "no LoRA named" in err

    code, data = run_json(
        capsys, "run", str(_tiny_file(tmp_path)), "--out", str(tmp_path), "--json"
    )
    assert code == 0 and data["provider"] == "modal"
    assert Path(data["images"][0]["path"]).read_bytes().startswith(b"\x89PNG")

    monkeypatch.setenv("RYLA_GEN_MODAL_TOKEN", "wrong-token")
    code, data = run_json(capsys, "doctor", "--json")
    assert code == 4
    assert {c["name"]: c for c in data["checks"]}["authenticated"]["status"] == "fail"
