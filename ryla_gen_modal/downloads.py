"""Download manifest model files into a ComfyUI ``models/`` folder, safely and only once.

:func:`download_models` fetches :class:`ryla_gen.models.ModelFile` entries from a
Hugging Face style hub (``{base_url}/{repo_id}/resolve/{revision}/{path_in_repo}``):

* **Parallel**: up to ``max_workers`` files at once.
* **Atomic**: bytes go to a hidden ``.<name>.part`` file next to the target, which is
  renamed over the final name only after its size and SHA-256 check out. ComfyUI never
  sees a partial file under a model's name.
* **Resumable**: an interrupted download keeps its ``.part`` file; the next attempt (or
  run) asks for the rest with an HTTP ``Range`` request, and starts over if the server
  ignores it.
* **Verified and idempotent**: a file already present with the right size (and SHA-256,
  where the manifest knows it) is skipped, so a second run downloads 0 bytes. A file
  that fails the check is fetched again. Hashing a 24 GB file takes a while, so a
  successful check is remembered in ``models/.ryla-gen/verified/`` together with the
  file's size and modification time; any change to the file invalidates it.
* **Gated repositories** need a token (``token=`` or ``HF_TOKEN``); without one the
  file fails at once with a message that says how to provide it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from ryla_gen.models import HF_BASE_URL, ModelFile

__all__ = [
    "DEFAULT_ATTEMPTS",
    "HF_SECRET_HINT",
    "DownloadError",
    "DownloadReport",
    "download_models",
    "target_path",
]

log = logging.getLogger("ryla_gen_modal.downloads")

DEFAULT_ATTEMPTS = 4
"""Tries per file before giving up (each retry resumes where the last one stopped)."""

HF_SECRET_HINT = (
    "Accept the model's licence on its Hugging Face page, create a read token, and make it "
    "available as HF_TOKEN: on Modal run `modal secret create huggingface-secret "
    "HF_TOKEN=hf_...` (the secret the ryla-gen app's download_models function uses) and "
    "download again; locally export HF_TOKEN=hf_..."
)
"""What to do when a gated file cannot be downloaded."""

_CHUNK = 1024 * 1024
_MARKER_DIR = ".ryla-gen/verified"


class DownloadError(RuntimeError):
    """One or more files could not be downloaded; ``report`` says which and why."""

    def __init__(self, message: str, *, report: DownloadReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class DownloadReport:
    """What :func:`download_models` did."""

    bytes_downloaded: int = 0
    """Bytes received over the network in this run (resumed bytes are not counted twice)."""
    files_downloaded: list[str] = field(default_factory=list)
    """``folder/filename`` of every file fetched (wholly or partly) in this run."""
    files_skipped: list[str] = field(default_factory=list)
    """Files already present and correct."""
    files_failed: dict[str, str] = field(default_factory=dict)
    """File -> why it failed."""
    files_refetched: list[str] = field(default_factory=list)
    """Files that were present but wrong (size or SHA-256) and were fetched again."""
    seconds: float = 0.0
    """Wall time of the run."""

    @property
    def ok(self) -> bool:
        """True when no file failed."""
        return not self.files_failed

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-friendly data."""
        return {
            "bytes_downloaded": self.bytes_downloaded,
            "files_downloaded": list(self.files_downloaded),
            "files_skipped": list(self.files_skipped),
            "files_failed": dict(self.files_failed),
            "files_refetched": list(self.files_refetched),
            "seconds": round(self.seconds, 3),
        }


class _FileFailed(Exception):
    """Internal: a file failed for a reason that retrying will not fix."""


class _Retry(Exception):
    """Internal: a file failed for a reason that retrying may fix."""


def target_path(models_dir: Path, entry: ModelFile) -> Path:
    """Where ``entry`` lives below ``models_dir``, refusing anything that escapes it."""
    root = models_dir.resolve()
    path = (root / entry.folder / entry.filename).resolve()
    if root not in path.parents:
        raise ValueError(f"{entry.relpath} would be written outside {root}")
    return path


def download_models(
    manifest_entries: Iterable[ModelFile],
    models_dir: str | os.PathLike[str],
    *,
    token: str | None = None,
    base_url: str = HF_BASE_URL,
    max_workers: int = 4,
    client: httpx.Client | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    retry_delay: float = 1.0,
    rehash: bool = False,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> DownloadReport:
    """Make every entry present and correct under ``models_dir``; return what was done.

    Args:
        manifest_entries: The files to fetch (duplicates are fetched once).
        models_dir: ComfyUI's ``models`` folder (or a volume with the same layout).
        token: Hugging Face token for gated repositories; ``HF_TOKEN`` (or
            ``HUGGING_FACE_HUB_TOKEN``) when None.
        base_url: The hub, ``https://huggingface.co`` by default.
        max_workers: Files downloaded at once.
        client: An ``httpx.Client`` to use (closed by the caller).
        attempts: Tries per file (retries resume with ``Range``).
        retry_delay: Seconds before the first retry; doubles each time.
        rehash: Ignore remembered checks and hash every present file again.
        progress: Called as ``progress(relpath, bytes_so_far, total_or_None)``.

    Raises:
        DownloadError: after every other file was handled, if any file failed; its
            ``report`` lists the failures (a gated file without a token says how to
            add one).
    """
    started = time.monotonic()
    root = Path(models_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    if token is None:
        token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None
    unique: dict[str, ModelFile] = {}
    for entry in manifest_entries:
        unique.setdefault(entry.relpath, entry)
    report = DownloadReport()
    lock = threading.Lock()
    own_client = client is None
    http = client or httpx.Client(
        follow_redirects=True,
        timeout=httpx.Timeout(60.0, connect=30.0),
        headers={"User-Agent": "ryla-gen-downloader"},
    )
    job = _Downloader(
        root=root,
        http=http,
        token=token,
        base_url=base_url.rstrip("/"),
        report=report,
        lock=lock,
        attempts=max(1, attempts),
        retry_delay=retry_delay,
        rehash=rehash,
        progress=progress,
    )
    try:
        with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
            list(pool.map(job.fetch, unique.values()))
    finally:
        if own_client:
            http.close()
    report.seconds = time.monotonic() - started
    if report.files_failed:
        lines = "\n".join(f"  - {k}: {v}" for k, v in sorted(report.files_failed.items()))
        raise DownloadError(
            f"{len(report.files_failed)} of {len(unique)} model files could not be "
            f"downloaded:\n{lines}",
            report=report,
        )
    return report


@dataclass
class _Downloader:
    root: Path
    http: httpx.Client
    token: str | None
    base_url: str
    report: DownloadReport
    lock: threading.Lock
    attempts: int
    retry_delay: float
    rehash: bool
    progress: Callable[[str, int, int | None], None] | None

    # -- one file ------------------------------------------------------------------------

    def fetch(self, entry: ModelFile) -> None:
        rel = entry.relpath
        try:
            self._fetch(entry)
        except _FileFailed as exc:
            self._record_failure(rel, str(exc))
        except Exception as exc:  # report every file; never lose the others' results
            log.exception("downloading %s failed", rel)
            self._record_failure(rel, f"{type(exc).__name__}: {exc}")

    def _record_failure(self, rel: str, why: str) -> None:
        with self.lock:
            self.report.files_failed[rel] = why
        log.error("%s: %s", rel, why)

    def _fetch(self, entry: ModelFile) -> None:
        rel = entry.relpath
        dest = target_path(self.root, entry)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            problem = self._check_present(entry, dest)
            if problem is None:
                with self.lock:
                    self.report.files_skipped.append(rel)
                log.info("%s: present and verified", rel)
                return
            log.warning("%s: present but %s; fetching it again", rel, problem)
            with self.lock:
                self.report.files_refetched.append(rel)
        if entry.repo_id is None or entry.path_in_repo is None:
            raise _FileFailed(
                "the manifest does not say where to download it; copy it into the "
                "models folder by hand"
            )
        if entry.gated and not self.token:
            raise _FileFailed(
                f"{entry.repo_id} is a gated repository and no Hugging Face token was given. "
                + HF_SECRET_HINT
            )
        self._check_space(entry, dest)
        part = dest.with_name(f".{dest.name}.part")
        delay = self.retry_delay
        last = ""
        for attempt in range(1, self.attempts + 1):
            try:
                self._download(entry, part)
                digest_problem = self._verify_part(entry, part)
                if digest_problem is not None:
                    part.unlink(missing_ok=True)
                    raise _Retry(f"downloaded file is corrupt: {digest_problem}")
                os.replace(part, dest)
                self._remember(entry, dest)
                with self.lock:
                    self.report.files_downloaded.append(rel)
                log.info("%s: downloaded", rel)
                return
            except (_Retry, httpx.TransportError) as exc:
                last = str(exc) or type(exc).__name__
                if attempt < self.attempts:
                    log.warning("%s: attempt %d failed (%s); retrying", rel, attempt, last)
                    time.sleep(delay)
                    delay *= 2
        raise _FileFailed(f"gave up after {self.attempts} attempts: {last}")

    def _url(self, entry: ModelFile) -> str:
        assert entry.repo_id is not None and entry.path_in_repo is not None
        return (
            f"{self.base_url}/{entry.repo_id}/resolve/{quote(entry.revision, safe='')}/"
            f"{quote(entry.path_in_repo)}"
        )

    def _download(self, entry: ModelFile, part: Path) -> None:
        """Fetch into ``part``, resuming from its current size when possible."""
        have = part.stat().st_size if part.exists() else 0
        if entry.size is not None and have > entry.size:
            part.unlink()
            have = 0
        if entry.size is not None and have == entry.size:
            return  # complete from an earlier run; verified next
        headers = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if have:
            headers["Range"] = f"bytes={have}-"
        url = self._url(entry)
        with self.http.stream("GET", url, headers=headers) as r:
            if r.status_code == 416 and have:
                part.unlink(missing_ok=True)
                raise _Retry("the server refused to resume; starting over")
            self._raise_for_status(entry, r)
            mode = "ab"
            if have and r.status_code == 206:
                content_range = r.headers.get("content-range", "")
                if not content_range.startswith(f"bytes {have}-"):
                    part.unlink(missing_ok=True)
                    raise _Retry(f"unexpected Content-Range {content_range!r}; starting over")
            elif have:
                mode = "wb"  # the server ignored Range: start from the beginning
                have = 0
            received = have
            total = entry.size
            with open(part, mode) as out:
                for chunk in r.iter_bytes():  # as it arrives: a cut stream keeps what came
                    out.write(chunk)
                    received += len(chunk)
                    with self.lock:
                        self.report.bytes_downloaded += len(chunk)
                    if entry.size is not None and received > entry.size:
                        raise _Retry(f"the server sent more than the expected {entry.size} bytes")
                    if self.progress is not None:
                        self.progress(entry.relpath, received, total)
                out.flush()
                os.fsync(out.fileno())

    def _raise_for_status(self, entry: ModelFile, r: httpx.Response) -> None:
        if r.status_code in (200, 206):
            return
        where = f"{entry.repo_id}/{entry.path_in_repo}@{entry.revision}"
        if r.status_code in (401, 403):
            if self.token:
                raise _FileFailed(
                    f"access to {where} was refused (HTTP {r.status_code}): the token "
                    "lacks access or the model's licence was not accepted. " + HF_SECRET_HINT
                )
            raise _FileFailed(
                f"access to {where} needs a Hugging Face token (HTTP {r.status_code}). "
                + HF_SECRET_HINT
            )
        if r.status_code == 404:
            raise _FileFailed(f"{where} was not found on {self.base_url} (HTTP 404)")
        if r.status_code == 429 or r.status_code >= 500:
            raise _Retry(f"HTTP {r.status_code} from the hub")
        raise _FileFailed(f"HTTP {r.status_code} for {where}")

    # -- checks ----------------------------------------------------------------------------

    def _check_space(self, entry: ModelFile, dest: Path) -> None:
        if entry.size is None:
            return
        try:
            free = shutil.disk_usage(dest.parent).free
        except OSError:
            return
        part = dest.with_name(f".{dest.name}.part")
        have = part.stat().st_size if part.exists() else 0
        need = entry.size - have
        if need > free:
            raise _FileFailed(f"needs {need} more bytes but only {free} are free in {dest.parent}")

    def _marker(self, entry: ModelFile) -> Path:
        return self.root / _MARKER_DIR / f"{entry.relpath}.json"

    def _check_present(self, entry: ModelFile, dest: Path) -> str | None:
        """None if ``dest`` is correct, else what is wrong with it."""
        st = dest.stat()
        if entry.size is not None and st.st_size != entry.size:
            return f"its size is {st.st_size} bytes instead of {entry.size}"
        if entry.sha256 is None:
            return None
        if not self.rehash:
            with contextlib.suppress(OSError, ValueError, TypeError):
                seen = json.loads(self._marker(entry).read_text("utf-8"))
                if seen == _marker_data(st, entry.sha256):
                    return None
        digest = _sha256(dest)
        if digest != entry.sha256:
            return f"its SHA-256 is {digest} instead of {entry.sha256}"
        self._remember(entry, dest)
        return None

    def _verify_part(self, entry: ModelFile, part: Path) -> str | None:
        size = part.stat().st_size
        if entry.size is not None and size != entry.size:
            return f"{size} bytes instead of {entry.size}"
        if entry.sha256 is not None:
            digest = _sha256(part)
            if digest != entry.sha256:
                return f"SHA-256 {digest} instead of {entry.sha256}"
        return None

    def _remember(self, entry: ModelFile, dest: Path) -> None:
        if entry.sha256 is None:
            return
        marker = self._marker(entry)
        with contextlib.suppress(OSError):
            marker.parent.mkdir(parents=True, exist_ok=True)
            tmp = marker.with_name(marker.name + ".tmp")
            tmp.write_text(json.dumps(_marker_data(dest.stat(), entry.sha256)), "utf-8")
            os.replace(tmp, marker)


def _marker_data(st: os.stat_result, sha256: str) -> dict[str, Any]:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK * 8):
            h.update(chunk)
    return h.hexdigest()
