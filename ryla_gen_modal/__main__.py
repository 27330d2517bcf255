"""``python -m ryla_gen_modal serve``: the job API on your own machine, over any ComfyUI.

::

    export RYLA_GEN_API_TOKEN=$(python -c "import secrets; print(secrets.token_urlsafe(32))")
    python -m ryla_gen_modal serve --comfyui-url http://127.0.0.1:8188 --port 8000 \\
        --models-dir ~/ComfyUI/models --lora-dir ~/ComfyUI/models/loras

The token comes from ``RYLA_GEN_API_TOKEN`` (never from the command line, where other
users could read it); the server refuses to start without one unless
``--insecure-no-auth`` is given. Clients then use ``RYLA_GEN_PROVIDER=modal`` with
``RYLA_GEN_MODAL_URL=http://127.0.0.1:8000`` and the same token.

The GPU worker's speed options apply here too, read from the same variables
(``RYLA_GEN_LORA_MODE``, ``RYLA_GEN_COMPILE``, ``RYLA_GEN_LORA_RANK``; see
:mod:`ryla_gen_modal.tuning`): graphs are rewritten before they reach ComfyUI. With
``RYLA_GEN_LORA_MODE=unmerged`` that ComfyUI must load ryla-gen's nodes: add
``python -m ryla_gen_modal nodes-dir`` to its ``custom_nodes`` paths.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

log = logging.getLogger("ryla_gen_modal")


def build_parser() -> argparse.ArgumentParser:
    """The command line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m ryla_gen_modal",
        description="Serve the ryla-gen job API in front of a ComfyUI server.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the job API (uvicorn) over a ComfyUI server")
    serve.add_argument(
        "--comfyui-url", required=True, help="ComfyUI base URL, e.g. http://127.0.0.1:8188"
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument(
        "--lora-dir", help="folder for uploaded LoRAs (one of ComfyUI's loras folders)"
    )
    serve.add_argument(
        "--models-dir",
        help="ComfyUI's models folder: enables GET /models and early missing-model errors",
    )
    serve.add_argument(
        "--max-concurrency", type=int, default=2, help="jobs handed to ComfyUI at once"
    )
    serve.add_argument(
        "--max-queued", type=int, default=256, help="unfinished jobs accepted at once"
    )
    serve.add_argument("--job-timeout", type=float, default=1800.0, help="seconds one job may take")
    serve.add_argument(
        "--max-lora-bytes",
        type=int,
        default=2 * 1024**3,
        help="largest LoRA upload (default 2 GiB)",
    )
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve without a token (only sensible on loopback)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub.add_parser(
        "nodes-dir",
        help="print the folder of ryla-gen's ComfyUI nodes (for ComfyUI's custom_nodes paths)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "nodes-dir":
        from ryla_gen_modal.tuning import COMFY_NODES_DIR

        print(COMFY_NODES_DIR)
        return 0
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    token = os.environ.get("RYLA_GEN_API_TOKEN") or None
    if token is None and not args.insecure_no_auth:
        print(
            "error: set RYLA_GEN_API_TOKEN to the token clients must send "
            "(or pass --insecure-no-auth to serve without authentication).",
            file=sys.stderr,
        )
        return 2
    if token is not None and args.insecure_no_auth:
        print(
            "error: RYLA_GEN_API_TOKEN is set and --insecure-no-auth was given; pick one.",
            file=sys.stderr,
        )
        return 2
    if token is None and not _is_loopback(args.host):
        log.warning(
            "serving WITHOUT authentication on %s: anyone who can reach it can use it", args.host
        )

    from ryla_gen_modal.tuning import WorkerTuning

    try:
        tuning = WorkerTuning.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if tuning.active:
        log.info("worker options: %s", tuning)

    import uvicorn

    from ryla_gen.providers.comfyui import ComfyUIProvider
    from ryla_gen_modal.jobs import LocalExecutor
    from ryla_gen_modal.server import create_app

    executor = LocalExecutor(
        ComfyUIProvider(args.comfyui_url, graph_transform=tuning.apply if tuning.active else None),
        max_concurrency=args.max_concurrency,
        max_queued=args.max_queued,
        job_timeout=args.job_timeout,
    )
    app = create_app(
        executor,
        token=token,
        lora_dir=args.lora_dir,
        models_dir=args.models_dir,
        max_lora_bytes=args.max_lora_bytes,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
