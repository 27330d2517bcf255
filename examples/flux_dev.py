"""Flux Dev text-to-image: build a typed request, validate it, run it, save the images.

    python examples/flux_dev.py --prompt "a lighthouse on a cliff at dusk" --out out
    python examples/flux_dev.py --dry-run          # build + validate only, send nothing

The provider comes from the environment (RYLA_GEN_PROVIDER, default: the local ComfyUI at
http://127.0.0.1:8188); see examples/switch_provider.py.
"""

from __future__ import annotations

import argparse
import sys

from ryla_gen import Client, RylaGenError
from ryla_gen.workflows import FluxDev


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="a lighthouse on a cliff at dusk, 35mm photo")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="default: random")
    parser.add_argument("--fp8", action="store_true", help="fp8 weights: half the GPU memory")
    parser.add_argument("--out", default="out")
    parser.add_argument("--dry-run", action="store_true", help="build and validate only")
    args = parser.parse_args(argv)

    # Every field is checked here: a bad width or steps value raises a ValidationError
    # that names the field and its allowed range.
    workflow = FluxDev(
        prompt=args.prompt,
        width=args.width,
        height=args.height,
        steps=args.steps,
        seed=args.seed,
        weight_dtype="fp8_e4m3fn" if args.fp8 else "default",
    )
    graph = workflow.to_graph()
    graph.validate()  # against ComfyUI's own node schemas (bundled): raises on any problem

    if args.dry_run:
        print(f"{workflow.name}: valid graph of {len(graph)} nodes, seed {workflow.seed}")
        for model in workflow.required_models():
            print(f"  needs models/{model.relpath}  (from {model.repo_id})")
        print("  nodes: " + ", ".join(n.class_type for n in graph.nodes.values()))
        print("  (`ryla-gen graph flux-dev --prompt ...` prints the whole API-format JSON)")
        return 0

    try:
        with Client.from_env() as client:
            result = client.generate(workflow)
    except RylaGenError as exc:  # every ryla-gen error says what to do about it
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in result.save(args.out):
        print(f"saved {path}")
    print(f"seed {result.seed}, {result.timings}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
