"""``InputImage``: a validated reference image (face, pose) ready to upload to ComfyUI."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import os
import re
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

__all__ = ["MAX_IMAGE_BYTES", "MAX_IMAGE_SIDE", "MIN_IMAGE_SIDE", "InputImage"]

MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""Largest accepted encoded image (the file or decoded base64), in bytes."""
MAX_IMAGE_SIDE = 4096
"""Largest accepted width or height, in pixels."""
MIN_IMAGE_SIDE = 16
"""Smallest accepted width or height, in pixels."""

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w.+-]+=[\w.+-]+)*;base64,", re.I)
_B64_CHARS = re.compile(r"^[A-Za-z0-9+/_\-\s]*={0,2}\s*$")


def _err(error_type: str, message: str, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError(error_type, message, ctx or None)


class InputImage:
    """An image checked with Pillow and stored as RGB PNG bytes.

    Build one from a path, bytes, a PIL image, or a base64 / ``data:image/...;base64,``
    string (``InputImage.load``), or let a workflow field do it. The image must be a
    real, complete picture of at most 4096x4096 pixels and 20 MB. EXIF orientation is
    applied, transparency is flattened onto white and metadata is dropped.

    ``name`` is content-addressed (``ryla_<sha256 of the pixels>.png``), so uploading the
    same picture twice is harmless. In JSON it serialises as a ``data:image/png;base64,``
    URL, which validates back to the same image.

    Paths are read only when the caller is trusted: validating with pydantic context
    ``{"untrusted": True}`` (what the web server does) accepts strings only as base64 or
    data URLs, so a request cannot make the server read its own files.
    """

    __slots__ = ("_data", "_digest", "_height", "_width")

    def __init__(self, png: bytes, *, width: int, height: int, digest: str) -> None:
        """Internal: use :meth:`load` (or a workflow field), which validates."""
        self._data = png
        self._width = width
        self._height = height
        self._digest = digest

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def load(cls, value: Any, *, allow_paths: bool = True, field: str = "image") -> InputImage:
        """Validate ``value`` (path, bytes, PIL image, base64 or data URL) into an image.

        ``allow_paths=False`` refuses file paths (strings are then only base64/data URLs).
        Raises ``pydantic_core.PydanticCustomError`` (a ``ValueError``) saying what is wrong.
        """
        if isinstance(value, InputImage):
            return value
        if isinstance(value, Image.Image):
            return cls._from_pil(value, field)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls._from_bytes(bytes(value), field)
        if isinstance(value, os.PathLike):
            if not allow_paths:
                raise _path_refused(field)
            return cls._from_path(Path(os.fspath(value)), field)
        if isinstance(value, str):
            return cls._from_string(value, field, allow_paths=allow_paths)
        raise _err(
            "image_type",
            "{field} must be a file path, bytes, a PIL image, or a base64 / data: URL string; "
            "got {type_name}",
            field=field,
            type_name=type(value).__name__,
        )

    @classmethod
    def _from_string(cls, text: str, field: str, *, allow_paths: bool) -> InputImage:
        s = text.strip()
        if not s:
            raise _err("image_empty", "{field} is an empty string", field=field)
        m = _DATA_URL.match(s)
        if m is not None:
            mime = (m.group(1) or "").lower()
            if mime and not mime.startswith("image/") and mime != "application/octet-stream":
                raise _err(
                    "image_not_an_image",
                    "{field} is a data URL of type {mime}, not an image",
                    field=field,
                    mime=mime,
                )
            return cls._from_bytes(_b64decode(s[m.end() :], field), field)
        looks_b64 = len(s) >= 64 and _B64_CHARS.match(s) is not None
        if allow_paths and len(s) < 4096 and "\x00" not in s:
            path = Path(s).expanduser()
            if not looks_b64 or _exists(path):
                return cls._from_path(path, field)
        if not looks_b64:
            raise _path_refused(field)
        return cls._from_bytes(_b64decode(s, field), field)

    @classmethod
    def _from_path(cls, path: Path, field: str) -> InputImage:
        try:
            st = path.stat()
        except FileNotFoundError:
            raise _err(
                "image_not_found", "{field}: no such file: {path}", field=field, path=str(path)
            ) from None
        except OSError as e:
            raise _err(
                "image_not_found",
                "{field}: cannot read {path}: {e}",
                field=field,
                path=str(path),
                e=str(e),
            ) from None
        if not path.is_file():
            raise _err(
                "image_not_found", "{field}: {path} is not a file", field=field, path=str(path)
            )
        if st.st_size > MAX_IMAGE_BYTES:
            raise _too_many_bytes(field, st.st_size)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise _err(
                "image_not_found",
                "{field}: cannot read {path}: {e}",
                field=field,
                path=str(path),
                e=str(e),
            ) from None
        return cls._from_bytes(data, field)

    @classmethod
    def _from_bytes(cls, data: bytes, field: str) -> InputImage:
        if len(data) > MAX_IMAGE_BYTES:
            raise _too_many_bytes(field, len(data))
        if not data:
            raise _err("image_empty", "{field} is empty (0 bytes)", field=field)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(io.BytesIO(data))
                _check_size(im.size, field)
                im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _err(
                "image_too_large",
                "{field} is too large: far more pixels than {max}x{max}",
                field=field,
                max=MAX_IMAGE_SIDE,
            ) from None
        except UnidentifiedImageError:
            raise _err(
                "image_not_an_image",
                "{field} is not an image Pillow can read (PNG, JPEG, WebP, ...)",
                field=field,
            ) from None
        except PydanticCustomError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise _err(
                "image_truncated",
                "{field} is truncated or corrupt: {e}",
                field=field,
                e=str(e) or type(e).__name__,
            ) from None
        return cls._from_pil(im, field)

    @classmethod
    def _from_pil(cls, im: Image.Image, field: str) -> InputImage:
        _check_size(im.size, field)
        with contextlib.suppress(EOFError, AttributeError):
            im.seek(0)  # first frame of an animation
        with contextlib.suppress(Exception):  # broken EXIF must not spoil a good picture
            im = ImageOps.exif_transpose(im) or im
        try:
            rgb = _to_rgb(im)
        except (OSError, SyntaxError, EOFError) as e:
            raise _err(
                "image_truncated",
                "{field} is truncated or corrupt: {e}",
                field=field,
                e=str(e) or type(e).__name__,
            ) from None
        _check_size(rgb.size, field)
        buf = io.BytesIO()
        rgb.save(buf, format="PNG")
        # Hash the pixels, not the PNG stream: the name stays the same across zlib versions.
        h = hashlib.sha256()
        h.update(f"{rgb.width}x{rgb.height}:".encode())
        h.update(rgb.tobytes())
        return cls(buf.getvalue(), width=rgb.width, height=rgb.height, digest=h.hexdigest())

    # -- accessors ------------------------------------------------------------------------

    @property
    def data(self) -> bytes:
        """The image as RGB PNG bytes."""
        return self._data

    @property
    def width(self) -> int:
        """Width in pixels."""
        return self._width

    @property
    def height(self) -> int:
        """Height in pixels."""
        return self._height

    @property
    def sha256(self) -> str:
        """SHA-256 of the pixels (size included), in hex."""
        return self._digest

    @property
    def name(self) -> str:
        """The content-addressed upload name, ``ryla_<16 hex digits>.png``."""
        return f"ryla_{self._digest[:16]}.png"

    def to_data_url(self) -> str:
        """``data:image/png;base64,...``."""
        return "data:image/png;base64," + base64.b64encode(self._data).decode("ascii")

    def to_pil(self) -> Image.Image:
        """A new PIL image of the stored PNG."""
        im = Image.open(io.BytesIO(self._data))
        im.load()
        return im

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InputImage):
            return NotImplemented
        return self._digest == other._digest

    def __hash__(self) -> int:
        return hash(self._digest)

    def __repr__(self) -> str:
        return f"InputImage(name={self.name!r}, size={self._width}x{self._height})"

    # -- pydantic -------------------------------------------------------------------------

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(value: Any, info: ValidationInfo) -> InputImage:
            ctx = info.context if isinstance(info.context, dict) else {}
            return cls.load(
                value,
                allow_paths=not ctx.get("untrusted", False),
                field=info.field_name or "image",
            )

        return core_schema.with_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda v, info: v.to_data_url() if info.mode_is_json() else v,
                info_arg=True,
                when_used="always",
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "format": "data-url",
            "contentMediaType": "image/*",
            "description": (
                "An image as a data:image/...;base64, URL or plain base64 (PNG, JPEG, WebP, "
                f"...; at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} pixels and "
                f"{MAX_IMAGE_BYTES // (1024 * 1024)} MB). Python callers may also pass a "
                "path, bytes or a PIL image."
            ),
        }


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _b64decode(text: str, field: str) -> bytes:
    compact = re.sub(r"\s+", "", text)
    if len(compact) * 3 // 4 > MAX_IMAGE_BYTES + 3:
        raise _too_many_bytes(field, len(compact) * 3 // 4)
    compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise _err("image_bad_base64", "{field} is not valid base64", field=field) from None


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im.copy()
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scale down to 8 bits instead of clipping to white.
        scaled = im.point(lambda v: v / 256) if im.mode != "I" else im
        return scaled.convert("L").convert("RGB")
    return im.convert("RGB")


def _check_size(size: tuple[int, int], field: str) -> None:
    w, h = size
    if w > MAX_IMAGE_SIDE or h > MAX_IMAGE_SIDE:
        raise _err(
            "image_too_large",
            "{field} is too large: {w}x{h} pixels (at most {max}x{max})",
            field=field,
            w=w,
            h=h,
            max=MAX_IMAGE_SIDE,
        )
    if w < MIN_IMAGE_SIDE or h < MIN_IMAGE_SIDE:
        raise _err(
            "image_too_small",
            "{field} is too small: {w}x{h} pixels (at least {min}x{min})",
            field=field,
            w=w,
            h=h,
            min=MIN_IMAGE_SIDE,
        )


def _too_many_bytes(field: str, n: int) -> PydanticCustomError:
    return _err(
        "image_too_large",
        "{field} is too large: {mb} MB (at most {max} MB)",
        field=field,
        mb=f"{n / (1024 * 1024):.1f}",
        max=MAX_IMAGE_BYTES // (1024 * 1024),
    )


def _path_refused(field: str) -> PydanticCustomError:
    return _err(
        "image_path_not_allowed",
        "{field} must be base64 image data or a data:image/...;base64, URL; "
        "file paths are not accepted here",
        field=field,
    )
