#!/usr/bin/env python
"""Regenerate the bundled ComfyUI node schemas in ``ryla_gen/schemas/``.

Core schema (``core.json``: the full ``GET /object_info``)::

    python scripts/dump_node_schemas.py                     # starts a server itself
    python scripts/dump_node_schemas.py --url http://127.0.0.1:8188

Custom nodes (``<name>.json``: ``GET /object_info/<Class>`` for every class whose
``python_module`` starts with ``custom_nodes.``, one object keyed by class)::

    python scripts/dump_node_schemas.py --no-core --custom-name instantid \\
        --custom-nodes /path/to/ComfyUI_InstantID

Without ``--url`` a server is installed/started with ``ryla_gen.testing``; its models and
input folders then hold the placeholder files the bundled schemas were captured with
(file-name lists in the schemas depend on them), so on an unchanged ComfyUI the output is
byte-identical to the bundled files. Output format: ``json.dumps(indent=2,
sort_keys=True)`` with no trailing newline, as in the bundled files.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
import urllib.parse
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # running from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

from ryla_gen.testing import (  # noqa: E402
    ComfyUIServer,
    install_comfyui,
    manifest_placeholders,
)

SCHEMA_DIR = REPO_ROOT / "ryla_gen" / "schemas"

#: Model placeholders present when the bundled schemas were captured
#: (combo lists of model files in /object_info show what was on disk at capture time).
CAPTURE_PLACEHOLDERS: tuple[tuple[str, str], ...] = (
    ("checkpoints", "sd_xl_base_1.0.safetensors"),
    ("controlnet", "instantid/diffusion_pytorch_model.safetensors"),
    ("instantid", "ip-adapter.bin"),
    ("pulid", "pulid_flux_v0.9.1.safetensors"),
    ("diffusion_models", "flux1-dev.safetensors"),
    ("vae", "ae.safetensors"),
    ("text_encoders", "clip_l.safetensors"),
    ("text_encoders", "t5xxl_fp16.safetensors"),
)
#: Modules shipped in ComfyUI's own custom_nodes folder (part of core.json, not a plugin).
BUILTIN = frozenset({"custom_nodes.websocket_image_save"})
#: 64x64 PNGs present in ``input/`` at capture time.
CAPTURE_INPUT_IMAGES: tuple[str, ...] = ("example.png", "face_ref.png")


def dumps(data: Any) -> str:
    """Serialise exactly like the bundled schema files."""
    return json.dumps(data, indent=2, sort_keys=True)


def write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = dumps(data)
    old = path.read_text(encoding="utf-8") if path.is_file() else None
    path.write_text(text, encoding="utf-8")
    state = "unchanged" if old == text else ("updated" if old is not None else "created")
    print(f"{path}: {len(data)} node classes ({state})")


def object_info(client: httpx.Client) -> dict[str, Any]:
    resp = client.get("/object_info")
    resp.raise_for_status()
    data: dict[str, Any] = resp.json()
    return data


def custom_object_info(client: httpx.Client, module: str | None) -> dict[str, Any]:
    """``/object_info/<Class>`` for the custom-node classes (of ``module`` if given)."""

    def wanted(python_module: str) -> bool:
        if module is None:
            return python_module.startswith("custom_nodes.") and python_module not in BUILTIN
        root = f"custom_nodes.{module}"
        return python_module == root or python_module.startswith(root + ".")

    classes = sorted(
        name
        for name, info in object_info(client).items()
        if wanted(str(info.get("python_module", "")))
    )
    out: dict[str, Any] = {}
    for name in classes:
        resp = client.get(f"/object_info/{urllib.parse.quote(name, safe='')}")
        resp.raise_for_status()
        out.update(resp.json())
    return out


def _png_64() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buf, format="PNG")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--url", help="a running ComfyUI; default: start one via ryla_gen.testing")
    parser.add_argument("--home", type=Path, default=None, help="ComfyUI install root")
    parser.add_argument("--out-dir", type=Path, default=SCHEMA_DIR, help="default: %(default)s")
    parser.add_argument("--no-core", action="store_true", help="do not write core.json")
    parser.add_argument(
        "--custom-name", help="write <out-dir>/<NAME>.json with the custom-node classes"
    )
    parser.add_argument(
        "--custom-module",
        help="only classes of python_module custom_nodes.<MODULE> (the custom-node folder)",
    )
    parser.add_argument(
        "--custom-nodes",
        type=Path,
        nargs="*",
        default=[],
        help="custom-node folders to load into the started server (not with --url)",
    )
    parser.add_argument(
        "--manifest-placeholders",
        action="store_true",
        help="also add placeholders for ryla_gen.models' manifest (changes file-name lists)",
    )
    args = parser.parse_args(argv)
    if args.url and args.custom_nodes:
        parser.error("--custom-nodes needs a server started here (drop --url)")
    if args.no_core and not args.custom_name:
        parser.error("nothing to do: --no-core without --custom-name")

    with ExitStack() as stack:
        url = args.url
        if url is None:
            install = install_comfyui(args.home)
            placeholders = list(CAPTURE_PLACEHOLDERS)
            if args.manifest_placeholders:
                placeholders += [p for p in manifest_placeholders() if p not in placeholders]
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ryla-dump-")))
            for image in CAPTURE_INPUT_IMAGES:
                (base / "input").mkdir(parents=True, exist_ok=True)
                (base / "input" / image).write_bytes(_png_64())
            server = ComfyUIServer(
                install, base_dir=base, placeholders=placeholders, custom_nodes=args.custom_nodes
            )
            started = time.monotonic()
            stack.callback(server.stop)
            server.start()
            print(f"ComfyUI started at {server.url} in {time.monotonic() - started:.1f} s")
            url = server.url
        client = stack.enter_context(httpx.Client(base_url=url.rstrip("/"), timeout=120))
        version = client.get("/system_stats").json()["system"]["comfyui_version"]
        print(f"ComfyUI {version} at {url}")

        if not args.no_core:
            write(args.out_dir / "core.json", object_info(client))
        if args.custom_name:
            custom = custom_object_info(client, args.custom_module)
            if not custom:
                print(
                    "no custom-node classes found (python_module custom_nodes.*)", file=sys.stderr
                )
                return 1
            write(args.out_dir / f"{args.custom_name}.json", custom)
    return 0


if __name__ == "__main__":
    sys.exit(main())
