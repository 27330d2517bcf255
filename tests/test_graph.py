"""Graph building, API-format round trips, node schemas and offline validation."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ryla_gen.errors import GraphValidationError, InputError, NodeError
from ryla_gen.graph import Graph, NodeSchema, NodeSchemas, Output, types_match

DATA = Path(__file__).parent / "data"
SCHEMAS = NodeSchemas.bundled()


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def txt2img(ckpt_name: str = "sd_xl_base_1.0.safetensors") -> Graph:
    """A small valid SDXL graph built with the public API."""
    g = Graph()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=ckpt_name)
    pos = g.node("CLIPTextEncode", text="a cat", clip=ckpt.out("CLIP"))
    neg = g.node("CLIPTextEncode", text="", clip=ckpt[1])
    latent = g.node("EmptyLatentImage", width=1024, height=1024, batch_size=1)
    sampler = g.node(
        "KSampler",
        model=ckpt.out("MODEL"),
        positive=pos.out("CONDITIONING"),
        negative=neg[0],
        latent_image=latent.out("LATENT"),
        seed=42,
        steps=20,
        cfg=7.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
    )
    image = g.node("VAEDecode", samples=sampler[0], vae=ckpt.out("VAE"))
    g.node("SaveImage", title="Result", images=image.out("IMAGE"), filename_prefix="cat")
    return g


def where(errors: list[NodeError]) -> set[tuple[str, str | None, str]]:
    """(node id, input, type) of each error."""
    return {(e.node_id, e.input_name, e.type) for e in errors}


# -- building -----------------------------------------------------------------------------


def test_ids_are_sequential_explicit_ids_are_kept_and_clashes_raise() -> None:
    g = Graph()
    assert [g.node("PreviewImage").id for _ in range(3)] == ["1", "2", "3"]
    assert g.node("PreviewImage", id="face").id == "face"
    assert g.node("PreviewImage", id="10").id == "10"
    assert g.node("PreviewImage").id == "11"  # after the largest numeric id
    with pytest.raises(ValueError, match="'face' is already used by PreviewImage"):
        g.node("SaveImage", id="face")
    assert list(g) == ["1", "2", "3", "face", "10", "11"]


def test_building_twice_gives_the_same_api_graph() -> None:
    assert txt2img().to_api() == txt2img().to_api()
    assert txt2img().to_json() == txt2img().to_json()


def test_to_api_writes_links_as_lists_and_titles_as_meta() -> None:
    api = txt2img().to_api()
    assert api["1"] == {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"},
    }
    assert api["6"]["inputs"] == {"samples": ["5", 0], "vae": ["1", 2]}
    assert api["7"]["_meta"] == {"title": "Result"}
    assert "_meta" not in api["6"]


def test_inputs_with_names_that_are_not_identifiers() -> None:
    g = Graph()
    node = g.node("ModelMergeAuraflow", **{"double_layers.0.": 0.5}, title="merge")
    assert g.to_api()[node.id]["inputs"] == {"double_layers.0.": 0.5}
    node.inputs["title"] = "set after creation"  # names Graph.node keeps for itself
    assert g.to_api()[node.id]["inputs"]["title"] == "set after creation"


def test_node_attributes_and_graph_container() -> None:
    g = txt2img()
    node = g["7"]
    assert (node.id, node.class_type, node.title) == ("7", "SaveImage", "Result")
    assert node.inputs["images"] == Output("6", 0)
    assert len(g) == 7 and "7" in g and "8" not in g
    assert g.nodes["7"] is node
    with pytest.raises(TypeError):
        g.nodes["8"] = node  # type: ignore[index]
    with pytest.raises(KeyError, match="No node '8'"):
        g["8"]


def test_passing_a_node_instead_of_an_output_says_how_to_link() -> None:
    g = Graph()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name="a.safetensors")
    with pytest.raises(TypeError, match=r"node\.out\(name\).*0 MODEL, 1 CLIP, 2 VAE"):
        g.node("CLIPTextEncode", text="x", clip=ckpt)
    with pytest.raises(TypeError, match="got a tuple"):
        g.node("CLIPTextEncode", text="x", clip=("1", 1))
    assert len(g) == 1


def test_outputs_by_name_type_or_index() -> None:
    g = Graph()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name="a.safetensors")
    assert ckpt.out("CLIP") == ckpt[1] == ckpt.out(1) == Output("1", 1)
    apply = g.node("ApplyInstantID")
    assert apply.out("positive") == Output("2", 1)  # output_name
    assert apply.out("MODEL") == Output("2", 0)
    face = g.node("InstantIDFaceAnalysis", provider="CPU")
    assert face.out("FACEANALYSIS") == Output("3", 0)


def test_unknown_output_name_lists_the_outputs() -> None:
    g = Graph()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name="a.safetensors")
    with pytest.raises(ValueError, match=r"no output named 'clip'.*0 MODEL, 1 CLIP, 2 VAE"):
        ckpt.out("clip")
    with pytest.raises(ValueError, match=r"no output 3; its outputs are: 0 MODEL, 1 CLIP"):
        ckpt[3]
    with pytest.raises(ValueError, match="no output -1"):
        ckpt[-1]
    with pytest.raises(TypeError):
        ckpt[True]
    with pytest.raises(ValueError, match=r"several outputs of type 'CONDITIONING' \(1, 2\)"):
        g.node("ApplyInstantID").out("CONDITIONING")  # positive and negative


def test_outputs_of_a_class_without_schema_only_by_index() -> None:
    node = Graph().node("MyCustomNode")
    assert node[4] == Output("1", 4)
    with pytest.raises(ValueError, match=r"no schema for 'MyCustomNode'.*Use an index"):
        node.out("IMAGE")


def test_a_node_is_not_iterable() -> None:
    node = Graph().node("CheckpointLoaderSimple", ckpt_name="a.safetensors")
    with pytest.raises(TypeError, match="not iterable"):
        list(node)


def test_copy_is_independent() -> None:
    g = txt2img()
    c = g.copy()
    c["5"].inputs["steps"] = 4
    c.node("PreviewImage", images=c["6"][0])
    assert g["5"].inputs["steps"] == 20 and len(g) == 7
    assert c.to_api() != g.to_api()
    assert c["1"].out("VAE") == Output("1", 2)  # schemas travel with the copy


def test_to_api_returns_fresh_data() -> None:
    g = Graph()
    g.node("PreviewAny", source={"__value__": [1, 2]})
    api = g.to_api()
    api["1"]["inputs"]["source"]["__value__"].append(3)
    assert g.to_api()["1"]["inputs"]["source"] == {"__value__": [1, 2]}


# -- API format and JSON round trips ------------------------------------------------------


def test_accepted_instantid_graph_round_trips_exactly() -> None:
    data = load("accepted_instantid_sdxl.json")
    g = Graph.from_api(data)
    assert g["60"].inputs["insightface"] == Output("38", 0)
    assert g["60"].inputs["weight"] == 0.8
    assert g.to_api() == data
    assert json.loads(g.to_json()) == data


def test_save_api_export_keeps_titles_and_number_types() -> None:
    text = (DATA / "default_workflow_api.json").read_text(encoding="utf-8")
    g = Graph.from_json(text)
    assert g["4"].title == "Load Checkpoint"
    assert g["3"].inputs["cfg"] == 8 and isinstance(g["3"].inputs["cfg"], int)
    # Same content as the file, down to 8 vs 8.0 (json.dumps tells them apart).
    canonical = json.dumps(json.loads(text), sort_keys=True)
    assert json.dumps(g.to_api(), sort_keys=True) == canonical
    assert g.problems() == []


def test_json_text_round_trip_is_exact() -> None:
    g = txt2img()
    assert Graph.from_json(g.to_json()).to_json() == g.to_json()
    assert Graph.from_json(g.to_json(indent=None)).to_json(indent=None) == g.to_json(None)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "not list"),
        ({"1": "KSampler"}, "Node '1' must be an object"),
        ({"1": {"inputs": {}}}, "Node '1' has no 'class_type'"),
        ({"1": {"class_type": "KSampler"}}, r"Node '1' \(KSampler\) has no 'inputs'"),
        ({"1": {"class_type": "KSampler", "inputs": [1]}}, "no 'inputs' object"),
        ({"1": {"class_type": "X", "inputs": {}, "_meta": "t"}}, "'_meta' must be an object"),
        ({"1": {"class_type": "X", "inputs": {}, "_meta": {"title": 3}}}, "title' must be"),
        ({1: {"class_type": "X", "inputs": {}}}, "ids must be non-empty strings"),
        ({"nodes": [], "links": [], "version": 0.4}, "UI workflow.*Save \\(API\\)"),
    ],
)
def test_from_api_rejects_other_shapes(data: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Graph.from_api(data)


def test_from_json_rejects_invalid_json() -> None:
    with pytest.raises(InputError, match="Not valid JSON"):
        Graph.from_json("{'1': }")


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def graphs(draw: st.DrawFn) -> Graph:
    g = Graph(NodeSchemas())
    ids = draw(st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=6, unique=True))
    links = st.builds(Output, st.sampled_from(ids), st.integers(0, 5))
    for node_id in ids:
        inputs = draw(st.dictionaries(st.text(max_size=8), json_values | links, max_size=5))
        title = draw(st.none() | st.text(min_size=1, max_size=10))
        g.node(draw(st.text(min_size=1, max_size=12)), id=node_id, title=title, **inputs)
    return g


@settings(max_examples=100, deadline=None)
@given(graphs())
def test_any_graph_survives_json_round_trip(g: Graph) -> None:
    text = g.to_json()
    again = Graph.from_json(text, schemas=g.schemas)
    assert again.to_json() == text
    assert list(again) == list(g)
    assert [n.title for n in again.nodes.values()] == [n.title for n in g.nodes.values()]


# -- schemas ------------------------------------------------------------------------------


def test_bundled_schemas_are_cached_and_hold_core_and_instantid() -> None:
    assert NodeSchemas.bundled() is SCHEMAS
    assert "KSampler" in SCHEMAS and "ApplyInstantID" in SCHEMAS
    assert SCHEMAS.get("NoSuchNode") is None
    assert isinstance(SCHEMAS["KSampler"], NodeSchema)


def test_schema_inputs_types_ranges_and_outputs() -> None:
    ks = SCHEMAS["KSampler"]
    assert list(ks.required)[:3] == ["model", "seed", "steps"]  # the server's input_order
    assert (ks.inputs["steps"].type, ks.inputs["steps"].min, ks.inputs["steps"].max) == (
        "INT",
        1,
        10000,
    )
    assert ks.inputs["model"].type == "MODEL"
    assert ks.inputs["sampler_name"].type == "COMBO"  # old form: [[...], {...}]
    assert "euler" in (ks.inputs["sampler_name"].options or ())
    assert [o.type for o in ks.outputs] == ["LATENT"] and not ks.output_node

    ays = SCHEMAS["AlignYourStepsScheduler"].inputs["model_type"]  # new form: ["COMBO", {...}]
    assert (ays.type, ays.options) == ("COMBO", ("SD1", "SDXL", "SVD"))

    save = SCHEMAS["SaveImage"]
    assert save.output_node and set(save.hidden) == {"prompt", "extra_pnginfo"}
    assert SCHEMAS["CLIPLoader"].optional["device"].category == "optional"
    assert SCHEMAS["ApplyInstantID"].outputs[1].name == "positive"
    assert SCHEMAS["ApplyInstantID"].python_module == "custom_nodes.ComfyUI_InstantID"


def test_file_list_inputs_are_recognised() -> None:
    assert SCHEMAS["CheckpointLoaderSimple"].inputs["ckpt_name"].is_file
    assert SCHEMAS["LoadImage"].inputs["image"].is_file  # image_upload
    assert SCHEMAS["LoraLoader"].inputs["lora_name"].is_file  # empty list on that machine
    assert not SCHEMAS["InstantIDFaceAnalysis"].inputs["provider"].is_file
    assert not SCHEMAS["KSampler"].inputs["sampler_name"].is_file


def test_from_object_info_and_merged() -> None:
    info = {
        "Pick": {
            "input": {
                "required": {
                    "mode": [["fast", "slow"], {"default": "fast"}],
                    "level": ["COMBO", {"options": ["low", "high"]}],
                    "n": ["INT", {"min": 0, "max": 3}],
                },
                "hidden": {"uid": "UNIQUE_ID"},
            },
            "output": ["IMAGE", ["a", "b"]],
            "output_name": ["image", "choice"],
            "output_node": True,
        }
    }
    pick = NodeSchemas.from_object_info(info)["Pick"]
    assert [(s.name, s.type, s.options) for s in pick.required.values()] == [
        ("mode", "COMBO", ("fast", "slow")),
        ("level", "COMBO", ("low", "high")),
        ("n", "INT", None),
    ]
    assert pick.hidden["uid"].type == "UNIQUE_ID"
    assert [(o.name, o.type) for o in pick.outputs] == [("image", "IMAGE"), ("choice", "COMBO")]
    assert pick.output_node

    merged = SCHEMAS.merged(NodeSchemas.from_object_info({"KSampler": info["Pick"]}))
    assert merged["KSampler"].output_node and len(merged) == len(SCHEMAS)
    assert not SCHEMAS["KSampler"].output_node  # the original is unchanged


@pytest.mark.parametrize(
    "info",
    [
        {"X": "nope"},
        {"X": {"input": {"required": {"a": []}}}},
        {"X": {"input": {"required": {"a": [3]}}}},
        {"X": {"input": {"required": []}}},
        {"X": {"output": "IMAGE"}},
    ],
)
def test_from_object_info_rejects_malformed_entries(info: Any) -> None:
    with pytest.raises(ValueError, match="'X'"):
        NodeSchemas.from_object_info(info)


# -- validation ---------------------------------------------------------------------------


def test_valid_graphs_have_no_problems() -> None:
    txt2img().validate()
    txt2img().validate(check_files=True)
    Graph.from_api(load("accepted_instantid_sdxl.json")).validate(check_files=True)


Mutation = Callable[[Graph], None]


def setin(node: str, name: str, value: Any) -> Mutation:
    return lambda g: g[node].inputs.__setitem__(name, value)


def drop(node: str, name: str) -> Mutation:
    return lambda g: g[node].inputs.__delitem__(name)


# Mutations of txt2img(): ids 1 ckpt, 2/3 text, 4 latent, 5 KSampler, 6 decode, 7 save.
CASES: list[tuple[str, Mutation, tuple[str, str | None, str], str]] = [
    ("missing", drop("5", "steps"), ("5", "steps", "required_input_missing"), "1 to 10000"),
    ("missing link", drop("6", "vae"), ("6", "vae", "required_input_missing"), "type VAE"),
    ("no node", setin("6", "vae", Output("9", 0)), ("6", "vae", "bad_linked_input"), "'9'"),
    ("index", setin("6", "vae", Output("1", 3)), ("6", "vae", "bad_linked_input"), "2 VAE"),
    ("not a link", setin("5", "model", ["1"]), ("5", "model", "bad_linked_input"), "__value__"),
    (
        "type",
        setin("5", "positive", Output("1", 0)),
        ("5", "positive", "return_type_mismatch"),
        "takes CONDITIONING but is linked to output 0 (MODEL",
    ),
    ("int", setin("5", "steps", "many"), ("5", "steps", "invalid_input_type"), "integer"),
    ("float", setin("5", "cfg", None), ("5", "cfg", "invalid_input_type"), "number"),
    ("string", setin("2", "text", 5), ("2", "text", "invalid_input_type"), "string"),
    ("min", setin("5", "steps", 0), ("5", "steps", "value_smaller_than_min"), "1 to 10000"),
    ("max", setin("5", "denoise", 1.5), ("5", "denoise", "value_bigger_than_max"), "0.0 to 1.0"),
    (
        "combo",
        setin("5", "sampler_name", "Euler"),
        ("5", "sampler_name", "value_not_in_list"),
        "did you mean 'euler'?",
    ),
    (
        "unknown input",
        setin("5", "sedd", 1),
        ("5", "sedd", "unknown_input"),
        "did you mean 'seed'?",
    ),
    (
        "file name",
        setin("1", "ckpt_name", "../secret.safetensors"),
        ("1", "ckpt_name", "invalid_file_name"),
        "'..' segment",
    ),
    ("node type", lambda g: g.node("KSamplr"), ("8", None, "missing_node_type"), "'KSampler'"),
]


@pytest.mark.parametrize(
    ("mutate", "expected", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_problem_is_reported_on_its_node_and_input(
    mutate: Mutation, expected: tuple[str, str | None, str], fragment: str
) -> None:
    g = txt2img()
    mutate(g)
    errors = g.problems()
    assert where(errors) == {expected}
    assert fragment in errors[0].message
    assert errors[0].class_type == g[expected[0]].class_type


def test_boolean_and_string_inputs_need_a_bool_and_a_str() -> None:
    g = txt2img()
    sampling = g.node("ModelSamplingDiscrete", model=g["1"][0], sampling="eps", zsnr=False)
    g["5"].inputs["model"] = sampling.out("MODEL")
    assert g.problems() == []
    sampling.inputs["zsnr"] = "false"  # the server's bool("false") is True
    g["2"].inputs["text"] = None  # the server's str(None) is "None"
    assert where(g.problems()) == {
        (sampling.id, "zsnr", "invalid_input_type"),
        ("2", "text", "invalid_input_type"),
    }


def test_numbers_are_converted_like_comfyui() -> None:
    g = txt2img()
    g["5"].inputs.update(steps="30", seed=7.0, cfg="4.5", denoise={"__value__": 0.5})
    assert g.problems() == []  # the server would int()/float() these too
    g["5"].inputs.update(steps="30.5")
    assert where(g.problems()) == {("5", "steps", "invalid_input_type")}


def test_every_problem_is_reported_at_once() -> None:
    g = txt2img()
    g["5"].inputs.update(steps=0, sampler_name="nope", positive=Output("1", 0))
    del g["3"].inputs["text"]
    with pytest.raises(GraphValidationError) as info:
        g.validate()
    err = info.value
    assert where(err.errors) == {
        ("3", "text", "required_input_missing"),
        ("5", "steps", "value_smaller_than_min"),
        ("5", "sampler_name", "value_not_in_list"),
        ("5", "positive", "return_type_mismatch"),
    }
    assert err.node_ids == ["3", "5"]
    assert "4 problems in the graph" in str(err)
    assert "'nope' is not an allowed value" in str(err)


def test_not_in_list_message_quotes_ten_values_and_counts_the_rest() -> None:
    g = txt2img()
    g["5"].inputs["sampler_name"] = "zzz"
    (error,) = g.problems()
    options = SCHEMAS["KSampler"].inputs["sampler_name"].options or ()
    assert len(options) > 10
    assert all(repr(o) in error.message for o in options[:10])
    assert repr(options[10]) not in error.message
    assert f"and {len(options) - 10} more" in error.message


def test_cycles_are_reported() -> None:
    g = txt2img()
    g.node("ImageInvert", id="a", image=Output("b", 0))
    g.node("ImageInvert", id="b", image=Output("a", 0))
    g.node("ImageInvert", id="c", image=Output("c", 0))
    errors = [e for e in g.problems() if e.type == "dependency_cycle"]
    assert where(errors) == {("b", "image", "dependency_cycle"), ("c", "image", "dependency_cycle")}
    assert "a -> b -> a" in errors[0].message
    assert "c -> c" in errors[1].message


def test_a_graph_without_output_node_is_rejected() -> None:
    g = txt2img()
    g["7"].class_type = "PreviewAny"  # an output node too
    g["7"].inputs = {"source": Output("6", 0)}
    assert g.problems() == []
    g["7"].class_type = "ImageInvert"
    g["7"].inputs = {"image": Output("6", 0)}
    assert where(g.problems()) == {("", None, "prompt_no_outputs")}
    assert where(Graph().problems()) == {("", None, "prompt_no_outputs")}


def test_unknown_node_types_are_reported_once() -> None:
    g = txt2img()
    g["6"].class_type = "MyDecoder"
    # Links from and to the unknown node cannot be checked and are not reported, nor is
    # "no outputs" (the unknown node might be one).
    g["7"].class_type = "MySaver"
    assert where(g.problems()) == {
        ("6", None, "missing_node_type"),
        ("7", None, "missing_node_type"),
    }


def test_link_type_rules() -> None:
    assert types_match("IMAGE", "IMAGE")
    assert types_match("MODEL", "*") and types_match("*", "LATENT")
    assert types_match("IMAGE", "IMAGE,MASK") and types_match("MASK,IMAGE", "IMAGE")
    assert not types_match("IMAGE", "MASK")
    assert types_match("COMBO", "COMBO")
    # A COMBO output (an option list, as some custom nodes give) into a combo input:
    custom = NodeSchemas.from_object_info({"Pick": {"output": [["euler", "ddim"]]}})
    g = Graph.from_api(txt2img().to_api(), schemas=SCHEMAS.merged(custom))
    g["5"].inputs["sampler_name"] = g.node("Pick")[0]
    assert g.problems() == []
    # ... but a STRING output is not a combo value, for ComfyUI either.
    g["5"].inputs["scheduler"] = g.node("PrimitiveString", value="karras")[0]
    assert where(g.problems()) == {("5", "scheduler", "return_type_mismatch")}


def test_file_names_are_checked_as_paths_unless_check_files() -> None:
    g = txt2img(ckpt_name="sdxl/other.safetensors")
    assert g.problems() == []
    assert where(g.problems(check_files=True)) == {("1", "ckpt_name", "value_not_in_list")}
    assert "sd_xl_base_1.0.safetensors" in g.problems(check_files=True)[0].message
    for bad in ["", "/abs.safetensors", "C:/x.safetensors", "a\\b.safetensors", "a\0b", 5]:
        g["1"].inputs["ckpt_name"] = bad
        assert where(g.problems()) == {("1", "ckpt_name", "invalid_file_name")}, bad


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(SCHEMAS)),
    st.data(),
)
def test_validator_handles_any_values(class_type: str, data: st.DataObject) -> None:
    schema = SCHEMAS[class_type]
    names = st.sampled_from([*schema.inputs, "junk"])
    values = json_values | st.builds(
        list, st.tuples(st.sampled_from(["1", "2", "x"]), st.integers(-1, 4))
    )
    g = Graph()
    g.node("CheckpointLoaderSimple", ckpt_name="sd_xl_base_1.0.safetensors")
    g.node(class_type, **data.draw(st.dictionaries(names, values, max_size=6)))
    for error in g.problems(check_files=data.draw(st.booleans())):
        assert error.node_id in ("", "1", "2") and error.message


# -- the real server's verdicts -----------------------------------------------------------

PROBES = load("validation_probes_instantid.json")
PROBE_MUTATIONS: dict[str, Mutation] = {
    "ApplyInstantID 'faceanalysis' instead of 'insightface'": lambda g: g["60"].inputs.update(
        faceanalysis=g["60"].inputs.pop("insightface")
    ),
    "ckpt not in list": setin("4", "ckpt_name", "sdxl/sd_xl_base_1.0.safetensors"),
    "controlnet name with backslash": setin(
        "16", "control_net_name", "instantid\\diffusion_pytorch_model.safetensors"
    ),
    "KSampler positive <- ApplyInstantID output 0 (MODEL)": setin("3", "positive", Output("60", 0)),
    "KSampler model <- checkpoint directly (bypass ApplyInstantID model)": setin(
        "3", "model", Output("4", 0)
    ),
    "ApplyInstantID weight 6.0 (> max 5.0)": setin("60", "weight", 6.0),
    "provider 'cpu' lowercase": setin("38", "provider", "cpu"),
    "EmptyLatentImage width 1020 (not multiple of 8)": setin("5", "width", 1020),
    "LoadImage missing file": setin("13", "image", "nope.png"),
    "ApplyInstantID missing start_at": drop("60", "start_at"),
}
# LoadImage checks its file in a custom VALIDATE_INPUTS (custom_validation_failed); our
# schemas only know the combo, so with check_files we report value_not_in_list instead.
SAME_FAULT = {"custom_validation_failed": "value_not_in_list"}
# Without check_files, names that are safe paths pass (the file may exist on the server
# that runs the graph) and a backslash is reported as a bad file name.
WITHOUT_FILE_LISTS = {
    "ckpt not in list": set(),
    "LoadImage missing file": set(),
    "controlnet name with backslash": {("16", "control_net_name", "invalid_file_name")},
}


def probe_graph(probe: dict[str, Any]) -> Graph:
    g = Graph.from_api(load("accepted_instantid_sdxl.json"))
    PROBE_MUTATIONS[probe["mutation_of_accepted_instantid_sdxl"]](g)
    return g


def server_faults(probe: dict[str, Any]) -> set[tuple[str, str | None, str]]:
    return {
        (node_id, re.match(r"[\w.]+", e["details"])[0], SAME_FAULT.get(e["type"], e["type"]))  # type: ignore[index]
        for node_id, errors in probe["node_errors"].items()
        for e in errors
    }


def test_every_probe_has_a_mutation() -> None:
    assert {p["mutation_of_accepted_instantid_sdxl"] for p in PROBES} == set(PROBE_MUTATIONS)


@pytest.mark.parametrize(
    "probe", PROBES, ids=[p["mutation_of_accepted_instantid_sdxl"] for p in PROBES]
)
def test_probe_verdicts_match_the_server(probe: dict[str, Any]) -> None:
    errors = probe_graph(probe).problems(check_files=True)
    expected = server_faults(probe)
    assert expected <= where(errors)
    assert {e.node_id for e in errors} == {n for n, _, _ in expected}
    assert (probe["http_status"] == 200) == (errors == [])


def test_renamed_input_is_also_reported_as_unknown() -> None:
    probe = next(p for p in PROBES if "faceanalysis" in p["mutation_of_accepted_instantid_sdxl"])
    errors = probe_graph(probe).problems()
    assert where(errors) == {
        ("60", "insightface", "required_input_missing"),
        ("60", "faceanalysis", "unknown_input"),
    }


@pytest.mark.parametrize(
    "probe", PROBES, ids=[p["mutation_of_accepted_instantid_sdxl"] for p in PROBES]
)
def test_probe_verdicts_without_file_lists(probe: dict[str, Any]) -> None:
    name = probe["mutation_of_accepted_instantid_sdxl"]
    errors = probe_graph(probe).problems()
    expected = WITHOUT_FILE_LISTS.get(name, server_faults(probe))
    assert expected <= where(errors)
    assert {e.node_id for e in errors} == {n for n, _, _ in expected}
