"""LoRAs with trigger words: stack two LoRAs on Flux Dev and let ryla-gen add their triggers.

    python examples/lora_trigger_words.py --dry-run
    python examples/lora_trigger_words.py --person me.safetensors --trigger "ohwx woman"

Each LoRA's ``trigger`` is put in front of the prompt once (not again when the prompt
already has it). A LoRA without ``clip_strength`` patches only the diffusion model
(``LoraLoaderModelOnly``); with it, the text encoder too (``LoraLoader``). The files
must be in the server's models/loras folder (``ryla-gen loras upload`` on Modal).
"""

from __future__ import annotations

import argparse
import sys

from ryla_gen import Client, RylaGenError
from ryla_gen.workflows import FluxDev, LoRA, with_triggers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--prompt", default="portrait photo in a sunlit cafe, shallow depth of field"
    )
    parser.add_argument("--person", default="example_person.safetensors", help="character LoRA")
    parser.add_argument("--trigger", default="ohwx woman", help="its trigger words")
    parser.add_argument("--style", default="example_film.safetensors", help="style LoRA")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", default="out")
    parser.add_argument("--dry-run", action="store_true", help="build and validate only")
    args = parser.parse_args(argv)

    loras = [
        LoRA(name=args.person, strength=1.0, clip_strength=0.6, trigger=args.trigger),
        LoRA(name=args.style, strength=0.7, trigger="film grain"),
    ]
    workflow = FluxDev(prompt=args.prompt, loras=loras, seed=args.seed)
    graph = workflow.to_graph()
    graph.validate()

    print("prompt sent:", with_triggers(workflow.prompt, loras))
    # A trigger already in the prompt is not repeated:
    print("no repeat:  ", with_triggers(f"{args.trigger} reading a book", loras))
    loaders = [n for n in graph.nodes.values() if n.class_type.startswith("LoraLoader")]
    for node in loaders:
        print(f"  node {node.id}: {node.class_type}({node.inputs['lora_name']})")

    if args.dry_run:
        missing = [m.relpath for m in workflow.required_models() if m.folder == "loras"]
        print(f"valid graph of {len(graph)} nodes; LoRA files it needs: {', '.join(missing)}")
        return 0

    try:
        with Client.from_env() as client:
            result = client.generate(workflow)
    except RylaGenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in result.save(args.out):
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
