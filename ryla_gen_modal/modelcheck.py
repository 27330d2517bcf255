"""Which model files a graph names, and which of them a models folder lacks.

Used before a job is spawned (answer ``400 model_missing`` at once instead of
starting a GPU for a graph that cannot load), by ``GET /models``, and by the Modal
worker to decide when to reload its volumes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ryla_gen.models import FILE_INPUTS, ModelFile

__all__ = [
    "FILE_INPUTS",
    "FOLDER_ALIASES",
    "graph_model_files",
    "is_present",
    "missing_files",
    "present_size",
]

#: Folders ComfyUI also searches under their legacy names.
FOLDER_ALIASES: dict[str, tuple[str, ...]] = {
    "diffusion_models": ("diffusion_models", "unet"),
    "text_encoders": ("text_encoders", "clip"),
}

_MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx")


def graph_model_files(graph: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(folder, filename)`` of every model file the graph's loader nodes name.

    Values that are links, or names without a model file suffix (VAELoader's built-in
    ``pixel_space``/``taesd`` choices), are left out. Order follows the graph; no repeats.
    """
    out: dict[tuple[str, str], None] = {}
    for node in graph.values():
        if not isinstance(node, Mapping):
            continue
        inputs_for = FILE_INPUTS.get(str(node.get("class_type")))
        inputs = node.get("inputs")
        if not inputs_for or not isinstance(inputs, Mapping):
            continue
        for name, folder in inputs_for.items():
            value = inputs.get(name)
            if isinstance(value, str) and value.lower().endswith(_MODEL_SUFFIXES):
                out[(folder, value.replace("\\", "/"))] = None
    return list(out)


def _safe(filename: str) -> PurePosixPath | None:
    p = PurePosixPath(filename)
    if not filename or p.is_absolute() or any(part in ("", ".", "..") for part in p.parts):
        return None
    return p


def _candidates(
    folder: str, filename: str, models_dirs: Sequence[Path], lora_dirs: Sequence[Path]
) -> list[Path]:
    rel = _safe(filename)
    if rel is None:
        return []
    paths = [d / f / rel for d in models_dirs for f in FOLDER_ALIASES.get(folder, (folder,))]
    if folder == "loras":
        paths += [d / rel for d in lora_dirs]
    return paths


def present_size(
    folder: str,
    filename: str,
    *,
    models_dirs: Sequence[Path],
    lora_dirs: Sequence[Path] = (),
) -> int | None:
    """Size in bytes of the file where ComfyUI would find it, or None if it is absent.

    Unsafe names (absolute, ``..``) count as absent.
    """
    for path in _candidates(folder, filename, models_dirs, lora_dirs):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if not os.path.isdir(path):
            return st.st_size
    return None


def is_present(
    folder: str, filename: str, *, models_dirs: Sequence[Path], lora_dirs: Sequence[Path] = ()
) -> bool:
    """Whether ComfyUI would find ``folder/filename`` in one of the folders."""
    return present_size(folder, filename, models_dirs=models_dirs, lora_dirs=lora_dirs) is not None


def missing_files(
    files: Iterable[tuple[str, str] | ModelFile],
    *,
    models_dirs: Sequence[Path],
    lora_dirs: Sequence[Path] = (),
) -> list[str]:
    """``folder/filename`` of each file absent from every folder, in order, no repeats.

    Manifest files no graph names (``in_graph=False``, e.g. the antelopev2 face models
    baked into the Modal image) are checked only where a models folder has their
    folder at all.
    """
    out: dict[str, None] = {}
    for f in files:
        if isinstance(f, ModelFile):
            if not f.in_graph and not any((d / f.folder).is_dir() for d in models_dirs):
                continue
            folder, filename = f.folder, f.filename
        else:
            folder, filename = f
        if not is_present(folder, filename, models_dirs=models_dirs, lora_dirs=lora_dirs):
            out[f"{folder}/{filename}"] = None
    return list(out)
