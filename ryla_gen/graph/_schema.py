"""Node schemas parsed from ComfyUI's ``GET /object_info``."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal

__all__ = ["InputSpec", "NodeSchema", "NodeSchemas", "OutputSpec"]

InputCategory = Literal["required", "optional", "hidden"]
_CATEGORIES: tuple[InputCategory, ...] = ("required", "optional", "hidden")

_FILE_INPUT_NAMES = frozenset(
    {
        "ckpt_name",
        "unet_name",
        "vae_name",
        "clip_name",
        "clip_name1",
        "clip_name2",
        "clip_name3",
        "clip_name4",
        "lora_name",
        "control_net_name",
        "instantid_file",
        "pulid_file",
        "style_model_name",
        "clip_vision_name",
        "model_name",
        "upscale_model",
        "gligen_name",
        "hypernetwork_name",
        "config_name",
        "audio",
        "video",
    }
)
_UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "file_upload", "remote")
_FILE_EXTENSIONS = (
    # model weights and configs
    ".safetensors",
    ".sft",
    ".ckpt",
    ".pt",
    ".pt2",
    ".pth",
    ".bin",
    ".pkl",
    ".gguf",
    ".onnx",
    ".yaml",
    # images, video, audio
    ".png",
    ".jpg",
    ".jpeg",
    ".webp",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
    ".mp4",
    ".webm",
    ".mov",
    ".mkv",
    ".wav",
    ".mp3",
    ".flac",
    ".ogg",
)


@dataclass(frozen=True)
class InputSpec:
    """One input of a node class, as ``/object_info`` describes it.

    Combo inputs get the type ``"COMBO"`` whichever form the server used: the old
    ``[["a", "b"], {...}]`` or the newer ``["COMBO", {"options": [...]}]``.
    """

    name: str
    type: str
    """``INT``, ``FLOAT``, ``STRING``, ``BOOLEAN``, ``COMBO``, a link type such as ``MODEL``,
    ``*`` (anything) or a comma-separated union such as ``IMAGE,MASK``."""
    category: InputCategory
    options: tuple[Any, ...] | None = None
    """The allowed values of a combo; None when not a combo or the list is fetched remotely."""
    min: float | None = None
    max: float | None = None
    default: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The input's whole option dict (tooltip, step, image_upload, ...)."""

    @property
    def is_file(self) -> bool:
        """True for combos that list files on the server (models, input images).

        Those lists show what was on disk when the schema was captured, so they depend on
        the machine: a file-name input, an upload widget, an empty or remote list, or a
        list whose every entry ends with a model or media file extension.
        """
        if self.type != "COMBO":
            return False
        if self.name in _FILE_INPUT_NAMES or any(self.extra.get(f) for f in _UPLOAD_FLAGS):
            return True
        return self.options is None or all(
            isinstance(o, str) and o.lower().endswith(_FILE_EXTENSIONS) for o in self.options
        )


@dataclass(frozen=True)
class OutputSpec:
    """One output slot of a node class."""

    name: str
    type: str
    """The type linked inputs must accept; ``COMBO`` for outputs typed as an option list."""
    is_list: bool = False


@dataclass(frozen=True)
class NodeSchema:
    """The inputs and outputs of one node class (one entry of ``/object_info``)."""

    name: str
    inputs: Mapping[str, InputSpec]
    """Every input in the server's order: required, then optional, then hidden."""
    outputs: tuple[OutputSpec, ...] = ()
    output_node: bool = False
    """True for nodes that produce results (SaveImage, PreviewImage, ...)."""
    display_name: str = ""
    category: str = ""
    python_module: str = ""
    """``nodes``, ``comfy_extras.…`` for core nodes; ``custom_nodes.<repo>`` otherwise."""

    @property
    def required(self) -> Mapping[str, InputSpec]:
        """The inputs a graph must set."""
        return self._in("required")

    @property
    def optional(self) -> Mapping[str, InputSpec]:
        """The inputs a graph may set."""
        return self._in("optional")

    @property
    def hidden(self) -> Mapping[str, InputSpec]:
        """The inputs the server fills in itself (PROMPT, UNIQUE_ID, ...)."""
        return self._in("hidden")

    def _in(self, category: InputCategory) -> Mapping[str, InputSpec]:
        return {n: s for n, s in self.inputs.items() if s.category == category}

    def describe_outputs(self) -> str:
        """The outputs as text, e.g. ``0 MODEL, 1 CLIP, 2 VAE`` (names, with types if different)."""
        if not self.outputs:
            return "none"
        return ", ".join(
            f"{i} {o.name}" + (f" ({o.type})" if o.type != o.name else "")
            for i, o in enumerate(self.outputs)
        )

    def output_index(self, key: str | int) -> int:
        """The index of the output named ``key`` (its ``output_name``, else its type if unique).

        Integers are checked against the number of outputs. Raises ValueError naming the
        node's outputs when ``key`` matches none of them or more than one.
        """
        if isinstance(key, int):
            if 0 <= key < len(self.outputs):
                return key
            raise ValueError(
                f"{self.name} has no output {key}; its outputs are: {self.describe_outputs()}."
            )
        for field_name in ("name", "type"):
            hits = [i for i, o in enumerate(self.outputs) if getattr(o, field_name) == key]
            if len(hits) == 1:
                return hits[0]
            if hits:
                raise ValueError(
                    f"{self.name} has several outputs of {field_name} {key!r} "
                    f"({', '.join(map(str, hits))}); pick one by index. "
                    f"Its outputs are: {self.describe_outputs()}."
                )
        raise ValueError(
            f"{self.name} has no output named {key!r}; its outputs are: "
            f"{self.describe_outputs()}. Use one of those names or an index."
        )

    @classmethod
    def from_object_info(cls, name: str, info: Mapping[str, Any]) -> NodeSchema:
        """Parse one node's entry of ``/object_info``. Raises ValueError if malformed."""
        if not isinstance(info, Mapping):
            raise ValueError(f"Schema of {name!r} must be an object, got {type(info).__name__}.")
        groups = info.get("input", {})
        order = info.get("input_order", {})
        if not isinstance(groups, Mapping) or not isinstance(order, Mapping):
            raise ValueError(f"Schema of {name!r}: 'input' and 'input_order' must be objects.")
        inputs: dict[str, InputSpec] = {}
        for category in _CATEGORIES:
            group = groups.get(category, {})
            if not isinstance(group, Mapping):
                raise ValueError(f"Schema of {name!r}: input.{category} must be an object.")
            ordered = [n for n in order.get(category, ()) if n in group]
            for input_name in ordered + [n for n in group if n not in ordered]:
                inputs[input_name] = _parse_input(name, input_name, category, group[input_name])

        types = info.get("output", [])
        names = info.get("output_name", types)
        is_list = info.get("output_is_list", [])
        if not (isinstance(types, list) and isinstance(names, list) and isinstance(is_list, list)):
            raise ValueError(f"Schema of {name!r}: output, output_name must be lists.")
        outputs = tuple(
            OutputSpec(
                name=str(names[i]) if i < len(names) else _type_name(t),
                type=_type_name(t),
                is_list=bool(is_list[i]) if i < len(is_list) else False,
            )
            for i, t in enumerate(types)
        )
        return cls(
            name=name,
            inputs=MappingProxyType(inputs),
            outputs=outputs,
            output_node=bool(info.get("output_node", False)),
            display_name=str(info.get("display_name") or name),
            category=str(info.get("category") or ""),
            python_module=str(info.get("python_module") or ""),
        )


def _type_name(t: Any) -> str:
    """An output type: a string, or ``COMBO`` for custom nodes that give an option list."""
    return "COMBO" if isinstance(t, list) else str(t)


def _parse_input(node: str, name: str, category: InputCategory, raw: Any) -> InputSpec:
    if isinstance(raw, str):  # hidden inputs may be a bare type name
        raw = [raw]
    if not isinstance(raw, list | tuple) or not raw or len(raw) > 2:
        raise ValueError(f"Schema of {node!r}: input {name!r} must be [type, options?].")
    kind = raw[0]
    extra = raw[1] if len(raw) > 1 and isinstance(raw[1], Mapping) else {}
    options: tuple[Any, ...] | None = None
    if isinstance(kind, list):
        kind, options = "COMBO", tuple(kind)
    elif kind == "COMBO" and isinstance(extra.get("options"), list):
        options = tuple(extra["options"])
    elif not isinstance(kind, str):
        raise ValueError(f"Schema of {node!r}: input {name!r} has a type that is not a string.")
    return InputSpec(
        name=name,
        type=kind,
        category=category,
        options=options,
        min=_number(extra.get("min")),
        max=_number(extra.get("max")),
        default=extra.get("default"),
        extra=MappingProxyType(dict(extra)),
    )


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


class NodeSchemas(Mapping[str, NodeSchema]):
    """The node classes a server offers, by class name (an immutable mapping).

    ``NodeSchemas.bundled()`` holds core ComfyUI 0.3.75 and the InstantID nodes; build
    others from a live server with ``NodeSchemas.from_object_info(data)``.
    """

    def __init__(self, schemas: Iterable[NodeSchema] = ()) -> None:
        self._schemas: dict[str, NodeSchema] = {s.name: s for s in schemas}

    @classmethod
    def from_object_info(cls, info: Mapping[str, Any]) -> NodeSchemas:
        """Parse the JSON of ``GET /object_info`` (or of several ``/object_info/{class}``).

        Raises ValueError naming the node whose entry is malformed.
        """
        if not isinstance(info, Mapping):
            raise ValueError(f"object_info must be an object, got {type(info).__name__}.")
        return cls(NodeSchema.from_object_info(str(n), i) for n, i in info.items())

    @classmethod
    def bundled(cls) -> NodeSchemas:
        """The schemas shipped with ryla-gen: core ComfyUI 0.3.75 plus cubiq's InstantID.

        Loaded once, then shared (the object is immutable).
        """
        return _bundled()

    def merged(self, other: NodeSchemas) -> NodeSchemas:
        """A new set with the classes of both; ``other`` wins where both have a class."""
        return NodeSchemas([*self.values(), *other.values()])

    def __getitem__(self, class_type: str) -> NodeSchema:
        return self._schemas[class_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._schemas)

    def __len__(self) -> int:
        return len(self._schemas)

    def __repr__(self) -> str:
        return f"NodeSchemas({len(self)} node classes)"


@functools.cache
def _bundled() -> NodeSchemas:
    folder = resources.files("ryla_gen") / "schemas"
    schemas = NodeSchemas()
    for file in ("core.json", "instantid.json"):
        data = json.loads((folder / file).read_text(encoding="utf-8"))
        schemas = schemas.merged(NodeSchemas.from_object_info(data))
    return schemas
