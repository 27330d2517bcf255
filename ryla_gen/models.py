"""The model files each workflow needs, and where to download them.

Every entry names the file exactly as a graph (or a custom node) uses it, the ComfyUI
``models/`` subfolder it lives in, and the Hugging Face repository it comes from.
Sizes and SHA-256 digests are those the hub reports for the file (its Git LFS pointer);
``sha256`` is ``None`` where it could not be verified.

Where the same bytes are published both in a gated repository and in an open one, the
entry points at the open one and its description says so: nothing here needs a token
except FLUX.1-dev itself.

>>> from ryla_gen.models import for_workflow, missing
>>> [f.relpath for f in for_workflow("flux-dev")][:2]
['diffusion_models/flux1-dev.safetensors', 'text_encoders/t5xxl_fp16.safetensors']
>>> missing(for_workflow("flux-dev"), {"vae": ["ae.safetensors"]})[0].filename
'flux1-dev.safetensors'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ANTELOPEV2",
    "CLIP_L",
    "FILE_INPUTS",
    "FLUX1_DEV",
    "FLUX1_SCHNELL",
    "FLUX_AE",
    "HF_BASE_URL",
    "INSTANTID_ADAPTER",
    "INSTANTID_CONTROLNET",
    "QWEN_3_4B",
    "SDXL_BASE",
    "T5XXL_FP16",
    "Z_IMAGE_TURBO",
    "ModelFile",
    "all_model_files",
    "file_folder",
    "find",
    "for_workflow",
    "missing",
    "total_size",
    "workflow_names",
]

HF_BASE_URL = "https://huggingface.co"
"""Where ``ModelFile.url`` points."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FOLDER = re.compile(r"^[a-z0-9_]+$")


def _check_relative(value: str, what: str) -> str:
    """Refuse absolute paths, ``..``, backslashes and control characters."""
    if not value or value != value.strip():
        raise ValueError(f"{what} must be non-empty without surrounding spaces, got {value!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{what} must not contain control characters, got {value!r}")
    if "\\" in value or value.startswith("/") or ":" in value:
        raise ValueError(f"{what} must be a relative path with forward slashes, got {value!r}")
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise ValueError(f"{what} must not contain empty, '.' or '..' segments, got {value!r}")
    return value


class ModelFile(BaseModel):
    """One model file: where it goes in ComfyUI's ``models/`` folder and where it comes from.

    ``relpath`` (``folder/filename``) is the path below ``ComfyUI/models``. A file the
    manifest does not know (a swapped fine-tune, a LoRA) has ``repo_id=None`` and no
    ``url``: it must be put on the server by hand.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    folder: str = Field(
        description="ComfyUI models subfolder, e.g. 'diffusion_models', 'loras', 'instantid'."
    )
    filename: str = Field(
        description=(
            "The name exactly as the graph uses it; may contain a subfolder "
            "(e.g. 'instantid/diffusion_pytorch_model.safetensors')."
        )
    )
    repo_id: str | None = Field(
        default=None,
        description="Hugging Face repository, e.g. 'comfyanonymous/flux_text_encoders'.",
    )
    path_in_repo: str | None = Field(
        default=None, description="The file's path in that repository."
    )
    revision: str = Field(default="main", description="Branch, tag or commit to download.")
    size: int | None = Field(default=None, ge=0, description="Size in bytes as the hub reports it.")
    sha256: str | None = Field(
        default=None, description="Lowercase hex SHA-256 of the file; None where not verified."
    )
    gated: bool = Field(
        default=False,
        description="The repository requires a Hugging Face token and an accepted licence.",
    )
    in_graph: bool = Field(
        default=True,
        description=(
            "False for files no graph names but a custom node loads from a fixed path "
            "(e.g. InstantID's antelopev2 face models); bake those into the image."
        ),
    )
    description: str = Field(default="", description="What the file is, in words.")

    @field_validator("folder")
    @classmethod
    def _folder_ok(cls, v: str) -> str:
        if not _FOLDER.match(v):
            raise ValueError(f"folder must be one plain folder name like 'loras', got {v!r}")
        return v

    @field_validator("filename")
    @classmethod
    def _filename_ok(cls, v: str) -> str:
        return _check_relative(v, "filename")

    @field_validator("path_in_repo")
    @classmethod
    def _path_ok(cls, v: str | None) -> str | None:
        return None if v is None else _check_relative(v, "path_in_repo")

    @field_validator("sha256")
    @classmethod
    def _sha_ok(cls, v: str | None) -> str | None:
        if v is not None and not _SHA256.match(v):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {v!r}")
        return v

    @property
    def relpath(self) -> str:
        """``folder/filename``: the path below ``ComfyUI/models``."""
        return f"{self.folder}/{self.filename}"

    @property
    def url(self) -> str | None:
        """The hub's download ("resolve") URL, or None when the source is unknown."""
        if self.repo_id is None or self.path_in_repo is None:
            return None
        return (
            f"{HF_BASE_URL}/{self.repo_id}/resolve/{quote(self.revision, safe='')}/"
            f"{quote(self.path_in_repo)}"
        )

    @property
    def known(self) -> bool:
        """True when the manifest knows where to download this file."""
        return self.url is not None

    def __str__(self) -> str:
        return self.relpath


#: Loader node class -> {input name: ComfyUI models folder} for inputs naming a file.
FILE_INPUTS: dict[str, dict[str, str]] = {
    "CheckpointLoaderSimple": {"ckpt_name": "checkpoints"},
    "CheckpointLoader": {"ckpt_name": "checkpoints"},
    "UNETLoader": {"unet_name": "diffusion_models"},
    "VAELoader": {"vae_name": "vae"},
    "CLIPLoader": {"clip_name": "text_encoders"},
    "DualCLIPLoader": {"clip_name1": "text_encoders", "clip_name2": "text_encoders"},
    "TripleCLIPLoader": {
        "clip_name1": "text_encoders",
        "clip_name2": "text_encoders",
        "clip_name3": "text_encoders",
    },
    "LoraLoader": {"lora_name": "loras"},
    "LoraLoaderModelOnly": {"lora_name": "loras"},
    "ControlNetLoader": {"control_net_name": "controlnet"},
    "DiffControlNetLoader": {"control_net_name": "controlnet"},
    "CLIPVisionLoader": {"clip_name": "clip_vision"},
    "UpscaleModelLoader": {"model_name": "upscale_models"},
    "InstantIDModelLoader": {"instantid_file": "instantid"},
}


def file_folder(class_type: str, input_name: str) -> str | None:
    """The models folder a loader node's input names a file in, or None."""
    return FILE_INPUTS.get(class_type, {}).get(input_name)


# -- the manifest -------------------------------------------------------------------------

FLUX1_DEV = ModelFile(
    folder="diffusion_models",
    filename="flux1-dev.safetensors",
    repo_id="black-forest-labs/FLUX.1-dev",
    path_in_repo="flux1-dev.safetensors",
    size=23_802_932_552,
    sha256="4610115bb0c89560703c892c59ac2742fa821e60ef5871b33493ba544683abd7",
    gated=True,
    description=(
        "FLUX.1 [dev] transformer, bf16 (12B parameters). Gated: accept the licence on the "
        "hub and set HF_TOKEN. weight_dtype='fp8_e4m3fn' halves its GPU memory."
    ),
)
FLUX1_SCHNELL = ModelFile(
    folder="diffusion_models",
    filename="flux1-schnell.safetensors",
    repo_id="black-forest-labs/FLUX.1-schnell",
    path_in_repo="flux1-schnell.safetensors",
    size=23_782_506_688,
    sha256="9403429e0052277ac2a87ad800adece5481eecefd9ed334e1f348723621d2a0a",
    description="FLUX.1 [schnell] transformer, bf16, Apache-2.0, 1-4 step distilled.",
)
T5XXL_FP16 = ModelFile(
    folder="text_encoders",
    filename="t5xxl_fp16.safetensors",
    repo_id="comfyanonymous/flux_text_encoders",
    path_in_repo="t5xxl_fp16.safetensors",
    size=9_787_841_024,
    sha256="6e480b09fae049a72d2a8c5fbccb8d3e92febeb233bbe9dfe7256958a9167635",
    description="T5-XXL text encoder (fp16) for Flux, ComfyUI format; not gated.",
)
CLIP_L = ModelFile(
    folder="text_encoders",
    filename="clip_l.safetensors",
    repo_id="comfyanonymous/flux_text_encoders",
    path_in_repo="clip_l.safetensors",
    size=246_144_152,
    sha256="660c6f5b1abae9dc498ac2d21e1347d2abdb0cf6c0c0c8576cd796491d9a6cdd",
    description="CLIP-L text encoder for Flux, ComfyUI format; not gated.",
)
FLUX_AE = ModelFile(
    folder="vae",
    filename="ae.safetensors",
    repo_id="Comfy-Org/z_image_turbo",
    path_in_repo="split_files/vae/ae.safetensors",
    size=335_304_388,
    sha256="afc8e28272cd15db3919bacdb6918ce9c1ed22e96cb12c4d5ed0fba823529e38",
    description=(
        "The FLUX.1 autoencoder, used by Flux and Z-Image-Turbo. Taken from Comfy-Org's "
        "open Z-Image-Turbo repository: byte-identical (same SHA-256) to the ae.safetensors "
        "in the gated black-forest-labs/FLUX.1-dev repository, so no token is needed."
    ),
)
Z_IMAGE_TURBO = ModelFile(
    folder="diffusion_models",
    filename="z_image_turbo_bf16.safetensors",
    repo_id="Comfy-Org/z_image_turbo",
    path_in_repo="split_files/diffusion_models/z_image_turbo_bf16.safetensors",
    size=12_309_866_400,
    sha256="2407613050b809ffdff18a4ac99af83ea6b95443ecebdf80e064a79c825574a6",
    description="Z-Image-Turbo (Tongyi-MAI, 6B, Apache-2.0) diffusion model, bf16, ComfyUI format.",
)
QWEN_3_4B = ModelFile(
    folder="text_encoders",
    filename="qwen_3_4b.safetensors",
    repo_id="Comfy-Org/z_image_turbo",
    path_in_repo="split_files/text_encoders/qwen_3_4b.safetensors",
    size=8_044_982_048,
    sha256="6c671498573ac2f7a5501502ccce8d2b08ea6ca2f661c458e708f36b36edfc5a",
    description="Qwen3-4B text encoder for Z-Image-Turbo (loaded with CLIPLoader type lumina2).",
)
SDXL_BASE = ModelFile(
    folder="checkpoints",
    filename="sd_xl_base_1.0.safetensors",
    repo_id="stabilityai/stable-diffusion-xl-base-1.0",
    path_in_repo="sd_xl_base_1.0.safetensors",
    size=6_938_078_334,
    sha256="31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
    description="Stable Diffusion XL 1.0 base checkpoint (UNet + CLIP + VAE); InstantID's base.",
)
INSTANTID_ADAPTER = ModelFile(
    folder="instantid",
    filename="ip-adapter.bin",
    repo_id="InstantX/InstantID",
    path_in_repo="ip-adapter.bin",
    size=1_691_134_141,
    sha256="02b3618e36d803784166660520098089a81388e61a93ef8002aa79a5b1c546e1",
    description="InstantID face adapter (IP-Adapter weights), read by InstantIDModelLoader.",
)
INSTANTID_CONTROLNET = ModelFile(
    folder="controlnet",
    filename="instantid/diffusion_pytorch_model.safetensors",
    repo_id="InstantX/InstantID",
    path_in_repo="ControlNetModel/diffusion_pytorch_model.safetensors",
    size=2_502_139_136,
    sha256="c8127be9f174101ebdafee9964d856b49b634435cf6daa396d3f593cf0bbbb05",
    description="InstantID IdentityNet ControlNet (SDXL), stored as controlnet/instantid/.",
)


def _antelope(name: str, size: int, sha256: str, what: str) -> ModelFile:
    return ModelFile(
        folder="insightface",
        filename=f"models/antelopev2/{name}",
        repo_id="DIAMONIK7777/antelopev2",
        path_in_repo=name,
        size=size,
        sha256=sha256,
        in_graph=False,
        description=(
            f"insightface antelopev2 {what}. ComfyUI_InstantID loads it from the hard-coded "
            "path models/insightface/models/antelopev2 (extra_model_paths do not reach it). "
            "Upstream ships antelopev2 only as a zip on insightface's GitHub releases; this "
            "is a per-file Hugging Face mirror whose SHA-256 matches other copies."
        ),
    )


ANTELOPEV2 = (
    _antelope(
        "1k3d68.onnx",
        143_607_619,
        "df5c06b8a0c12e422b2ed8947b8869faa4105387f199c477af038aa01f9a45cc",
        "3D 68-point landmark model",
    ),
    _antelope(
        "2d106det.onnx",
        5_030_888,
        "f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf",
        "2D 106-point landmark model",
    ),
    _antelope(
        "genderage.onnx",
        1_322_532,
        "4fde69b1c810857b88c64a335084f1c3fe8f01246c9a191b48c7bb756d6652fb",
        "gender/age model",
    ),
    _antelope(
        "glintr100.onnx",
        260_665_334,
        "4ab1d6435d639628a6f3e5008dd4f929edf4c4124b1a7169e1048f9fef534cdf",
        "face recognition (embedding) model",
    ),
    _antelope(
        "scrfd_10g_bnkps.onnx",
        16_923_827,
        "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
        "face detector",
    ),
)

_ALL: tuple[ModelFile, ...] = (
    FLUX1_DEV,
    FLUX1_SCHNELL,
    T5XXL_FP16,
    CLIP_L,
    FLUX_AE,
    Z_IMAGE_TURBO,
    QWEN_3_4B,
    SDXL_BASE,
    INSTANTID_ADAPTER,
    INSTANTID_CONTROLNET,
    *ANTELOPEV2,
)

_INSTANTID = (SDXL_BASE, INSTANTID_ADAPTER, INSTANTID_CONTROLNET, *ANTELOPEV2)
_BY_WORKFLOW: dict[str, tuple[ModelFile, ...]] = {
    "flux-dev": (FLUX1_DEV, T5XXL_FP16, CLIP_L, FLUX_AE),
    "flux-schnell": (FLUX1_SCHNELL, T5XXL_FP16, CLIP_L, FLUX_AE),
    "z-image-turbo": (Z_IMAGE_TURBO, QWEN_3_4B, FLUX_AE),
    "instantid": _INSTANTID,
    "character-sheet": _INSTANTID,
}
_BY_RELPATH: dict[str, ModelFile] = {m.relpath: m for m in _ALL}


def all_model_files() -> list[ModelFile]:
    """Every file in the manifest, each once (shared files such as ``ae`` appear once)."""
    return list(_ALL)


def workflow_names() -> list[str]:
    """The workflow names ``for_workflow`` knows, sorted."""
    return sorted(_BY_WORKFLOW)


def for_workflow(name: str) -> list[ModelFile]:
    """The manifest files a workflow's default graph needs (runtime files included).

    Raises ValueError naming the valid workflows when ``name`` is unknown.
    """
    key = name.strip().lower().replace("_", "-")
    try:
        return list(_BY_WORKFLOW[key])
    except KeyError:
        valid = ", ".join(workflow_names())
        raise ValueError(f"Unknown workflow {name!r}; valid names: {valid}.") from None


def find(folder: str, filename: str) -> ModelFile | None:
    """The manifest entry for ``folder/filename``, or None when the manifest lacks it."""
    return _BY_RELPATH.get(f"{folder}/{_normalise(filename)}")


def total_size(files: Iterable[ModelFile]) -> int:
    """Total bytes of the given files whose size is known (each relpath counted once)."""
    seen: dict[str, int] = {}
    for f in files:
        if f.size is not None:
            seen[f.relpath] = f.size
    return sum(seen.values())


def _normalise(path: str) -> str:
    # ComfyUI on Windows lists sub-folder files with backslashes.
    return path.replace("\\", "/").strip("/")


def missing(
    required: Iterable[ModelFile],
    available: Iterable[str] | Mapping[str, Iterable[str]],
    *,
    include_runtime: bool | None = None,
) -> list[ModelFile]:
    """The files of ``required`` that ``available`` lacks, in order, without repeats.

    ``available`` is either an iterable of ``"folder/filename"`` strings (e.g. a walk of a
    models directory) or a mapping ``folder -> filenames`` (what a server lists per folder).
    Backslashes count as forward slashes.

    ``include_runtime`` decides whether files no graph names (``in_graph=False``, such as
    the antelopev2 face models) are checked: True always, False never, and None (default)
    only when ``available`` mentions their folder at all. A ComfyUI server cannot list
    ``models/insightface``, so by default a server listing does not report them missing.
    """
    have: set[str] = set()
    folders: set[str] = set()
    if isinstance(available, Mapping):
        for folder, names in available.items():
            folder_n = _normalise(str(folder))
            folders.add(folder_n)
            if isinstance(names, str):
                raise TypeError(
                    f"available[{folder!r}] must be an iterable of file names, not a string"
                )
            have.update(f"{folder_n}/{_normalise(str(n))}" for n in names)
    else:
        if isinstance(available, str):
            raise TypeError("available must be an iterable of 'folder/filename' strings")
        for item in available:
            path = _normalise(str(item))
            have.add(path)
            folders.add(path.split("/", 1)[0])

    out: list[ModelFile] = []
    seen: set[str] = set()
    for f in required:
        if f.relpath in seen:
            continue
        seen.add(f.relpath)
        if not f.in_graph:
            check = f.folder in folders if include_runtime is None else include_runtime
            if not check:
                continue
        if f.relpath not in have:
            out.append(f)
    return out
