"""Read model files into the page cache in parallel while ComfyUI is still starting.

A cold container's first Flux Dev image spends most of its time reading 31 GiB of
weights, one file after another, through ComfyUI's memory-mapped loader (about 1 GB/s
from a cold disk in BENCHMARKS.md). Many large reads in flight at once go faster on
NVMe and network volumes alike, and they can overlap ComfyUI's own start (imports and
node loading). With ``RYLA_GEN_PREFETCH=1`` the worker starts :func:`prefetch` for the
warm-up workflows' files at the same moment as ComfyUI, so the warm-up job then loads
from memory.

Off by default, because on the benchmark machine's local disk it did not pay: 4 threads
read the 33.7 GB at 1.61 GB/s (ComfyUI's own loader: ~1 GB/s), but ComfyUI's start, itself
reading Python packages from the same cold disk, went from ~17-24 s to 36 s, and process
start -> first image came to 55.8 s against 50.6 s without (H200 VM, BENCHMARKS.md). Storage
with more parallelism (network volumes) may differ: measure before turning it on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PrefetchReport", "prefetch", "prefetch_in_background", "workflow_files"]

log = logging.getLogger("ryla_gen_modal.prefetch")

CHUNK = 16 * 2**20
"""Bytes per read."""


@dataclass
class PrefetchReport:
    """What :func:`prefetch` read."""

    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    missing: list[str] = field(default_factory=list)

    @property
    def gb_per_s(self) -> float:
        """Throughput in GB/s (10^9 bytes)."""
        return self.bytes / 1e9 / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 2),
            "gb_per_s": round(self.gb_per_s, 2),
            "missing": list(self.missing),
        }


def workflow_files(workflows: Iterable[str], models_dirs: Iterable[Path]) -> list[Path]:
    """The existing model files of ``workflows`` (manifest names), first folder that has each."""
    from ryla_gen.models import for_workflow

    dirs = list(models_dirs)
    out: list[Path] = []
    for name in workflows:
        for f in for_workflow(name):
            if not f.in_graph:
                continue
            for d in dirs:
                p = d / f.relpath
                if p.is_file() and p not in out:
                    out.append(p)
                    break
    return out


def prefetch(paths: Iterable[os.PathLike[str] | str], *, threads: int = 4) -> PrefetchReport:
    """Read every file once, ``threads`` chunks in flight; returns what was read.

    Missing or unreadable files are reported, never raised: prefetching only saves time.
    """
    report = PrefetchReport()
    jobs: list[tuple[str, int, int]] = []
    for p in paths:
        path = os.fspath(p)
        try:
            size = os.path.getsize(path)
        except OSError:
            report.missing.append(path)
            continue
        report.files += 1
        jobs += [(path, off, min(CHUNK, size - off)) for off in range(0, size, CHUNK)]
    local = threading.local()
    lock = threading.Lock()

    def read(job: tuple[str, int, int]) -> int:
        path, offset, length = job
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = bytearray(CHUNK)
        try:
            fd = os.open(path, os.O_RDONLY)  # one open per 16 MiB: negligible
            try:
                return os.preadv(fd, [memoryview(buf)[:length]], offset)
            finally:
                os.close(fd)
        except OSError as exc:
            with lock:
                if path not in report.missing:
                    report.missing.append(path)
            log.warning("prefetch of %s failed: %s", path, exc)
            return 0

    t0 = time.monotonic()
    # Offsets interleaved across files, so every file progresses at once.
    jobs.sort(key=lambda j: (j[1], j[0]))
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="prefetch") as pool:
        report.bytes = sum(pool.map(read, jobs))
    report.seconds = time.monotonic() - t0
    return report


def prefetch_in_background(
    paths: list[Path], *, threads: int = 4
) -> tuple[threading.Thread, dict[str, object]]:
    """Start :func:`prefetch` in a daemon thread; the dict gets the report when done."""
    result: dict[str, object] = {}

    def run() -> None:
        report = prefetch(paths, threads=threads)
        result.update(report.as_dict())
        log.info(
            "prefetched %d files, %.1f GB in %.1f s (%.2f GB/s)",
            report.files,
            report.bytes / 1e9,
            report.seconds,
            report.gb_per_s,
        )

    thread = threading.Thread(target=run, name="ryla-prefetch", daemon=True)
    thread.start()
    return thread, result
