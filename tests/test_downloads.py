"""Model downloads against a real HTTP hub on loopback (Range, auth, redirects, failures)."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from ryla_gen.models import ModelFile
from ryla_gen_modal.downloads import DownloadError, DownloadReport, download_models

TOKEN = "hf_test_token_123"


@dataclass
class Request:
    path: str
    range: str | None
    auth: str | None


@dataclass
class FakeHub:
    """``/{repo}/resolve/{rev}/{path}`` -> 302 to ``/cdn/...`` (like the hub's CDN), which
    serves the bytes with Range support. Gated repos need ``Bearer TOKEN`` on resolve."""

    files: dict[str, bytes] = field(default_factory=dict)
    gated: set[str] = field(default_factory=set)
    truncate: dict[str, int] = field(default_factory=dict)
    """key -> most bytes one response sends before the connection is dropped."""
    ignore_range: bool = False
    delay: float = 0.0
    requests: list[Request] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def add(self, repo: str, path: str, data: bytes, rev: str = "main") -> ModelFile:
        self.files[f"{repo}/{rev}/{path}"] = data
        name = path.rpartition("/")[2]
        return ModelFile(
            folder="diffusion_models",
            filename=name,
            repo_id=repo,
            path_in_repo=path,
            revision=rev,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            gated=repo in self.gated,
        )


def _handler(hub: FakeHub) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            with hub.lock:
                hub.active += 1
                hub.max_active = max(hub.max_active, hub.active)
                hub.requests.append(
                    Request(self.path, self.headers.get("Range"), self.headers.get("Authorization"))
                )
            try:
                self._get()
            finally:
                with hub.lock:
                    hub.active -= 1

        def _send(
            self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _get(self) -> None:
            path = unquote(urlsplit(self.path).path)
            m = re.fullmatch(r"/(.+?/.+?)/resolve/([^/]+)/(.+)", path)
            if m:
                repo, rev, file = m.groups()
                key = f"{repo}/{rev}/{file}"
                if key not in hub.files:
                    self._send(404, b"Entry not found")
                    return
                if repo in hub.gated and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._send(401, b"Access to model is restricted.")
                    return
                # Another origin (localhost vs 127.0.0.1), as the hub's CDN is.
                port = self.server.server_address[1]
                self._send(302, headers={"Location": f"http://localhost:{port}/cdn/{key}"})
                return
            if not path.startswith("/cdn/") or path[5:] not in hub.files:
                self._send(404)
                return
            key = path[5:]
            data = hub.files[key]
            start = 0
            rng = self.headers.get("Range")
            status = 200
            headers = {"Accept-Ranges": "bytes"}
            if rng and not hub.ignore_range:
                rm = re.fullmatch(r"bytes=(\d+)-", rng)
                assert rm, rng
                start = int(rm.group(1))
                if start >= len(data):
                    self._send(416, headers={"Content-Range": f"bytes */{len(data)}"})
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if hub.delay:
                time.sleep(hub.delay)
            cut = hub.truncate.get(key)
            if cut is not None and len(body) > cut:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    state = FakeHub()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def blob(n: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed * 7) % 256 for i in range(n))


def fetch(hub: FakeHub, entries: list[ModelFile], models: Path, **kw: Any) -> DownloadReport:
    return download_models(entries, models, base_url=hub.url, retry_delay=0.01, **kw)


@pytest.fixture(autouse=True)
def _no_ambient_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)


def test_first_run_downloads_second_run_downloads_nothing(hub: FakeHub, tmp_path: Path) -> None:
    entries = [
        hub.add("org/a", "a.safetensors", blob(300_000, 1)),
        hub.add("org/b", "split_files/vae/b.safetensors", blob(1_500_000, 2)),
        hub.add("org/c", "c d+e.safetensors", blob(10, 3)),  # spaces and '+' are quoted
    ]
    models = tmp_path / "models"
    report = download_models(entries, models, base_url=hub.url, max_workers=3)
    assert report.bytes_downloaded == sum(e.size or 0 for e in entries)
    assert sorted(report.files_downloaded) == sorted(e.relpath for e in entries)
    assert report.files_skipped == [] and report.ok
    for e in entries:
        data = (models / e.folder / e.filename).read_bytes()
        assert hashlib.sha256(data).hexdigest() == e.sha256
    assert not list(models.rglob("*.part"))

    hub.requests.clear()
    again = download_models(entries, models, base_url=hub.url)
    assert again.bytes_downloaded == 0
    assert sorted(again.files_skipped) == sorted(e.relpath for e in entries)
    assert again.files_downloaded == []
    assert hub.requests == []  # verified from the remembered check, no network
    assert again.as_dict()["bytes_downloaded"] == 0


def test_downloads_run_in_parallel(hub: FakeHub, tmp_path: Path) -> None:
    entries = [hub.add(f"org/p{i}", f"w{i}.safetensors", blob(1000, i)) for i in range(4)]
    hub.delay = 0.3
    download_models(entries, tmp_path / "m", base_url=hub.url, max_workers=4)
    assert hub.max_active >= 2


@pytest.mark.parametrize("damage", ["same size, other bytes", "truncated", "too long"])
def test_corrupt_file_is_detected_and_refetched(hub: FakeHub, tmp_path: Path, damage: str) -> None:
    entry = hub.add("org/a", "a.safetensors", blob(50_000))
    models = tmp_path / "models"
    fetch(hub, [entry], models)
    path = models / entry.folder / entry.filename
    data = path.read_bytes()
    if damage == "same size, other bytes":
        path.write_bytes(data[:1000] + bytes(1000) + data[2000:])
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    elif damage == "truncated":
        path.write_bytes(data[:100])
    else:
        path.write_bytes(data + b"x")
    report = fetch(hub, [entry], models)
    assert report.files_refetched == [entry.relpath]
    assert report.files_downloaded == [entry.relpath]
    assert report.bytes_downloaded == len(data)
    assert path.read_bytes() == data


def test_rehash_catches_damage_that_kept_size_and_mtime(hub: FakeHub, tmp_path: Path) -> None:
    entry = hub.add("org/a", "a.safetensors", blob(20_000))
    models = tmp_path / "models"
    fetch(hub, [entry], models)
    path = models / entry.folder / entry.filename
    st = path.stat()
    data = path.read_bytes()
    path.write_bytes(bytes(len(data)))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fetch(hub, [entry], models).bytes_downloaded == 0
    report = fetch(hub, [entry], models, rehash=True)
    assert report.files_refetched == [entry.relpath]
    assert path.read_bytes() == data


def test_gated_file_without_token_fails_clearly(hub: FakeHub, tmp_path: Path) -> None:
    hub.gated.add("bfl/flux")
    gated = hub.add("bfl/flux", "flux1-dev.safetensors", blob(5000))
    open_ = hub.add("org/open", "ae.safetensors", blob(700))
    models = tmp_path / "models"
    with pytest.raises(DownloadError) as info:
        fetch(hub, [gated, open_], models)
    message = str(info.value)
    assert "gated" in message and "HF_TOKEN" in message
    assert "modal secret create huggingface-secret" in message
    report = info.value.report
    assert list(report.files_failed) == [gated.relpath]
    assert report.files_downloaded == [open_.relpath]  # the others still download
    assert not (models / gated.folder / gated.filename).exists()
    assert not any("bfl/flux" in r.path for r in hub.requests)  # refused before any request


def test_gated_file_with_token_downloads_and_wrong_token_is_explained(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.gated.add("bfl/flux")
    gated = hub.add("bfl/flux", "flux1-dev.safetensors", blob(5000))
    models = tmp_path / "models"
    with pytest.raises(DownloadError) as info:
        fetch(hub, [gated], models, token="hf_wrong")
    assert "refused (HTTP 401)" in str(info.value) and "licence" in str(info.value)

    monkeypatch.setenv("HF_TOKEN", TOKEN)  # read from the environment when not passed
    report = fetch(hub, [gated], models)
    assert report.files_downloaded == [gated.relpath]
    resolve = [r for r in hub.requests if "/resolve/" in r.path]
    cdn = [r for r in hub.requests if r.path.startswith("/cdn/")]
    assert resolve[-1].auth == f"Bearer {TOKEN}"
    assert cdn and cdn[-1].auth is None  # the token is not sent to another host


def test_interrupted_download_leaves_no_file_under_the_final_name_then_resumes(
    hub: FakeHub, tmp_path: Path
) -> None:
    data = blob(400_000, 9)
    entry = hub.add("org/big", "big.safetensors", data)
    key = "org/big/main/big.safetensors"
    hub.truncate[key] = 150_000  # every response stops after 150 kB
    models = tmp_path / "models"
    final = models / entry.folder / entry.filename
    with pytest.raises(DownloadError) as info:
        fetch(hub, [entry], models, attempts=2)
    assert "gave up after 2 attempts" in str(info.value)
    assert not final.exists()
    part = final.with_name(f".{final.name}.part")
    assert part.exists() and part.stat().st_size == 300_000  # the 2nd attempt resumed
    assert not any(p.name == final.name for p in models.rglob("*"))

    del hub.truncate[key]
    hub.requests.clear()
    report = fetch(hub, [entry], models)
    assert report.bytes_downloaded == len(data) - 300_000
    assert [r.range for r in hub.requests if r.path.startswith("/cdn/")] == ["bytes=300000-"]
    assert final.read_bytes() == data and not part.exists()


def test_a_retry_within_one_run_resumes(hub: FakeHub, tmp_path: Path) -> None:
    data = blob(100_000, 4)
    entry = hub.add("org/r", "r.safetensors", data)
    key = "org/r/main/r.safetensors"
    hub.truncate[key] = 60_000  # the first response is cut; the resumed one is short enough
    report = fetch(hub, [entry], tmp_path / "m")
    assert report.bytes_downloaded == len(data)
    ranges = [r.range for r in hub.requests if r.path.startswith("/cdn/")]
    assert ranges == [None, "bytes=60000-"]


def test_server_ignoring_range_starts_over(hub: FakeHub, tmp_path: Path) -> None:
    data = blob(80_000, 5)
    entry = hub.add("org/n", "n.safetensors", data)
    models = tmp_path / "models"
    final = models / entry.folder / entry.filename
    final.parent.mkdir(parents=True)
    final.with_name(f".{final.name}.part").write_bytes(data[:30_000])
    hub.ignore_range = True
    report = fetch(hub, [entry], models)
    assert report.bytes_downloaded == len(data)
    assert final.read_bytes() == data


def test_corrupt_partial_file_is_discarded(hub: FakeHub, tmp_path: Path) -> None:
    data = blob(50_000, 6)
    entry = hub.add("org/c", "c.safetensors", data)
    models = tmp_path / "models"
    final = models / entry.folder / entry.filename
    final.parent.mkdir(parents=True)
    final.with_name(f".{final.name}.part").write_bytes(b"\x00" * 20_000)  # wrong bytes
    report = fetch(hub, [entry], models)
    assert final.read_bytes() == data
    assert report.bytes_downloaded == 30_000 + len(data)


def test_missing_file_on_hub_and_unknown_source(hub: FakeHub, tmp_path: Path) -> None:
    absent = ModelFile(
        folder="vae", filename="x.safetensors", repo_id="org/none", path_in_repo="x.safetensors"
    )
    unknown = ModelFile(folder="loras", filename="mine.safetensors")
    with pytest.raises(DownloadError) as info:
        fetch(hub, [absent, unknown], tmp_path / "m")
    failed = info.value.report.files_failed
    assert "HTTP 404" in failed["vae/x.safetensors"]
    assert "does not say where to download" in failed["loras/mine.safetensors"]


def test_size_only_check_without_sha(hub: FakeHub, tmp_path: Path) -> None:
    data = blob(3000)
    e = hub.add("org/s", "s.safetensors", data).model_copy(update={"sha256": None})
    models = tmp_path / "m"
    assert fetch(hub, [e], models).bytes_downloaded == 3000
    assert fetch(hub, [e, e], models).files_skipped == [e.relpath]


def test_injected_client_is_used_and_left_open(hub: FakeHub, tmp_path: Path) -> None:
    entry = hub.add("org/i", "i.safetensors", blob(1234))
    with httpx.Client(follow_redirects=True) as client:
        report = download_models([entry], tmp_path / "m", base_url=hub.url, client=client)
        assert report.files_downloaded == [entry.relpath]
        assert not client.is_closed
