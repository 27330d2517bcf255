"""Character sheet: several views of one identity (front, profile, full body) in one job.

    python examples/character_sheet.py --face me.jpg --out out
    python examples/character_sheet.py --dry-run

Models, LoRAs and the face are loaded once; each view gets its own sampler (seed + i)
and SaveImage, so one job returns one image per view, in order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ryla_gen import Client, RylaGenError
from ryla_gen.workflows import CharacterSheet, InputImage, example_face

VIEWS = [
    "front view portrait of a person, neutral grey background",
    "profile view of a person, neutral grey background",
    "full body shot of a person standing, neutral grey background",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--face", help="photo of the face (required unless --dry-run)")
    parser.add_argument("--view", action="append", help="one prompt per view (repeatable)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", default="out")
    parser.add_argument("--dry-run", action="store_true", help="build and validate only")
    args = parser.parse_args(argv)

    if args.face:
        face = InputImage.load(args.face)
    elif args.dry_run:
        face = example_face(256)
    else:
        parser.error("--face PATH is needed for a real run")
    views = args.view or VIEWS
    workflow = CharacterSheet(face_image=face, views=views, seed=args.seed)
    graph = workflow.to_graph()
    graph.validate()
    saves = [n for n in graph.nodes.values() if n.class_type == "SaveImage"]
    print(f"{workflow.name}: {len(views)} views, {len(graph)} nodes, {len(saves)} SaveImage nodes")

    if args.dry_run:
        return 0

    try:
        with Client.from_env() as client:
            result = client.generate(workflow)
    except RylaGenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    paths = result.save(args.out)
    for view, path in zip(views, paths, strict=False):
        print(f"{path}: {view}")
    sheet = Path(args.out) / f"sheet_{result.seed}.png"
    result.grid(columns=len(views)).save(sheet)  # all views side by side
    print(f"sheet: {sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
