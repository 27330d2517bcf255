"""InstantID: an SDXL image of the person in a reference photo (optionally in another pose).

    python examples/instantid_face.py --face me.jpg --prompt "me as an astronaut" --out out
    python examples/instantid_face.py --dry-run     # uses a drawn placeholder face

The face image is validated (a real, complete picture), converted to PNG and uploaded
under a content-addressed name, so re-running uploads nothing new. A pose image copies
the head pose (ApplyInstantIDAdvanced with image_kps).
"""

from __future__ import annotations

import argparse
import sys

from ryla_gen import Client, RylaGenError
from ryla_gen.workflows import InputImage, InstantID, example_face


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--face", help="photo of the face (required unless --dry-run)")
    parser.add_argument("--pose", help="optional photo whose head pose to copy")
    parser.add_argument("--prompt", default="portrait photo of a person, studio lighting")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", default="out")
    parser.add_argument("--dry-run", action="store_true", help="build and validate only")
    args = parser.parse_args(argv)

    if args.face:
        face = InputImage.load(args.face)
    elif args.dry_run:
        face = example_face(256)  # a drawing: fine for validation, not for a real run
    else:
        parser.error("--face PATH is needed for a real run")
    workflow = InstantID(
        prompt=args.prompt,
        face_image=face,
        pose_image=InputImage.load(args.pose) if args.pose else None,
        seed=args.seed,
    )
    graph = workflow.to_graph()
    graph.validate()
    uploads = workflow.input_images()
    print(f"{workflow.name}: valid graph of {len(graph)} nodes, seed {workflow.seed}")
    print(f"  uploads: {', '.join(f'{n} ({len(b)} bytes)' for n, b in uploads.items())}")

    if args.dry_run:
        for model in workflow.required_models():
            print(f"  needs models/{model.relpath}")
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
