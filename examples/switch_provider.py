"""The same code on any provider: only the environment changes.

    # the local ComfyUI (default) or any ComfyUI server
    RYLA_GEN_COMFYUI_URL=http://127.0.0.1:8188 python examples/switch_provider.py
    # the ryla-gen app on Modal (or its local twin, `ryla-gen serve`)
    RYLA_GEN_PROVIDER=modal RYLA_GEN_MODAL_URL=https://...modal.run \\
        RYLA_GEN_MODAL_TOKEN=... python examples/switch_provider.py
    # RunPod serverless (worker-comfyui)
    RYLA_GEN_PROVIDER=runpod RYLA_GEN_RUNPOD_ENDPOINT_ID=... RYLA_GEN_RUNPOD_API_KEY=... \\
        python examples/switch_provider.py

    python examples/switch_provider.py --dry-run   # show the configuration, send nothing
    python examples/switch_provider.py --tiny      # a model-free graph: checks the provider

A missing or malformed variable raises ConfigurationError naming the variable.
"""

from __future__ import annotations

import argparse
import sys

from ryla_gen import Client, ConfigurationError, RylaGenError, Settings
from ryla_gen.testing import tiny_graph
from ryla_gen.workflows import FluxDev


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="a lighthouse on a cliff at dusk")
    parser.add_argument("--tiny", action="store_true", help="run a model-free graph instead")
    parser.add_argument("--out", default="out")
    parser.add_argument("--dry-run", action="store_true", help="show the configuration only")
    args = parser.parse_args(argv)

    try:
        settings = Settings.load()  # RYLA_GEN_* variables; what Client.from_env() uses
    except ConfigurationError as exc:
        print(f"configuration error ({exc.variable}): {exc}", file=sys.stderr)
        return 3
    where = {
        "comfyui": settings.comfyui_url,
        "modal": settings.modal_url,
        "runpod": f"endpoint {settings.runpod_endpoint_id}",
    }[settings.provider]
    print(f"provider: {settings.provider} ({where}), timeout {settings.timeout} s")

    work = tiny_graph() if args.tiny else FluxDev(prompt=args.prompt)
    if args.dry_run:
        if isinstance(work, FluxDev):
            work.to_graph().validate()
            print(f"valid {work.name} graph; nothing sent (--dry-run)")
        return 0

    try:
        with Client(settings=settings) as client:
            result = client.generate(work)
    except RylaGenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in result.save(args.out):
        print(f"saved {path} via {result.provider} in {result.timings.total:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
