"""Many jobs at once with AsyncClient, at most N in flight (asyncio.Semaphore).

    python examples/async_batch.py --prompts prompts.txt --concurrency 4 --out out
    python examples/async_batch.py --dry-run                 # build + validate only
    python examples/async_batch.py --tiny 8 --concurrency 3  # model-free graphs, runs anywhere

Each job gets its own deadline; one failure does not stop the others (``return_exceptions``).
The semaphore bounds how many jobs are queued at the provider at a time, so a large batch
does not flood a shared ComfyUI queue or a RunPod endpoint's concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

from ryla_gen import AsyncClient, GenerationResult
from ryla_gen.testing import tiny_graph
from ryla_gen.workflows import FluxSchnell

PROMPTS = [
    "a red fox in fresh snow",
    "a lighthouse on a cliff at dusk",
    "isometric city diorama, soft light",
    "a cup of coffee on a wooden table, morning light",
    "neon street at night, rain",
    "a paper boat on a pond",
]


async def run_one(
    client: AsyncClient, limit: asyncio.Semaphore, n: int, work: Any, out: Path, timeout: float
) -> GenerationResult:
    async with limit:  # at most --concurrency jobs in flight
        started = time.monotonic()
        result = await client.generate(work, timeout=timeout)
        paths = result.save(out)
        print(f"[{n}] {paths[0]} in {time.monotonic() - started:.2f} s (job {result.job_id})")
        return result


async def run_batch(works: list[Any], concurrency: int, out: Path, timeout: float) -> int:
    limit = asyncio.Semaphore(concurrency)
    async with AsyncClient.from_env() as client:
        results = await asyncio.gather(
            *(run_one(client, limit, i, w, out, timeout) for i, w in enumerate(works)),
            return_exceptions=True,
        )
    failed = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
    for i, exc in failed:
        print(f"[{i}] failed: {exc}", file=sys.stderr)
    print(f"{len(works) - len(failed)}/{len(works)} jobs succeeded")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", help="a text file, one prompt per line")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per job")
    parser.add_argument("--tiny", type=int, metavar="N", help="run N model-free graphs instead")
    parser.add_argument("--out", default="out")
    parser.add_argument("--dry-run", action="store_true", help="build and validate only")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")

    works: list[Any]
    if args.tiny:
        # EmptyImage -> SaveImage in a random colour: no model files, milliseconds each.
        works = [
            tiny_graph(color=random.randrange(1 << 24), prefix="batch") for _ in range(args.tiny)
        ]
    else:
        lines = Path(args.prompts).read_text().splitlines() if args.prompts else PROMPTS
        prompts = [p.strip() for p in lines if p.strip()]
        works = [FluxSchnell(prompt=p, seed=i) for i, p in enumerate(prompts)]
        for w in works:
            w.to_graph().validate()

    if args.dry_run:
        print(f"{len(works)} valid requests; would run {args.concurrency} at a time")
        return 0
    return asyncio.run(run_batch(works, args.concurrency, Path(args.out), args.timeout))


if __name__ == "__main__":
    sys.exit(main())
