"""Safe LoRA storage: one flat folder of checked ``.safetensors`` files.

Uploads come from the network, so every step is defensive:

* **Names** are plain file names matching :data:`LORA_NAME_PATTERN` (no folders, no
  ``..``, no leading dot, ``.safetensors`` only); anything else is refused before a
  path is built.
* **Size** is capped (:data:`DEFAULT_MAX_LORA_BYTES`, configurable) while the bytes
  stream in, so an oversized upload never fills the disk.
* **Content** must be a real safetensors file: an 8-byte little-endian header length, a
  JSON header whose tensors have a known ``dtype``, a ``shape`` and ``data_offsets``
  that tile the data section exactly, and nothing after it (:func:`check_safetensors`).
* **Writes are atomic**: bytes go to a hidden temporary file in the same folder, are
  checked, flushed, then renamed over the final name. A reader (ComfyUI) never sees a
  half-written LoRA, and a failed upload leaves nothing behind.
* **Listing and deleting** see only regular files directly inside the folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import stat
import struct
import uuid
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "DEFAULT_MAX_LORA_BYTES",
    "LORA_NAME_PATTERN",
    "InvalidLoraError",
    "InvalidLoraNameError",
    "LoraError",
    "LoraFile",
    "LoraNotFoundError",
    "LoraStore",
    "LoraTooLargeError",
    "check_lora_name",
    "check_safetensors",
]

DEFAULT_MAX_LORA_BYTES = 2 * 1024**3
"""Largest accepted LoRA file (2 GiB); ``LoraStore(max_bytes=...)`` changes it."""

LORA_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.safetensors$")
"""Accepted LoRA file names: a letter or digit, then letters, digits, ``. _ -``."""

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""Largest safetensors JSON header accepted (the limit of the safetensors library)."""

_TEMP_PREFIX = ".upload-"
_WRITE_BUFFER = 4 * 1024 * 1024

#: Bits per element of every dtype the safetensors format defines.
_DTYPE_BITS = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}


# -- errors --------------------------------------------------------------------------------


class LoraError(ValueError):
    """Base class of LoRA storage errors; the message says what to do."""


class InvalidLoraNameError(LoraError):
    """The name is not a plain ``*.safetensors`` file name."""


class LoraTooLargeError(LoraError):
    """The upload is larger than the store's ``max_bytes``."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class InvalidLoraError(LoraError):
    """The bytes are not a valid safetensors file."""


class LoraNotFoundError(LoraError, LookupError):
    """No LoRA of that name is stored."""


# -- checks --------------------------------------------------------------------------------


def check_lora_name(name: str) -> str:
    """Return ``name`` if it is an acceptable LoRA file name, else raise.

    Raises:
        InvalidLoraNameError: the name has folders, ``..``, a leading dot, odd
            characters, more than 128 characters before the suffix, or another suffix.
    """
    if not isinstance(name, str) or not LORA_NAME_PATTERN.fullmatch(name):
        shown = name if isinstance(name, str) else type(name).__name__
        raise InvalidLoraNameError(
            f"Invalid LoRA name {shown[:200]!r}: use a plain file name of letters, digits, "
            "'.', '_' and '-' that starts with a letter or digit and ends in '.safetensors' "
            "(no folders)."
        )
    return name


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidLoraError(f"Not a safetensors file: the header repeats the key {key!r}.")
        out[key] = value
    return out


def check_safetensors(file: BinaryIO, size: int) -> dict[str, Any]:
    """Check that ``file`` (``size`` bytes, read from the start) is a valid safetensors file.

    Returns the parsed JSON header. Only the header is read; the tensor data is checked
    by its extent (offsets must tile the data section exactly, as the format requires).

    Raises:
        InvalidLoraError: naming the first problem found.
    """
    if size < 8 + 2:
        raise InvalidLoraError(f"Not a safetensors file: only {size} bytes.")
    file.seek(0)
    prefix = file.read(8)
    if len(prefix) != 8:
        raise InvalidLoraError("Not a safetensors file: could not read the header length.")
    (header_len,) = struct.unpack("<Q", prefix)
    if header_len < 2 or header_len > MAX_HEADER_BYTES or header_len > size - 8:
        raise InvalidLoraError(
            f"Not a safetensors file: the header length {header_len} does not fit a "
            f"{size}-byte file."
        )
    raw = file.read(header_len)
    if len(raw) != header_len:
        raise InvalidLoraError("Not a safetensors file: the header is truncated.")
    if not raw.startswith(b"{"):
        raise InvalidLoraError("Not a safetensors file: the header is not a JSON object.")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except InvalidLoraError:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidLoraError(f"Not a safetensors file: the header is not JSON ({exc}).") from None
    if not isinstance(header, dict):
        raise InvalidLoraError("Not a safetensors file: the header is not a JSON object.")

    data_len = size - 8 - header_len
    spans: list[tuple[int, int, str]] = []
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in entry.items()
            ):
                raise InvalidLoraError(
                    "Not a safetensors file: __metadata__ must map strings to strings."
                )
            continue
        spans.append((*_tensor_span(key, entry), key))
    spans.sort()
    position = 0
    for begin, end, key in spans:
        if begin != position:
            what = "overlaps another" if begin < position else "leaves a gap before it"
            raise InvalidLoraError(f"Not a safetensors file: tensor {key!r} {what}.")
        position = end
    if position != data_len:
        raise InvalidLoraError(
            f"Not a safetensors file: the tensors cover {position} bytes but the data "
            f"section holds {data_len} (truncated or padded file)."
        )
    return header


def _tensor_span(key: str, entry: Any) -> tuple[int, int]:
    bad = f"Not a safetensors file: tensor {key!r}"
    if not isinstance(entry, dict):
        raise InvalidLoraError(f"{bad} is not an object.")
    extra = set(entry) - {"dtype", "shape", "data_offsets"}
    if extra:
        raise InvalidLoraError(f"{bad} has unknown fields {sorted(extra)}.")
    dtype = entry.get("dtype")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPE_BITS:
        raise InvalidLoraError(f"{bad} has an unknown dtype {dtype!r}.")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidLoraError(f"{bad} has an invalid shape {shape!r}.")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise InvalidLoraError(f"{bad} has invalid data_offsets {offsets!r}.")
    bits = math.prod(shape) * _DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != offsets[1] - offsets[0]:
        raise InvalidLoraError(
            f"{bad}: {dtype} of shape {shape} needs {bits / 8:g} bytes but its "
            f"data_offsets span {offsets[1] - offsets[0]}."
        )
    return int(offsets[0]), int(offsets[1])


# -- the store -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraFile:
    """One stored LoRA."""

    name: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        """``{"name", "size"}`` for JSON answers."""
        return {"name": self.name, "size": self.size}


class LoraStore:
    """LoRA files in one folder (ComfyUI's ``models/loras`` or a volume mounted there).

    Args:
        directory: The folder; created if missing.
        max_bytes: Largest accepted file, in bytes.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_LORA_BYTES
    ):
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.directory = Path(directory).expanduser().resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"LoraStore({str(self.directory)!r}, max_bytes={self.max_bytes})"

    def path_for(self, name: str) -> Path:
        """The path ``name`` is stored at (the name is checked; the file may not exist)."""
        path = self.directory / check_lora_name(name)
        if path.parent != self.directory:  # pragma: no cover - the pattern forbids it
            raise InvalidLoraNameError(f"Invalid LoRA name {name!r}.")
        return path

    def _stat(self, name: str) -> os.stat_result | None:
        try:
            st = os.lstat(self.path_for(name))
        except FileNotFoundError:
            return None
        return st if stat.S_ISREG(st.st_mode) else None

    def get(self, name: str) -> LoraFile:
        """The stored file ``name``; raises :class:`LoraNotFoundError` if there is none."""
        st = self._stat(name)
        if st is None:
            raise LoraNotFoundError(f"No LoRA named {name!r}.")
        return LoraFile(name, st.st_size)

    def exists(self, name: str) -> bool:
        """Whether a LoRA of that (valid) name is stored."""
        return self._stat(name) is not None

    def list(self) -> list[LoraFile]:
        """Every stored LoRA, sorted by name (regular files with valid names only)."""
        out = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if not LORA_NAME_PATTERN.fullmatch(entry.name):
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                out.append(LoraFile(entry.name, entry.stat(follow_symlinks=False).st_size))
        return sorted(out, key=lambda f: f.name)

    def delete(self, name: str) -> None:
        """Remove ``name``; raises :class:`LoraNotFoundError` if it is not stored."""
        if self._stat(name) is None:
            raise LoraNotFoundError(f"No LoRA named {name!r}.")
        os.unlink(self.path_for(name))

    # -- writing -----------------------------------------------------------------------

    def _open_temp(self) -> tuple[Path, BinaryIO]:
        temp = self.directory / f"{_TEMP_PREFIX}{uuid.uuid4().hex}.part"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        return temp, os.fdopen(fd, "wb")

    def _too_large(self, size: int) -> LoraTooLargeError:
        return LoraTooLargeError(
            f"LoRA too large: more than {self.max_bytes} bytes (got at least {size}).",
            limit=self.max_bytes,
        )

    def _finish(self, name: str, temp: Path, out: BinaryIO, size: int) -> LoraFile:
        out.flush()
        os.fsync(out.fileno())
        out.close()
        with open(temp, "rb") as f:
            check_safetensors(f, size)
        os.replace(temp, self.path_for(name))
        with contextlib.suppress(OSError):  # durability of the rename, where supported
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return LoraFile(name, size)

    def save_bytes(self, name: str, data: bytes) -> LoraFile:
        """Store ``data`` as ``name`` (replacing any file of that name), after checking it."""
        return self.save_chunks(name, [data])

    def save_chunks(self, name: str, chunks: Iterable[bytes]) -> LoraFile:
        """Store the concatenated ``chunks`` as ``name``; see :meth:`save_stream`."""
        check_lora_name(name)
        temp, out = self._open_temp()
        try:
            size = 0
            for chunk in chunks:
                size += len(chunk)
                if size > self.max_bytes:
                    raise self._too_large(size)
                out.write(chunk)
            return self._finish(name, temp, out, size)
        finally:
            out.close()
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    async def save_stream(self, name: str, chunks: AsyncIterable[bytes]) -> LoraFile:
        """Store an upload as ``name`` while it streams in; atomic and size-capped.

        Raises:
            InvalidLoraNameError, LoraTooLargeError, InvalidLoraError: nothing is stored.
        """
        check_lora_name(name)
        temp, out = await asyncio.to_thread(self._open_temp)
        try:
            size = 0
            buffer = bytearray()
            async for chunk in chunks:
                size += len(chunk)
                if size > self.max_bytes:
                    raise self._too_large(size)
                buffer += chunk
                if len(buffer) >= _WRITE_BUFFER:
                    await asyncio.to_thread(out.write, bytes(buffer))
                    buffer.clear()
            if buffer:
                await asyncio.to_thread(out.write, bytes(buffer))
            return await asyncio.to_thread(self._finish, name, temp, out, size)
        finally:
            out.close()
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
