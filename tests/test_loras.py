"""LoRA storage: names, sizes, safetensors checks, atomic writes, confinement to its folder."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ryla_gen.testing import ComfyUIInstall
from ryla_gen_modal.loras import (
    InvalidLoraError,
    InvalidLoraNameError,
    LoraNotFoundError,
    LoraStore,
    LoraTooLargeError,
    check_lora_name,
    check_safetensors,
)

_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1}


def safetensors_bytes(
    tensors: dict[str, tuple[str, list[int]]] | None = None,
    *,
    metadata: dict[str, Any] | None = None,
    header_override: dict[str, Any] | None = None,
    raw_header: bytes | None = None,
    trailing: bytes = b"",
) -> bytes:
    """A safetensors file built by hand: header length, JSON header, data."""
    tensors = tensors if tensors is not None else {"lora_up.weight": ("F16", [4, 2])}
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = _BYTES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    if header_override is not None:
        header = header_override
    body = raw_header if raw_header is not None else json.dumps(header).encode()
    return (
        struct.pack("<Q", len(body))
        + body
        + bytes(range(256)) * (offset // 256)
        + bytes(offset % 256)
        + trailing
    )


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.fixture
def store(tmp_path: Path) -> LoraStore:
    return LoraStore(tmp_path / "loras", max_bytes=64 * 1024)


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../evil.safetensors",
        "..",
        "sub/dir.safetensors",
        "sub\\dir.safetensors",
        "/etc/passwd.safetensors",
        "/abs.safetensors",
        "C:evil.safetensors",
        ".hidden.safetensors",
        "-dash.safetensors",
        "model.ckpt",
        "model.pt",
        "model.safetensors.exe",
        "model.SAFETENSORS",
        "model",
        "",
        " model.safetensors",
        "mo del.safetensors",
        "modèle.safetensors",
        "a\x00b.safetensors",
        "a\nb.safetensors",
        "x" * 129 + ".safetensors",
    ],
)
def test_bad_names_are_refused_before_any_path_is_built(store: LoraStore, name: str) -> None:
    with pytest.raises(InvalidLoraNameError):
        check_lora_name(name)
    with pytest.raises(InvalidLoraNameError):
        store.save_bytes(name, safetensors_bytes())
    with pytest.raises(InvalidLoraNameError):
        store.delete(name)
    assert store.list() == []
    assert leftovers(store.directory) == []


@pytest.mark.parametrize(
    "name",
    ["a.safetensors", "My_LoRA-v1.2.safetensors", "0.safetensors", "x" * 128 + ".safetensors"],
)
def test_good_names(name: str) -> None:
    assert check_lora_name(name) == name


# -- content ---------------------------------------------------------------------------------------


def test_valid_file_round_trip(store: LoraStore) -> None:
    data = safetensors_bytes(
        {"a.lora_up.weight": ("F16", [8, 4]), "a.alpha": ("F32", []), "b": ("BF16", [0, 3])},
        metadata={"ss_network_dim": "4"},
    )
    saved = store.save_bytes("style.safetensors", data)
    assert saved.name == "style.safetensors" and saved.size == len(data)
    assert (store.directory / "style.safetensors").read_bytes() == data
    assert [f.as_dict() for f in store.list()] == [{"name": "style.safetensors", "size": len(data)}]
    assert store.get("style.safetensors").size == len(data)
    assert leftovers(store.directory) == []
    store.delete("style.safetensors")
    assert store.list() == []
    with pytest.raises(LoraNotFoundError):
        store.get("style.safetensors")


def test_replacing_keeps_the_old_file_when_the_new_one_is_bad(store: LoraStore) -> None:
    good = safetensors_bytes()
    store.save_bytes("keep.safetensors", good)
    with pytest.raises(InvalidLoraError):
        store.save_bytes("keep.safetensors", b"not a safetensors file at all")
    assert (store.directory / "keep.safetensors").read_bytes() == good
    assert leftovers(store.directory) == []
    better = safetensors_bytes({"w": ("F32", [16])})
    store.save_bytes("keep.safetensors", better)
    assert (store.directory / "keep.safetensors").read_bytes() == better


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buf, format="PNG")
    return buf.getvalue()


CORRUPT = {
    "empty": b"",
    "tiny": b"\x01\x02",
    "png": _png(),
    "text": b"hello world, this is not a tensor file" * 10,
    "header length beyond file": struct.pack("<Q", 10_000) + b"{}",
    "huge header length": struct.pack("<Q", 2**63) + b"{}" + bytes(100),
    "header not json": struct.pack("<Q", 10) + b"{not json}",
    "header is a list": safetensors_bytes(raw_header=b"[1, 2, 3]"),
    "header is binary": safetensors_bytes(raw_header=b"{\xff\xfe}"),
    "unknown dtype": safetensors_bytes(
        header_override={"w": {"dtype": "F128", "shape": [2], "data_offsets": [0, 4]}}
    ),
    "shape disagrees with offsets": safetensors_bytes(
        {"w": ("F16", [4])},
        header_override={"w": {"dtype": "F16", "shape": [8], "data_offsets": [0, 8]}},
    ),
    "negative shape": safetensors_bytes(
        {"w": ("F16", [4])},
        header_override={"w": {"dtype": "F16", "shape": [-4], "data_offsets": [0, 8]}},
    ),
    "offsets past the data": safetensors_bytes(
        {"w": ("F16", [4])},
        header_override={"w": {"dtype": "F16", "shape": [40], "data_offsets": [0, 80]}},
    ),
    "reversed offsets": safetensors_bytes(
        {"w": ("F16", [4])},
        header_override={"w": {"dtype": "F16", "shape": [4], "data_offsets": [8, 0]}},
    ),
    "gap between tensors": safetensors_bytes(
        {"a": ("F16", [4]), "b": ("F16", [4])},
        header_override={
            "a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
            "b": {"dtype": "F16", "shape": [4], "data_offsets": [8, 16]},
        },
    ),
    "overlapping tensors": safetensors_bytes(
        {"a": ("F16", [8])},
        header_override={
            "a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]},
            "b": {"dtype": "F16", "shape": [4], "data_offsets": [4, 12]},
        },
    ),
    "trailing garbage": safetensors_bytes(trailing=b"EXTRA"),
    "truncated data": safetensors_bytes({"w": ("F32", [64])})[:-10],
    "duplicate keys": safetensors_bytes(
        {"w": ("F16", [4])},
        raw_header=b'{"w": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]}, '
        b'"w": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]}}',
    ),
    "metadata not strings": safetensors_bytes(metadata={"rank": 4}),
    "unknown tensor field": safetensors_bytes(
        {"w": ("F16", [4])},
        header_override={
            "w": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8], "evil": "../x"}
        },
    ),
    "boolean shape": safetensors_bytes(
        {"w": ("U8", [1])},
        header_override={"w": {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}},
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_not_safetensors_or_corrupt_header_is_refused(store: LoraStore, case: str) -> None:
    with pytest.raises(InvalidLoraError):
        store.save_bytes("x.safetensors", CORRUPT[case])
    assert not (store.directory / "x.safetensors").exists()
    assert leftovers(store.directory) == []


def test_check_safetensors_reads_only_the_header(tmp_path: Path) -> None:
    data = safetensors_bytes({"w": ("F32", [1024])}, metadata={"format": "pt"})
    path = tmp_path / "w.safetensors"
    path.write_bytes(data)
    with open(path, "rb") as f:
        header = check_safetensors(f, len(data))
    assert header["__metadata__"] == {"format": "pt"}
    assert header["w"]["shape"] == [1024]


# -- size -----------------------------------------------------------------------------------------


def test_oversized_upload_is_refused_and_leaves_nothing(store: LoraStore) -> None:
    big = safetensors_bytes({"w": ("F32", [32 * 1024])})  # 128 KiB > 64 KiB
    with pytest.raises(LoraTooLargeError) as info:
        store.save_bytes("big.safetensors", big)
    assert info.value.limit == store.max_bytes
    assert store.list() == [] and leftovers(store.directory) == []


async def test_streamed_upload_is_capped_while_it_streams(store: LoraStore) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while True:
            sent += 8192
            yield bytes(8192)

    with pytest.raises(LoraTooLargeError):
        await store.save_stream("stream.safetensors", endless())
    assert sent <= store.max_bytes + 8192  # stopped reading right after the cap
    assert store.list() == [] and leftovers(store.directory) == []


async def test_streamed_upload_round_trip(store: LoraStore) -> None:
    data = safetensors_bytes({"w": ("F16", [1000])})

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 333):
            yield data[i : i + 333]

    saved = await store.save_stream("s.safetensors", chunks())
    assert saved.size == len(data)
    assert (store.directory / "s.safetensors").read_bytes() == data


def test_max_bytes_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LoraStore(tmp_path, max_bytes=0)


# -- confinement ----------------------------------------------------------------------------------


def test_list_and_delete_stay_inside_the_folder(store: LoraStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(safetensors_bytes())
    d = store.directory
    os.symlink(outside, d / "link.safetensors")
    (d / "subdir.safetensors").mkdir()
    (d / "notes.txt").write_text("not a lora")
    (d / ".upload-abc.part").write_bytes(b"partial")
    store.save_bytes("real.safetensors", safetensors_bytes())

    assert [f.name for f in store.list()] == ["real.safetensors"]
    for name in ("link.safetensors", "subdir.safetensors"):
        with pytest.raises(LoraNotFoundError):
            store.delete(name)
        assert not store.exists(name)
    with pytest.raises(InvalidLoraNameError):
        store.delete("../outside.safetensors")
    with pytest.raises(InvalidLoraNameError):
        store.delete(str(outside))
    assert outside.exists() and (d / "link.safetensors").is_symlink()
    with pytest.raises(LoraNotFoundError):
        store.delete("missing.safetensors")


def test_saving_over_a_symlink_replaces_the_link_not_its_target(
    store: LoraStore, tmp_path: Path
) -> None:
    outside = tmp_path / "victim.safetensors"
    original = safetensors_bytes({"w": ("U8", [3])})
    outside.write_bytes(original)
    os.symlink(outside, store.directory / "trap.safetensors")
    store.save_bytes("trap.safetensors", safetensors_bytes())
    assert outside.read_bytes() == original
    assert not (store.directory / "trap.safetensors").is_symlink()


# -- against the real safetensors library --------------------------------------------------------


@pytest.mark.comfyui
def test_files_written_by_the_safetensors_library_are_accepted(
    comfyui_install: ComfyUIInstall, store: LoraStore, tmp_path: Path
) -> None:
    """ComfyUI's own environment writes a LoRA-like file; our checker must accept it,
    and the library must reject what our checker rejects."""
    script = tmp_path / "make.py"
    path = tmp_path / "real.safetensors"
    script.write_text(
        "import sys, torch\n"
        "from safetensors.torch import save_file\n"
        "save_file({'lora_up.weight': torch.ones(8, 4, dtype=torch.float16),\n"
        "           'lora_down.weight': torch.zeros(4, 8, dtype=torch.bfloat16),\n"
        "           'alpha': torch.tensor(4.0), 'steps': torch.arange(3)},\n"
        "          sys.argv[1], metadata={'ss_network_dim': '4'})\n"
    )
    subprocess.run([str(comfyui_install.python), str(script), str(path)], check=True, timeout=120)
    data = path.read_bytes()
    assert store.save_bytes("real.safetensors", data).size == len(data)

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(CORRUPT["gap between tensors"])
    check = subprocess.run(
        [
            str(comfyui_install.python),
            "-c",
            "import sys; from safetensors import safe_open; safe_open(sys.argv[1], 'pt')",
            str(bad),
        ],
        capture_output=True,
        timeout=120,
    )
    assert check.returncode != 0
