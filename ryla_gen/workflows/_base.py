"""The ``Workflow`` base class and the checks its fields share."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationInfo,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from ryla_gen.graph import Graph, NodeSchemas
from ryla_gen.models import ModelFile, find

from ._images import InputImage

__all__ = [
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "SAMPLERS",
    "SCHEDULERS",
    "WEIGHT_DTYPES",
    "Between",
    "Workflow",
    "check_choice",
    "check_filename",
    "check_filename_prefix",
    "check_prompt",
    "model_file",
    "random_seed",
]

MAX_SEED = 2**53 - 1
"""Largest accepted seed: the largest integer JSON clients (JavaScript) keep exactly.

ComfyUI's KSampler accepts up to 2**64-1; seeds above 2**53 would be rounded by
browsers and many JSON libraries, so they are refused here.
"""

MAX_PROMPT_CHARS = 10_000
"""Longest accepted prompt, in characters."""

WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")
"""``UNETLoader.weight_dtype`` choices (fp8 halves the diffusion model's GPU memory)."""


def _ksampler_choices(name: str) -> tuple[str, ...]:
    # The bundled schemas are parsed once and shared with graph building and validation.
    options = NodeSchemas.bundled()["KSampler"].inputs[name].options or ()
    return tuple(str(o) for o in options)


SAMPLERS: tuple[str, ...] = _ksampler_choices("sampler_name")
"""Sampler names the bundled KSampler schema accepts (ComfyUI 0.3.75)."""
SCHEDULERS: tuple[str, ...] = _ksampler_choices("scheduler")
"""Scheduler names the bundled KSampler schema accepts (ComfyUI 0.3.75)."""


def random_seed() -> int:
    """A fresh random seed in ``0..MAX_SEED``."""
    return secrets.randbelow(MAX_SEED + 1)


# -- range checks with messages that name the field and the range ------------------------


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Between:
    """``Annotated`` marker: the value must lie in ``lo..hi`` (and be a multiple of ``step``).

    Unlike ``Field(ge=, le=)`` the error names both ends of the range, e.g.
    ``width must be a multiple of 16 between 256 and 2048, got 1000``. The JSON schema
    still carries ``minimum``/``maximum``/``multipleOf``.
    """

    lo: float
    hi: float
    step: int | None = None

    def describe(self, field: str) -> str:
        """``'width must be a multiple of 16 between 256 and 2048'``."""
        span = f"between {_fmt(self.lo)} and {_fmt(self.hi)}"
        if self.step:
            return f"{field} must be a multiple of {self.step} {span}"
        return f"{field} must be {span}"

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def check(value: Any, info: ValidationInfo) -> Any:
            if value is None:
                return value
            field = info.field_name or "value"
            ok = self.lo <= value <= self.hi  # False for NaN
            if ok and self.step and value % self.step != 0:
                ok = False
            if not ok:
                raise PydanticCustomError(
                    "out_of_range",
                    "{message}, got {value}",
                    {"message": self.describe(field), "value": value},
                )
            return value

        def no_bool(value: Any, info: ValidationInfo) -> Any:
            if isinstance(value, bool):  # pydantic would take True as 1
                raise PydanticCustomError(
                    "out_of_range",
                    "{message}, got a boolean",
                    {"message": self.describe(info.field_name or "value")},
                )
            return value

        return core_schema.with_info_before_validator_function(
            no_bool, core_schema.with_info_after_validator_function(check, handler(source))
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        target = out
        # Optional[...] renders as anyOf; put the bounds on the numeric branch.
        for branch in out.get("anyOf", []):
            if branch.get("type") in ("integer", "number"):
                target = branch
        target["minimum"] = self.lo
        target["maximum"] = self.hi
        if self.step:
            target["multipleOf"] = self.step
        return out


# -- text checks --------------------------------------------------------------------------

_BAD_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
"""Control characters, line/paragraph separators, and lone surrogates (not UTF-8 encodable)."""


def check_prompt(
    value: str, field: str, *, allow_empty: bool = False, max_chars: int = MAX_PROMPT_CHARS
) -> str:
    """Normalise line ends, strip, and refuse empty, overlong or control-character text."""
    text = value.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text and not allow_empty:
        raise PydanticCustomError(
            "prompt_empty", "{field} must not be empty or only whitespace", {"field": field}
        )
    if len(text) > max_chars:
        raise PydanticCustomError(
            "prompt_too_long",
            "{field} is too long: {n} characters (at most {max})",
            {"field": field, "n": len(text), "max": max_chars},
        )
    bad = _BAD_CONTROL.search(text)
    if bad is not None:
        raise PydanticCustomError(
            "prompt_control_character",
            "{field} contains the control character {char} at position {pos}; "
            "only newlines and tabs are allowed",
            {"field": field, "char": repr(bad.group()), "pos": bad.start()},
        )
    return text


_FILENAME_BAD = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


def check_filename(value: str, field: str, suffixes: tuple[str, ...]) -> str:
    """A plain file name: no path separators, no ``..``, no control characters, known suffix."""
    if not value or value != value.strip():
        raise PydanticCustomError(
            "filename_invalid",
            "{field} must be a file name without surrounding spaces, got {value}",
            {"field": field, "value": repr(value)},
        )
    if len(value) > 255:
        raise PydanticCustomError(
            "filename_invalid", "{field} is longer than 255 characters", {"field": field}
        )
    bad = _FILENAME_BAD.search(value)
    if bad is not None or value.startswith(".") or ".." in value:
        raise PydanticCustomError(
            "filename_invalid",
            "{field} must be a plain file name (no folders, '..', control characters or "
            'any of \\ / : * ? " < > |), got {value}',
            {"field": field, "value": repr(value)},
        )
    if not value.lower().endswith(suffixes):
        raise PydanticCustomError(
            "filename_invalid",
            "{field} must end with {suffixes}, got {value}",
            {"field": field, "suffixes": " or ".join(suffixes), "value": repr(value)},
        )
    return value


_PREFIX = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_\-. ]*(/[A-Za-z0-9_\-][A-Za-z0-9_\-. ]*)*$")


def check_filename_prefix(value: str, field: str = "filename_prefix") -> str:
    """SaveImage's prefix: letters, digits, ``_ - . space``, optional ``/`` sub-folders."""
    if len(value) > 120 or not _PREFIX.match(value) or ".." in value:
        raise PydanticCustomError(
            "filename_prefix_invalid",
            "{field} must be 1-120 characters of letters, digits, '_', '-', '.', spaces and "
            "'/' between folder names (no '..', no leading '/'), got {value}",
            {"field": field, "value": repr(value)},
        )
    return value


def check_choice(value: str, field: str, choices: tuple[str, ...]) -> str:
    """``value`` must be one of ``choices``; the message lists them."""
    if value not in choices:
        raise PydanticCustomError(
            "choice_invalid",
            "{field} must be one of: {choices}; got {value}",
            {"field": field, "choices": ", ".join(choices), "value": repr(value)},
        )
    return value


# -- models -------------------------------------------------------------------------------


def model_file(folder: str, filename: str, what: str) -> ModelFile:
    """The manifest entry for ``folder/filename``, or a source-less entry for unknown files."""
    known = find(folder, filename)
    if known is not None:
        return known
    return ModelFile(
        folder=folder,
        filename=filename,
        description=f"{what}; not in the ryla-gen manifest: put it on the server yourself.",
    )


# -- the base class -----------------------------------------------------------------------


class Workflow(BaseModel):
    """A typed request that builds one ComfyUI API-format graph.

    Every field is validated when the object is built (and on assignment); a bad value
    raises ``pydantic.ValidationError`` whose message names the field and what is
    allowed. ``seed=None`` picks a random seed at that moment, so ``wf.seed`` tells
    which seed was used and ``to_graph()`` always returns the same graph.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: ClassVar[str] = ""
    """The registry name, e.g. ``"flux-dev"``."""

    def to_graph(self) -> Graph:
        """The ComfyUI graph this request describes."""
        raise NotImplementedError

    def to_api(self) -> dict[str, Any]:
        """``to_graph().to_api()``: the value of ``prompt`` in ``POST /prompt``."""
        return self.to_graph().to_api()

    def required_models(self) -> list[ModelFile]:
        """Every model file the graph names (plus runtime files its custom nodes load)."""
        raise NotImplementedError

    def input_images(self) -> dict[str, bytes]:
        """Upload name -> PNG bytes for each image the graph's ``LoadImage`` nodes name."""
        out: dict[str, bytes] = {}
        for field in type(self).model_fields:
            value = getattr(self, field)
            if isinstance(value, InputImage):
                out[value.name] = value.data
        return out

    def _seed(self, offset: int = 0) -> int:
        seed = getattr(self, "seed", None)
        if seed is None:  # only reachable through model_construct()
            raise ValueError("seed is unset; build the workflow normally to pick one")
        return int(seed) + offset
