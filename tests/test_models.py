"""The model manifest: entries, per-workflow lists, and ``missing()``."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from ryla_gen import models
from ryla_gen.graph import NodeSchemas
from ryla_gen.models import ModelFile, all_model_files, find, for_workflow, missing, total_size
from ryla_gen.workflows import WORKFLOWS, examples

ALL = all_model_files()


def test_entries_are_complete_and_unique() -> None:
    assert len({m.relpath for m in ALL}) == len(ALL)
    for m in ALL:
        assert m.repo_id and m.path_in_repo, m.relpath
        assert m.size is not None and m.size > 0, m.relpath
        assert m.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", m.sha256), m.relpath
        assert m.description, m.relpath
        assert m.url == f"https://huggingface.co/{m.repo_id}/resolve/main/{m.path_in_repo}"


def test_only_flux_dev_is_gated() -> None:
    assert [m.filename for m in ALL if m.gated] == ["flux1-dev.safetensors"]


def test_flux_vae_comes_from_an_open_repo_and_is_shared() -> None:
    vae = find("vae", "ae.safetensors")
    assert vae is not None and not vae.gated
    assert "byte-identical" in vae.description
    for name in ("flux-dev", "flux-schnell", "z-image-turbo"):
        assert vae in for_workflow(name)


def test_known_sizes_match_the_hub() -> None:
    # Sizes the contracts quote (GB on the hub = 10**9 bytes, or GiB where the hub rounds).
    assert round(models.FLUX1_DEV.size / 1e9, 1) == 23.8  # type: ignore[operator]
    assert round(models.T5XXL_FP16.size / 1e9, 2) == 9.79  # type: ignore[operator]
    assert round(models.CLIP_L.size / 1e6) == 246  # type: ignore[operator]
    assert round(models.FLUX_AE.size / 1e6) == 335  # type: ignore[operator]
    assert round(models.Z_IMAGE_TURBO.size / 2**30, 2) == 11.46  # type: ignore[operator]
    assert round(models.QWEN_3_4B.size / 2**30, 2) == 7.49  # type: ignore[operator]


def test_antelopev2_lies_where_instantid_hard_codes_it() -> None:
    runtime = [m for m in ALL if not m.in_graph]
    assert sorted(m.relpath for m in runtime) == [
        f"insightface/models/antelopev2/{n}"
        for n in sorted(
            [
                "1k3d68.onnx",
                "2d106det.onnx",
                "genderage.onnx",
                "glintr100.onnx",
                "scrfd_10g_bnkps.onnx",
            ]
        )
    ]
    assert all(m in for_workflow("instantid") for m in runtime)


def test_graph_file_names_match_the_captured_schemas() -> None:
    """The schemas were captured with placeholder files named exactly like the manifest."""
    schemas = NodeSchemas.bundled()
    combos = {
        ("UNETLoader", "unet_name"): "diffusion_models/flux1-dev.safetensors",
        ("DualCLIPLoader", "clip_name1"): "text_encoders/t5xxl_fp16.safetensors",
        ("DualCLIPLoader", "clip_name2"): "text_encoders/clip_l.safetensors",
        ("VAELoader", "vae_name"): "vae/ae.safetensors",
        ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints/sd_xl_base_1.0.safetensors",
        ("InstantIDModelLoader", "instantid_file"): "instantid/ip-adapter.bin",
        (
            "ControlNetLoader",
            "control_net_name",
        ): "controlnet/instantid/diffusion_pytorch_model.safetensors",
    }
    for (node, name), relpath in combos.items():
        options = schemas[node].inputs[name].options or ()
        entry = _by_relpath(relpath)
        assert entry.filename in options, (node, name, options)


def test_every_file_a_default_graph_names_is_in_its_workflow_list() -> None:
    for wf in examples():
        listed = {m.relpath for m in for_workflow(wf.name)}
        for m in wf.required_models():
            if m.folder == "loras":
                continue
            assert m.relpath in listed, (wf.name, m.relpath)


def test_for_workflow_knows_every_registered_workflow_and_refuses_others() -> None:
    for name in WORKFLOWS:
        assert for_workflow(name)
    assert for_workflow("FLUX_DEV") == for_workflow("flux-dev")
    with pytest.raises(ValueError, match="flux-dev") as err:
        for_workflow("sd15")
    assert "sd15" in str(err.value) and "z-image-turbo" in str(err.value)


def test_missing_with_folder_filename_strings() -> None:
    need = for_workflow("flux-dev")
    have = ["vae/ae.safetensors", "text_encoders\\clip_l.safetensors"]  # Windows style too
    assert [m.filename for m in missing(need, have)] == [
        "flux1-dev.safetensors",
        "t5xxl_fp16.safetensors",
    ]
    assert missing(need, [m.relpath for m in need]) == []


def test_missing_with_a_folder_mapping() -> None:
    need = for_workflow("instantid")
    listing: dict[str, Any] = {
        "checkpoints": ["sd_xl_base_1.0.safetensors"],
        "controlnet": ["instantid\\diffusion_pytorch_model.safetensors"],
        "instantid": [],
    }
    assert [m.relpath for m in missing(need, listing)] == ["instantid/ip-adapter.bin"]


def test_missing_checks_runtime_files_only_when_asked_or_their_folder_is_listed() -> None:
    need = for_workflow("instantid")
    in_graph = [m.relpath for m in need if m.in_graph]
    # A server listing cannot see models/insightface: runtime files are not reported.
    assert missing(need, in_graph) == []
    # Asked explicitly, they are.
    assert len(missing(need, in_graph, include_runtime=True)) == 5
    # A disk walk that includes the folder reports the ones it lacks.
    walk = [*in_graph, "insightface/models/antelopev2/glintr100.onnx"]
    assert len(missing(need, walk)) == 4
    assert missing(need, walk, include_runtime=False) == []
    assert len(missing(need, {"insightface": []})) == 5 + 3


def test_missing_keeps_order_and_drops_repeats() -> None:
    need = [models.FLUX_AE, models.CLIP_L, models.FLUX_AE]
    assert missing(need, []) == [models.FLUX_AE, models.CLIP_L]


def test_missing_refuses_a_bare_string() -> None:
    with pytest.raises(TypeError):
        missing(ALL, "vae/ae.safetensors")
    with pytest.raises(TypeError):
        missing(ALL, {"vae": "ae.safetensors"})


def test_unknown_files_have_no_source() -> None:
    m = ModelFile(folder="loras", filename="mine.safetensors")
    assert m.url is None and not m.known and m.relpath == "loras/mine.safetensors"
    assert find("loras", "mine.safetensors") is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("filename", "../escape.safetensors"),
        ("filename", "/abs.safetensors"),
        ("filename", "a\\b.safetensors"),
        ("filename", "a\nb.safetensors"),
        ("folder", "models/loras"),
        ("sha256", "ABC"),
    ],
)
def test_model_file_refuses_unsafe_values(field: str, value: str) -> None:
    kwargs: dict[str, Any] = {"folder": "loras", "filename": "x.safetensors", field: value}
    with pytest.raises(ValidationError, match=field):
        ModelFile(**kwargs)


def test_model_file_is_frozen_and_url_quotes_paths() -> None:
    m = ModelFile(folder="loras", filename="x.safetensors", repo_id="a/b", path_in_repo="d/x y.st")
    assert m.url == "https://huggingface.co/a/b/resolve/main/d/x%20y.st"
    with pytest.raises(ValidationError):
        m.filename = "y.safetensors"  # type: ignore[misc]


def test_total_size_counts_each_file_once() -> None:
    dev = for_workflow("flux-dev")
    assert total_size([*dev, *dev]) == sum(m.size or 0 for m in dev)
    assert total_size([ModelFile(folder="loras", filename="x.safetensors")]) == 0


def _by_relpath(relpath: str) -> ModelFile:
    folder, filename = relpath.split("/", 1)
    entry = find(folder, filename)
    assert entry is not None, relpath
    return entry
