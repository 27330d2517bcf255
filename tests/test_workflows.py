"""Workflow builders: golden graphs, LoRAs, validation messages, images, properties.

Golden graphs live in ``tests/golden/<workflow>.json``; ``RYLA_GEN_UPDATE_GOLDEN=1``
rewrites them (review the diff before committing).
"""

from __future__ import annotations

import base64
import io
import json
import os
import typing
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import BaseModel, ValidationError

from ryla_gen.graph import Graph, NodeSchemas
from ryla_gen.workflows import (
    MAX_SEED,
    SAMPLERS,
    SCHEDULERS,
    WEIGHT_DTYPES,
    WORKFLOWS,
    CharacterSheet,
    FluxDev,
    FluxSchnell,
    InputImage,
    InstantID,
    LoRA,
    Workflow,
    ZImageTurbo,
    example_face,
    examples,
    get_workflow,
    with_triggers,
)
from ryla_gen.workflows.flux import WeightDtype

GOLDEN = Path(__file__).parent / "golden"
SCHEMAS = NodeSchemas.bundled()
UPDATE = os.environ.get("RYLA_GEN_UPDATE_GOLDEN") == "1"


def face_png(size: int = 64, shade: int = 0) -> bytes:
    """A deterministic picture built from arithmetic, so its pixels never change."""
    raw = bytes(
        ((x * 4 + shade) % 256, (y * 4) % 256, ((x ^ y) * 3) % 256)[c]
        for y in range(size)
        for x in range(size)
        for c in range(3)
    )
    im = Image.frombytes("RGB", (size, size), raw)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


FACE = InputImage.load(face_png(), field="face_image")
POSE = InputImage.load(face_png(shade=99), field="pose_image")


def defaults(name: str) -> Workflow:
    """Each builder with default parameters and a fixed seed."""
    cls = get_workflow(name)
    if cls is InstantID:
        return InstantID(prompt="portrait photo of a person", face_image=FACE, seed=12345)
    if cls is CharacterSheet:
        return CharacterSheet(
            face_image=FACE,
            views=["front view of a person", "side view of a person", "full body shot"],
            seed=12345,
        )
    return cls.model_validate({"prompt": "a lighthouse at dusk", "seed": 12345})


def api(wf: Workflow) -> dict[str, Any]:
    return wf.to_graph().to_api()


def nodes_of(graph: dict[str, Any], class_type: str) -> list[tuple[str, dict[str, Any]]]:
    return [(i, n["inputs"]) for i, n in graph.items() if n["class_type"] == class_type]


def one(graph: dict[str, Any], class_type: str) -> tuple[str, dict[str, Any]]:
    found = nodes_of(graph, class_type)
    assert len(found) == 1, (class_type, found)
    return found[0]


def source(graph: dict[str, Any], link: list[Any]) -> str:
    return str(graph[link[0]]["class_type"])


# -- golden graphs ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_golden_graph(name: str) -> None:
    wf = defaults(name)
    got = api(wf)
    path = GOLDEN / f"{name}.json"
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"{path} is missing; run with RYLA_GEN_UPDATE_GOLDEN=1 to create it")
        path.write_text(json.dumps(got, indent=2) + "\n", encoding="utf-8")
    want = json.loads(path.read_text(encoding="utf-8"))
    assert got == want, f"{name} graph changed; RYLA_GEN_UPDATE_GOLDEN=1 rewrites {path}"


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_default_graphs_validate_and_are_deterministic(name: str) -> None:
    wf = defaults(name)
    wf.to_graph().validate(SCHEMAS)
    assert api(wf) == api(wf)
    assert Graph.from_api(api(wf)).to_api() == api(wf)


def test_examples_cover_every_builder_and_validate() -> None:
    exs = examples()
    assert {wf.name for wf in exs} == set(WORKFLOWS)
    for wf in exs:
        wf.to_graph().validate(SCHEMAS)
        for name in nodes_of(api(wf), "LoadImage"):
            assert name[1]["image"] in wf.input_images()
    graphs = [api(wf) for wf in exs]
    flat = [n for g in graphs for n in g.values()]
    dtypes = {n["inputs"]["weight_dtype"] for n in flat if n["class_type"] == "UNETLoader"}
    assert {"fp8_e4m3fn", "fp8_e4m3fn_fast", "default"} <= dtypes
    kinds = Counter(n["class_type"] for n in flat)
    for needed in ("LoraLoader", "LoraLoaderModelOnly", "ApplyInstantIDAdvanced"):
        assert kinds[needed] >= 1, needed
    assert any("image_kps" in n["inputs"] for n in flat if "InstantID" in n["class_type"])
    sheets = [wf for wf in exs if isinstance(wf, CharacterSheet)]
    assert sheets and len(sheets[0].views) == 3


# -- the graphs' shapes -------------------------------------------------------------------


def test_flux_dev_is_the_canonical_comfyui_graph() -> None:
    g = api(defaults("flux-dev"))
    assert Counter(n["class_type"] for n in g.values()) == Counter(
        [
            "UNETLoader",
            "DualCLIPLoader",
            "VAELoader",
            "CLIPTextEncode",
            "FluxGuidance",
            "ConditioningZeroOut",
            "EmptySD3LatentImage",
            "KSampler",
            "VAEDecode",
            "SaveImage",
        ]
    )
    _, clip = one(g, "DualCLIPLoader")
    assert (clip["clip_name1"], clip["clip_name2"], clip["type"]) == (
        "t5xxl_fp16.safetensors",
        "clip_l.safetensors",
        "flux",
    )
    _, ks = one(g, "KSampler")
    assert ks["cfg"] == 1.0 and ks["steps"] == 20 and ks["seed"] == 12345
    assert (ks["sampler_name"], ks["scheduler"]) == ("euler", "simple")
    assert source(g, ks["positive"]) == "FluxGuidance"
    assert source(g, ks["negative"]) == "ConditioningZeroOut"
    assert one(g, "FluxGuidance")[1]["guidance"] == 3.5
    assert one(g, "UNETLoader")[1]["unet_name"] == "flux1-dev.safetensors"


def test_flux_schnell_has_no_guidance_and_four_steps() -> None:
    g = api(defaults("flux-schnell"))
    assert not nodes_of(g, "FluxGuidance")
    assert one(g, "KSampler")[1]["steps"] == 4
    assert one(g, "UNETLoader")[1]["unet_name"] == "flux1-schnell.safetensors"
    assert "guidance" not in FluxSchnell.model_fields


def test_z_image_turbo_follows_the_comfyui_template() -> None:
    g = api(defaults("z-image-turbo"))
    _, clip = one(g, "CLIPLoader")
    assert (clip["clip_name"], clip["type"]) == ("qwen_3_4b.safetensors", "lumina2")
    assert one(g, "UNETLoader")[1]["unet_name"] == "z_image_turbo_bf16.safetensors"
    assert one(g, "VAELoader")[1]["vae_name"] == "ae.safetensors"
    _, ks = one(g, "KSampler")
    assert (ks["cfg"], ks["steps"], ks["sampler_name"], ks["scheduler"]) == (
        1.0,
        9,
        "euler",
        "simple",
    )
    assert source(g, ks["model"]) == "ModelSamplingAuraFlow"
    assert one(g, "ModelSamplingAuraFlow")[1]["shift"] == 3.0
    assert source(g, ks["negative"]) == "ConditioningZeroOut"
    assert source(g, ks["latent_image"]) == "EmptySD3LatentImage"


def _signature(graph: dict[str, Any]) -> Counter[tuple[Any, ...]]:
    """Each node as (class, sorted linked inputs with their source class/index, value keys)."""
    out: Counter[tuple[Any, ...]] = Counter()
    for node in graph.values():
        links = []
        keys = []
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                links.append((name, graph[value[0]]["class_type"], value[1]))
            else:
                keys.append(name)
        out[(node["class_type"], tuple(sorted(links)), tuple(sorted(keys)))] += 1
    return out


def test_instantid_matches_the_graph_the_real_server_accepted() -> None:
    accepted = json.loads((GOLDEN / "accepted_instantid_sdxl.json").read_text("utf-8"))
    ours = api(defaults("instantid"))
    assert _signature(ours) == _signature(accepted)
    # The defaults are those of the accepted (cubiq example) graph.
    _, a_apply = one(accepted, "ApplyInstantID")
    _, o_apply = one(ours, "ApplyInstantID")
    for key in ("weight", "start_at", "end_at"):
        assert o_apply[key] == a_apply[key]
    _, a_ks = one(accepted, "KSampler")
    _, o_ks = one(ours, "KSampler")
    for key in ("cfg", "steps", "sampler_name", "scheduler", "denoise"):
        assert o_ks[key] == a_ks[key]
    assert one(ours, "EmptyLatentImage")[1] == one(accepted, "EmptyLatentImage")[1]
    for cls, key in [
        ("InstantIDModelLoader", "instantid_file"),
        ("ControlNetLoader", "control_net_name"),
        ("CheckpointLoaderSimple", "ckpt_name"),
    ]:
        assert one(ours, cls)[1][key] == one(accepted, cls)[1][key]
    # Model and conditioning at the sampler come from ApplyInstantID outputs 0/1/2.
    apply_id = one(ours, "ApplyInstantID")[0]
    assert (o_ks["model"], o_ks["positive"], o_ks["negative"]) == (
        [apply_id, 0],
        [apply_id, 1],
        [apply_id, 2],
    )


def test_instantid_switches_to_the_advanced_node_only_when_needed() -> None:
    assert not InstantID(prompt="p", face_image=FACE).advanced
    for extra in (
        {"ip_weight": 0.5},
        {"cn_strength": 0.4},
        {"noise": 0.0},
        {"combine_embeds": "concat"},
    ):
        wf = InstantID(prompt="p", face_image=FACE, weight=0.7, **extra)
        g = api(wf)
        assert not nodes_of(g, "ApplyInstantID")
        _, adv = one(g, "ApplyInstantIDAdvanced")
        assert adv["ip_weight"] == extra.get("ip_weight", 0.7)
        assert adv["cn_strength"] == extra.get("cn_strength", 0.7)
        assert adv["noise"] == extra.get("noise", 0.35)
        assert "weight" not in adv
        wf.to_graph().validate(SCHEMAS)


def test_instantid_pose_image_feeds_image_kps() -> None:
    wf = InstantID(prompt="p", face_image=FACE, pose_image=POSE, seed=1)
    g = api(wf)
    loads = dict(nodes_of(g, "LoadImage"))
    _, apply = one(g, "ApplyInstantID")
    assert loads[apply["image"][0]]["image"] == FACE.name
    assert loads[apply["image_kps"][0]]["image"] == POSE.name
    assert set(wf.input_images()) == {FACE.name, POSE.name}
    # The same picture as face and pose is loaded (and uploaded) once.
    same = InstantID(prompt="p", face_image=FACE, pose_image=face_png())
    assert len(nodes_of(api(same), "LoadImage")) == 1
    assert list(same.input_images()) == [FACE.name]


def test_character_sheet_shares_loaders_and_renders_each_view() -> None:
    views = ["front", "left profile", "back", "smiling close-up"]
    wf = CharacterSheet(face_image=FACE, views=views, seed=100, filename_prefix="hero")
    g = api(wf)
    kinds = Counter(n["class_type"] for n in g.values())
    for shared in (
        "CheckpointLoaderSimple",
        "InstantIDModelLoader",
        "InstantIDFaceAnalysis",
        "ControlNetLoader",
        "LoadImage",
    ):
        assert kinds[shared] == 1, shared
    for per_view in ("ApplyInstantID", "KSampler", "VAEDecode", "SaveImage"):
        assert kinds[per_view] == len(views), per_view
    assert kinds["CLIPTextEncode"] == len(views) + 1  # one shared negative
    seeds = [n["seed"] for _, n in nodes_of(g, "KSampler")]
    assert seeds == [100, 101, 102, 103]
    prefixes = [n["filename_prefix"] for _, n in nodes_of(g, "SaveImage")]
    assert prefixes == ["hero_0", "hero_1", "hero_2", "hero_3"]
    texts = [n["text"] for _, n in nodes_of(g, "CLIPTextEncode")]
    assert texts[1:] == views
    assert wf.input_images() == {FACE.name: FACE.data}


# -- LoRAs and trigger words --------------------------------------------------------------


def _model_chain(g: dict[str, Any], link: list[Any]) -> list[tuple[str, str]]:
    """(class, lora_name) from the loader to ``link``, following model inputs."""
    chain = []
    node = g[link[0]]
    while True:
        chain.append((node["class_type"], node["inputs"].get("lora_name", "")))
        if "model" not in node["inputs"]:
            break
        node = g[node["inputs"]["model"][0]]
    return chain[::-1]


@pytest.mark.parametrize("cls", [FluxDev, FluxSchnell, ZImageTurbo])
def test_flux_and_z_image_loras_stack_in_order_model_only_unless_clip_given(
    cls: type[Workflow],
) -> None:
    loras = [
        LoRA(name="a.safetensors", strength=0.5),
        LoRA(name="b.safetensors", strength=0.9, clip_strength=0.3),
        LoRA(name="c.safetensors", strength=-1.0),
    ]
    wf = cls.model_validate({"prompt": "x", "loras": loras, "seed": 1})
    g = api(wf)
    ks = one(g, "KSampler")[1]
    chain = [c for c in _model_chain(g, ks["model"]) if c[0].startswith("Lora")]
    assert chain == [
        ("LoraLoaderModelOnly", "a.safetensors"),
        ("LoraLoader", "b.safetensors"),
        ("LoraLoaderModelOnly", "c.safetensors"),
    ]
    _, b = one(g, "LoraLoader")
    assert (b["strength_model"], b["strength_clip"]) == (0.9, 0.3)
    text = one(g, "CLIPTextEncode")[1]
    assert source(g, text["clip"]) == "LoraLoader"  # the prompt sees the patched CLIP
    strengths = [n["strength_model"] for _, n in nodes_of(g, "LoraLoaderModelOnly")]
    assert strengths == [0.5, -1.0]
    wf.to_graph().validate(SCHEMAS)
    assert [m.relpath for m in wf.required_models()][-3:] == [
        "loras/a.safetensors",
        "loras/b.safetensors",
        "loras/c.safetensors",
    ]


def test_model_only_loras_leave_the_text_encoder_alone() -> None:
    g = api(FluxDev(prompt="x", loras=[LoRA(name="a.safetensors")]))
    assert source(g, one(g, "CLIPTextEncode")[1]["clip"]) == "DualCLIPLoader"


def test_sdxl_loras_always_patch_model_and_clip() -> None:
    loras = [
        LoRA(name="a.safetensors", strength=0.6),
        LoRA(name="b.safetensors", clip_strength=0.2),
    ]
    g = api(InstantID(prompt="x", face_image=FACE, loras=loras))
    loaders = nodes_of(g, "LoraLoader")
    assert [(n["lora_name"], n["strength_model"], n["strength_clip"]) for _, n in loaders] == [
        ("a.safetensors", 0.6, 0.6),
        ("b.safetensors", 1.0, 0.2),
    ]
    assert not nodes_of(g, "LoraLoaderModelOnly")
    _, apply = one(g, "ApplyInstantID")
    assert apply["model"] == [loaders[1][0], 0]
    for _, text in nodes_of(g, "CLIPTextEncode"):
        assert text["clip"] == [loaders[1][0], 1]


def test_z_image_loras_sit_before_model_sampling() -> None:
    g = api(ZImageTurbo(prompt="x", loras=[LoRA(name="a.safetensors")]))
    _, sampling = one(g, "ModelSamplingAuraFlow")
    assert source(g, sampling["model"]) == "LoraLoaderModelOnly"


def test_trigger_words_are_prepended_once() -> None:
    a = LoRA(name="a.safetensors", trigger="ohwx woman")
    b = LoRA(name="b.safetensors", trigger="film grain")
    wf = FluxDev(prompt="walking in Paris", loras=[a, b, a])
    assert one(api(wf), "CLIPTextEncode")[1]["text"] == "ohwx woman, film grain, walking in Paris"
    # Already in the prompt (any case): not added again.
    assert with_triggers("An OHWX Woman in the rain", [a]) == "An OHWX Woman in the rain"
    # Whole words only: "cat" is not found in "category".
    cat = LoRA(name="c.safetensors", trigger="cat")
    assert with_triggers("category theory", [cat]) == "cat, category theory"
    # No trigger, no change; the prompt itself is never altered otherwise.
    assert with_triggers("x", [LoRA(name="n.safetensors")]) == "x"


def test_triggers_reach_every_character_sheet_view() -> None:
    lora = LoRA(name="a.safetensors", trigger="ohwx man")
    wf = CharacterSheet(face_image=FACE, views=["front", "ohwx man from behind"], loras=[lora])
    texts = [n["text"] for _, n in nodes_of(api(wf), "CLIPTextEncode")][1:]
    assert texts == ["ohwx man, front", "ohwx man from behind"]


# -- validation messages ------------------------------------------------------------------

BAD: list[tuple[type[BaseModel], dict[str, Any], str, str]] = [
    (FluxDev, {"width": 1000}, "width", "multiple of 16 between 256 and 2048"),
    (FluxDev, {"height": 2064}, "height", "between 256 and 2048"),
    (FluxDev, {"width": 240}, "width", "between 256 and 2048"),
    (FluxDev, {"steps": 0}, "steps", "between 1 and 150"),
    (FluxDev, {"steps": 151}, "steps", "between 1 and 150"),
    (FluxDev, {"steps": True}, "steps", "boolean"),
    (FluxDev, {"guidance": 30.5}, "guidance", "between 0 and 30"),
    (FluxDev, {"guidance": float("nan")}, "guidance", "between 0 and 30"),
    (FluxDev, {"seed": -1}, "seed", f"between 0 and {MAX_SEED}"),
    (FluxDev, {"seed": MAX_SEED + 1}, "seed", f"between 0 and {MAX_SEED}"),
    (FluxDev, {"batch_size": 9}, "batch_size", "between 1 and 8"),
    (FluxDev, {"sampler": "euler_a"}, "sampler", "must be one of: euler"),
    (FluxDev, {"scheduler": "Karras"}, "scheduler", "must be one of: simple"),
    (FluxDev, {"weight_dtype": "fp16"}, "weight_dtype", "fp8_e4m3fn"),
    (FluxDev, {"unet_name": "../flux.safetensors"}, "unet_name", "plain file name"),
    (FluxDev, {"unet_name": "sub/flux.safetensors"}, "unet_name", "plain file name"),
    (FluxDev, {"unet_name": "flux.gguf"}, "unet_name", "must end with .safetensors"),
    (FluxDev, {"filename_prefix": "../out"}, "filename_prefix", "no '..'"),
    (FluxDev, {"filename_prefix": "/abs"}, "filename_prefix", "no leading '/'"),
    (FluxDev, {"prompt": "   "}, "prompt", "must not be empty"),
    (FluxDev, {"prompt": "x" * 10_001}, "prompt", "at most 10000"),
    (FluxDev, {"prompt": "a\x1bb"}, "prompt", "control character"),
    (FluxDev, {"negative_prompt": "x"}, "negative_prompt", "Extra inputs are not permitted"),
    (FluxSchnell, {"guidance": 3.5}, "guidance", "Extra inputs are not permitted"),
    (ZImageTurbo, {"shift": 25}, "shift", "between 0 and 20"),
    (ZImageTurbo, {"width": 1032}, "width", "multiple of 16"),
    (InstantID, {"width": 1020}, "width", "multiple of 8 between 256 and 2048"),
    (InstantID, {"cfg": 31}, "cfg", "between 0 and 30"),
    (InstantID, {"weight": 5.5}, "weight", "between 0 and 5"),
    (InstantID, {"start_at": -0.1}, "start_at", "between 0 and 1"),
    (InstantID, {"end_at": 1.5}, "end_at", "between 0 and 1"),
    (InstantID, {"start_at": 0.6, "end_at": 0.5}, "end_at", "smaller than start_at"),
    (InstantID, {"ip_weight": 3.5}, "ip_weight", "between 0 and 3"),
    (InstantID, {"cn_strength": 11}, "cn_strength", "between 0 and 10"),
    (InstantID, {"noise": 2}, "noise", "between 0 and 1"),
    (InstantID, {"weight": 4, "cn_strength": 1}, "ip_weight", "between 0 and 3"),
    (InstantID, {"provider": "cuda"}, "provider", "CUDA"),
    (InstantID, {"combine_embeds": "sum"}, "combine_embeds", "average"),
    (InstantID, {"checkpoint": "C:\\sdxl.safetensors"}, "checkpoint", "plain file name"),
    (InstantID, {"negative_prompt": "bad\x00"}, "negative_prompt", "control character"),
    (InstantID, {"face_image": b"not an image"}, "face_image", "not an image"),
    (CharacterSheet, {"views": []}, "views", "1 to 8"),
    (CharacterSheet, {"views": ["v"] * 9}, "views", "1 to 8"),
    (CharacterSheet, {"views": ["ok", " "]}, "views[1]", "must not be empty"),
    (CharacterSheet, {"seed": MAX_SEED}, "seed", "at most"),
    (LoRA, {"name": "a.ckpt"}, "name", "must end with .safetensors"),
    (LoRA, {"name": "../a.safetensors"}, "name", "plain file name"),
    (LoRA, {"name": "dir/a.safetensors"}, "name", "plain file name"),
    (LoRA, {"name": "a\x00.safetensors"}, "name", "control characters"),
    (LoRA, {"strength": 5.01}, "strength", "between -5 and 5"),
    (LoRA, {"clip_strength": -6}, "clip_strength", "between -5 and 5"),
    (LoRA, {"trigger": "  "}, "trigger", "must not be empty"),
]


def _base_kwargs(cls: type[BaseModel]) -> dict[str, Any]:
    if cls is LoRA:
        return {"name": "ok.safetensors"}
    if cls is InstantID:
        return {"prompt": "p", "face_image": FACE}
    if cls is CharacterSheet:
        return {"face_image": FACE, "views": ["a", "b"]}
    return {"prompt": "p"}


@pytest.mark.parametrize(
    ("cls", "bad", "field", "fragment"),
    BAD,
    ids=[f"{c.__name__}-{'-'.join(b)}" for c, b, _, _ in BAD],
)
def test_bad_values_fail_at_construction_naming_field_and_range(
    cls: type[BaseModel], bad: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(ValidationError) as err:
        cls(**{**_base_kwargs(cls), **bad})
    text = str(err.value)
    assert field in text
    assert fragment in text


def test_assignment_is_validated_too() -> None:
    wf = FluxDev(prompt="p", seed=1)
    with pytest.raises(ValidationError, match="width must be a multiple of 16"):
        wf.width = 1000
    wf.width = 512
    assert one(api(wf), "EmptySD3LatentImage")[1]["width"] == 512


def test_prompts_are_normalised_not_mangled() -> None:
    wf = FluxDev(prompt="  line one\r\nline\ttwo  ")
    assert wf.prompt == "line one\nline\ttwo"
    assert FluxDev(prompt="ünïcödé ✓ 猫").prompt == "ünïcödé ✓ 猫"
    assert InstantID(prompt="p", face_image=FACE, negative_prompt="").negative_prompt == ""


# -- seeds ---------------------------------------------------------------------------------


def test_missing_seed_is_chosen_once_and_reported() -> None:
    wf = FluxDev(prompt="p")
    assert isinstance(wf.seed, int) and 0 <= wf.seed <= MAX_SEED
    assert one(api(wf), "KSampler")[1]["seed"] == wf.seed
    assert api(wf) == api(wf)
    assert len({FluxDev(prompt="p").seed for _ in range(5)}) > 1
    again = FluxDev.model_validate(wf.model_dump())
    assert api(again) == api(wf)


# -- registry ------------------------------------------------------------------------------


def test_registry_names_and_lookup() -> None:
    assert set(WORKFLOWS) == {
        "flux-dev",
        "flux-schnell",
        "z-image-turbo",
        "instantid",
        "character-sheet",
    }
    for name, cls in WORKFLOWS.items():
        assert cls.name == name
        assert get_workflow(name) is cls
    assert get_workflow(" Flux_Dev ") is FluxDev
    with pytest.raises(ValueError, match="valid names: character-sheet, flux-dev"):
        get_workflow("sdxl")


def test_every_field_is_documented() -> None:
    classes: list[type[BaseModel]] = [*WORKFLOWS.values(), LoRA]
    for cls in classes:
        schema = cls.model_json_schema()
        for name, prop in schema["properties"].items():
            assert prop.get("description"), f"{cls.__name__}.{name}"
    sampler = FluxDev.model_json_schema()["properties"]["sampler"]
    assert sampler["enum"] == list(SAMPLERS)
    width = FluxDev.model_json_schema()["properties"]["width"]
    assert (width["minimum"], width["maximum"], width["multipleOf"]) == (256, 2048, 16)


def test_sampler_choices_come_from_the_ksampler_schema() -> None:
    spec = SCHEMAS["KSampler"].inputs
    assert tuple(spec["sampler_name"].options or ()) == SAMPLERS
    assert tuple(spec["scheduler"].options or ()) == SCHEDULERS
    dtypes = SCHEMAS["UNETLoader"].inputs["weight_dtype"].options or ()
    assert tuple(dtypes) == WEIGHT_DTYPES == typing.get_args(WeightDtype)


# -- required models -------------------------------------------------------------------------


def test_required_models() -> None:
    dev = FluxDev(prompt="p").required_models()
    assert [m.relpath for m in dev] == [
        "diffusion_models/flux1-dev.safetensors",
        "text_encoders/t5xxl_fp16.safetensors",
        "text_encoders/clip_l.safetensors",
        "vae/ae.safetensors",
    ]
    assert dev[0].gated and all(m.url for m in dev)
    swapped = FluxDev(prompt="p", unet_name="my-finetune.safetensors").required_models()[0]
    assert (swapped.folder, swapped.filename, swapped.url) == (
        "diffusion_models",
        "my-finetune.safetensors",
        None,
    )
    iid = InstantID(prompt="p", face_image=FACE).required_models()
    assert sum(not m.in_graph for m in iid) == 5
    assert "controlnet/instantid/diffusion_pytorch_model.safetensors" in {m.relpath for m in iid}
    z = ZImageTurbo(prompt="p").required_models()
    assert [m.filename for m in z] == [
        "z_image_turbo_bf16.safetensors",
        "qwen_3_4b.safetensors",
        "ae.safetensors",
    ]


def test_required_models_cover_every_file_the_graph_names() -> None:
    file_inputs = {
        "unet_name": "diffusion_models",
        "clip_name": "text_encoders",
        "clip_name1": "text_encoders",
        "clip_name2": "text_encoders",
        "vae_name": "vae",
        "ckpt_name": "checkpoints",
        "instantid_file": "instantid",
        "control_net_name": "controlnet",
        "lora_name": "loras",
    }
    for wf in examples():
        named = {
            f"{file_inputs[k]}/{v}"
            for n in api(wf).values()
            for k, v in n["inputs"].items()
            if k in file_inputs
        }
        assert named == {m.relpath for m in wf.required_models() if m.in_graph}, wf.name


# -- input images ----------------------------------------------------------------------------


def _png_info(data: bytes) -> tuple[str, str, tuple[int, int]]:
    im = Image.open(io.BytesIO(data))
    return str(im.format), im.mode, im.size


def test_input_image_from_bytes_path_pil_and_base64(tmp_path: Path) -> None:
    png = face_png()
    path = tmp_path / "me.png"
    path.write_bytes(png)
    b64 = base64.b64encode(png).decode()
    variants: list[Any] = [
        png,
        bytearray(png),
        path,
        str(path),
        Image.open(io.BytesIO(png)),
        b64,
        "data:image/png;base64," + b64,
        "  data:image/png;base64," + b64 + "\n",
        FACE,
    ]
    for v in variants:
        img = InputImage.load(v)
        assert img == FACE and img.name == FACE.name
        assert _png_info(img.data) == ("PNG", "RGB", (64, 64))


def test_input_image_name_depends_on_pixels_not_encoding(tmp_path: Path) -> None:
    im = Image.open(io.BytesIO(face_png()))
    buf = io.BytesIO()
    im.save(buf, format="BMP")
    assert InputImage.load(buf.getvalue()).name == FACE.name
    assert FACE.name.startswith("ryla_") and FACE.name.endswith(".png")
    assert len(FACE.name) == len("ryla_") + 16 + len(".png")
    assert POSE.name != FACE.name


def test_input_image_flattens_transparency_and_applies_exif_rotation() -> None:
    rgba = Image.new("RGBA", (20, 30), (255, 0, 0, 0))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    img = InputImage.load(buf.getvalue())
    assert img.to_pil().getpixel((0, 0)) == (255, 255, 255)
    jpg = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    Image.new("RGB", (40, 20), (10, 200, 10)).save(jpg, format="JPEG", exif=exif)
    assert (InputImage.load(jpg.getvalue()).width, InputImage.load(jpg.getvalue()).height) == (
        20,
        40,
    )


def _refuse(value: Any, fragment: str, *, untrusted: bool = False) -> None:
    with pytest.raises(ValidationError) as err:
        InstantID.model_validate(
            {"prompt": "p", "face_image": value}, context={"untrusted": untrusted}
        )
    text = str(err.value)
    assert "face_image" in text and fragment in text, text


def test_input_image_refusals(tmp_path: Path) -> None:
    _refuse(b"hello, not a picture", "not an image")
    _refuse(face_png()[:200], "truncated")
    _refuse(b"", "empty")
    _refuse(str(tmp_path / "nope.png"), "no such file")
    _refuse(tmp_path, "not a file")
    _refuse("data:text/plain;base64,aGVsbG8=", "not an image")
    _refuse("data:image/png;base64,@@@@", "not valid base64")
    _refuse(12345, "must be a file path, bytes")
    big = Image.new("RGB", (4097, 16))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    _refuse(buf.getvalue(), "4097x16 pixels (at most 4096x4096)")
    _refuse(Image.new("RGB", (8, 8)), "too small")
    _refuse(b"\x89PNG" + b"\0" * (20 * 1024 * 1024), "too large")
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\0" * (20 * 1024 * 1024 + 1))
    _refuse(huge, "MB (at most 20 MB)")


def test_untrusted_input_cannot_name_files(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    path.write_bytes(face_png())
    _refuse(str(path), "file paths are not accepted", untrusted=True)
    _refuse(path, "file paths are not accepted", untrusted=True)
    _refuse("/etc/passwd", "file paths are not accepted", untrusted=True)
    _refuse("~/.ssh/id_rsa", "file paths are not accepted", untrusted=True)
    ok = InstantID.model_validate(
        {"prompt": "p", "face_image": FACE.to_data_url()}, context={"untrusted": True}
    )
    assert ok.face_image == FACE
    # Trusted Python callers may use paths.
    assert InstantID(prompt="p", face_image=str(path)).face_image == FACE


def test_workflows_round_trip_through_json_as_data_urls() -> None:
    wf = InstantID(prompt="p", face_image=FACE, pose_image=POSE, seed=3)
    data = wf.model_dump(mode="json")
    assert data["face_image"].startswith("data:image/png;base64,")
    back = InstantID.model_validate(data, context={"untrusted": True})
    assert api(back) == api(wf) and back.input_images() == wf.input_images()
    back2 = InstantID.model_validate_json(wf.model_dump_json(), context={"untrusted": True})
    assert api(back2) == api(wf)
    sheet = CharacterSheet(face_image=FACE, views=["a"], seed=1)
    assert CharacterSheet.model_validate_json(sheet.model_dump_json()) == sheet


def test_input_images_of_text_only_workflows_are_empty() -> None:
    assert FluxDev(prompt="p").input_images() == {}
    assert ZImageTurbo(prompt="p").input_images() == {}


def test_example_face_is_a_valid_small_png() -> None:
    face = example_face()
    assert (face.width, face.height) == (64, 64)
    assert example_face(tint=3).name != face.name


# -- properties -------------------------------------------------------------------------------

_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
sizes16 = st.integers(16, 128).map(lambda n: n * 16)
sizes8 = st.integers(32, 256).map(lambda n: n * 8)
prompts = st.text(
    alphabet=st.characters(blacklist_categories=["Cc", "Cs", "Zl", "Zp"]) | st.sampled_from("\n\t"),
    min_size=1,
    max_size=200,
).filter(lambda s: s.strip() != "")
seeds = st.integers(0, MAX_SEED - 8)
loras = st.lists(
    st.builds(
        LoRA,
        name=st.from_regex(r"[a-z][a-z0-9_\-]{0,20}\.safetensors", fullmatch=True),
        strength=st.floats(-5, 5),
        clip_strength=st.none() | st.floats(-5, 5),
        trigger=st.none() | st.sampled_from(["ohwx", "film look", "TOK person"]),
    ),
    max_size=4,
)
common = {
    "seed": seeds,
    "sampler": st.sampled_from(SAMPLERS),
    "scheduler": st.sampled_from(SCHEDULERS),
    "steps": st.integers(1, 150),
    "loras": loras,
}


def _validates(wf: Workflow) -> None:
    g = wf.to_graph()
    g.validate(SCHEMAS)
    assert json.loads(json.dumps(g.to_api())) == g.to_api()


@_SETTINGS
@given(
    cls=st.sampled_from([FluxDev, FluxSchnell]),
    prompt=prompts,
    width=sizes16,
    height=sizes16,
    batch_size=st.integers(1, 8),
    weight_dtype=st.sampled_from(["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]),
    data=st.fixed_dictionaries(common),
)
def test_any_valid_flux_request_builds_a_valid_graph(
    cls: type[Workflow],
    prompt: str,
    width: int,
    height: int,
    batch_size: int,
    weight_dtype: str,
    data: dict[str, Any],
) -> None:
    wf = cls.model_validate(
        {
            "prompt": prompt,
            "width": width,
            "height": height,
            "batch_size": batch_size,
            "weight_dtype": weight_dtype,
            **data,
        }
    )
    _validates(wf)


@_SETTINGS
@given(
    prompt=prompts,
    width=sizes16,
    height=sizes16,
    shift=st.floats(0, 20),
    data=st.fixed_dictionaries(common),
)
def test_any_valid_z_image_request_builds_a_valid_graph(
    prompt: str, width: int, height: int, shift: float, data: dict[str, Any]
) -> None:
    _validates(ZImageTurbo(prompt=prompt, width=width, height=height, shift=shift, **data))


@_SETTINGS
@given(
    prompt=prompts,
    width=sizes8,
    height=sizes8,
    cfg=st.floats(0, 30),
    weight=st.floats(0, 5),
    start=st.floats(0, 1),
    span=st.floats(0, 1),
    ip_weight=st.none() | st.floats(0, 3),
    cn_strength=st.none() | st.floats(0, 10),
    noise=st.floats(0, 1),
    pose=st.booleans(),
    views=st.lists(prompts, min_size=1, max_size=8),
    data=st.fixed_dictionaries(common),
)
def test_any_valid_instantid_request_builds_a_valid_graph(
    prompt: str,
    width: int,
    height: int,
    cfg: float,
    weight: float,
    start: float,
    span: float,
    ip_weight: float | None,
    cn_strength: float | None,
    noise: float,
    pose: bool,
    views: list[str],
    data: dict[str, Any],
) -> None:
    shared = {
        "face_image": FACE,
        "width": width,
        "height": height,
        "cfg": cfg,
        "weight": weight,
        "start_at": start,
        "end_at": start + (1 - start) * span,
        "ip_weight": ip_weight,
        "cn_strength": cn_strength,
        "noise": noise,
        **data,
    }
    advanced = ip_weight is not None or cn_strength is not None or noise != 0.35
    if advanced and ip_weight is None and weight > 3:
        # ApplyInstantIDAdvanced caps ip_weight (which defaults to weight) at 3.
        with pytest.raises(ValidationError, match="ip_weight"):
            InstantID(prompt=prompt, **shared)
        return
    _validates(InstantID(prompt=prompt, pose_image=POSE if pose else None, **shared))
    sheet = CharacterSheet(views=views, **shared)
    _validates(sheet)
    assert len(nodes_of(api(sheet), "SaveImage")) == len(views)


OUTSIDE: list[tuple[Callable[..., Any], str, st.SearchStrategy[Any]]] = [
    (
        FluxDev,
        "width",
        st.integers(-10_000, 10_000).filter(lambda w: not (256 <= w <= 2048 and w % 16 == 0)),
    ),
    (ZImageTurbo, "height", st.sampled_from([255, 2049, 2064, 0, -16, 1000])),
    (FluxDev, "steps", st.sampled_from([0, -1, 151, 10_000])),
    (FluxDev, "guidance", st.floats(30.0001, 1e9) | st.floats(-1e9, -0.0001)),
    (FluxSchnell, "seed", st.integers(MAX_SEED + 1, 2**70) | st.integers(-(2**70), -1)),
    (InstantID, "width", st.sampled_from([255, 2049, 1017, 1020, 2056])),
    (InstantID, "cfg", st.floats(30.0001, 1e6)),
    (InstantID, "weight", st.floats(5.0001, 1e6) | st.floats(-1e6, -0.0001)),
    (InstantID, "start_at", st.floats(1.0001, 10) | st.floats(-10, -0.0001)),
    (LoRA, "strength", st.floats(5.0001, 1e6) | st.floats(-1e6, -5.0001)),
]


@pytest.mark.parametrize(
    ("cls", "field", "values"), OUTSIDE, ids=[f"{c.__name__}.{f}" for c, f, _ in OUTSIDE]
)
def test_values_outside_the_ranges_are_refused(
    cls: type[BaseModel], field: str, values: st.SearchStrategy[Any]
) -> None:
    @settings(max_examples=25, deadline=None)
    @given(value=values)
    def check(value: Any) -> None:
        with pytest.raises(ValidationError) as err:
            cls(**{**_base_kwargs(cls), field: value})
        assert field in str(err.value)

    check()
