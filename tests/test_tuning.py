"""The GPU worker's opt-in speed options (``ryla_gen_modal.tuning``) and what comes with them.

* :class:`~ryla_gen_modal.tuning.WorkerTuning` rewrites graphs (unmerged LoRAs, compile),
  read from the worker's environment and carried by :class:`DeployConfig`.
* ``ComfyUIProvider(graph_transform=...)`` sends the rewritten graph to the real server
  and leaves the request's own graph alone.
* ryla-gen's ComfyUI nodes (``ryla_gen_nodes``) load into a real ComfyUI 0.3.75, offer the
  same inputs as the stock LoRA loader, and tuned graphs pass the server's validation.
* Inside ComfyUI's own Python, unmerged LoRAs give the stock merged result on a tiny real
  Flux model, leave nothing behind, and (compiled) never recompile across LoRA changes.
* Model prefetch reads every byte; the warm-up job has the size the worker compiles for.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from helpers import fresh_color, rgb

from ryla_gen import AsyncClient, JobFailedError
from ryla_gen.graph import Graph, NodeSchema, NodeSchemas
from ryla_gen.graph._validate import is_link
from ryla_gen.models import for_workflow
from ryla_gen.providers.comfyui import ComfyUIProvider
from ryla_gen.testing import ComfyUIInstall, ComfyUIServer, manifest_placeholders, tiny_graph
from ryla_gen.types import JobRequest
from ryla_gen.workflows import FluxDev, FluxSchnell, LoRA, ZImageTurbo
from ryla_gen_modal import prefetch as prefetch_mod
from ryla_gen_modal.__main__ import main as modal_main
from ryla_gen_modal.config import DeployConfig, compile_cache_env, extra_model_paths_yaml
from ryla_gen_modal.prefetch import prefetch, prefetch_in_background, workflow_files
from ryla_gen_modal.tuning import COMFY_NODES_DIR, WorkerTuning
from ryla_gen_modal.warmup import warm_up, warmup_request

NODES_PACKAGE = COMFY_NODES_DIR / "ryla_gen_nodes"
CHECK_SCRIPT = Path(__file__).resolve().parent / "comfy_side" / "lora_slots_check.py"
LOADERS = {"UNETLoader", "DualCLIPLoader", "CLIPLoader", "VAELoader"}
"""Nodes that read the (placeholder) model files of the test servers."""
OURS = {"RylaLoraSlots", "RylaLoraLoaderModelOnly", "TorchCompileModel"}
"""The node classes tuning adds to a graph."""

LORA_MODES: tuple[Literal["merge", "unmerged"], ...] = ("merge", "unmerged")
UNMERGED = WorkerTuning(lora_mode="unmerged")
BOTH = WorkerTuning(lora_mode="unmerged", compile=True)

ApiGraph = dict[str, Any]


# -- graphs and helpers ------------------------------------------------------------------------


def _loras(*names: str) -> list[LoRA]:
    return [LoRA(name=n, strength=0.4 + 0.2 * i) for i, n in enumerate(names)]


def _two_loaders() -> ApiGraph:
    """Flux Dev with a second UNETLoader feeding a second sampler."""
    g = FluxDev(prompt="two", loras=_loras("a.safetensors")).to_graph().to_api()
    g["20"] = {
        "class_type": "UNETLoader",
        "inputs": {"unet_name": "other_flux.safetensors", "weight_dtype": "default"},
    }
    sampler = next(k for k, n in g.items() if n["class_type"] == "KSampler")
    g["21"] = copy.deepcopy(g[sampler])
    g["21"]["inputs"]["model"] = ["20", 0]
    return g


def _shared_loader() -> ApiGraph:
    """Flux Dev whose UNETLoader output goes to two nodes (a LoRA and a second sampler)."""
    g = FluxDev(prompt="shared", loras=_loras("a.safetensors")).to_graph().to_api()
    sampler = next(k for k, n in g.items() if n["class_type"] == "KSampler")
    g["30"] = copy.deepcopy(g[sampler])
    g["30"]["inputs"]["model"] = ["1", 0]
    return g


GRAPHS: dict[str, Callable[[], ApiGraph]] = {
    "flux-dev": lambda: FluxDev(prompt="a cat").to_graph().to_api(),
    "flux-dev-2-loras": lambda: (
        FluxDev(prompt="a cat", loras=_loras("a.safetensors", "b.safetensors")).to_graph().to_api()
    ),
    "flux-schnell-lora": lambda: (
        FluxSchnell(prompt="a dog", loras=_loras("a.safetensors")).to_graph().to_api()
    ),
    "z-image-2-loras": lambda: (
        ZImageTurbo(prompt="a fox", loras=_loras("a.safetensors", "b.safetensors"))
        .to_graph()
        .to_api()
    ),
    "two-unet-loaders": _two_loaders,
    "shared-unet-loader": _shared_loader,
}
FLUX = {
    "flux-dev",
    "flux-dev-2-loras",
    "flux-schnell-lora",
    "two-unet-loaders",
    "shared-unet-loader",
}


def _consumers(graph: Mapping[str, Any], node_id: str) -> set[tuple[str, str]]:
    """``(node, input)`` pairs linked to output 0 of ``node_id``."""
    return {
        (nid, name)
        for nid, node in graph.items()
        for name, value in node["inputs"].items()
        if is_link(value) and value == [node_id, 0]
    }


def _of_class(graph: Mapping[str, Any], class_type: str) -> list[str]:
    return [k for k, n in graph.items() if n["class_type"] == class_type]


def _dangling(graph: Mapping[str, Any]) -> list[str]:
    return [
        f"{nid}.{name} -> {value[0]}"
        for nid, node in graph.items()
        for name, value in node["inputs"].items()
        if is_link(value) and value[0] not in graph
    ]


def _tuned_schemas() -> NodeSchemas:
    """Bundled schemas plus ryla-gen's two nodes as their Python classes declare them."""
    bundled = NodeSchemas.bundled()
    lora = dataclasses.replace(bundled["LoraLoaderModelOnly"], name="RylaLoraLoaderModelOnly")
    slots = NodeSchema.from_object_info(
        "RylaLoraSlots",
        {
            "input": {"required": {"model": ["MODEL"]}},
            "output": ["MODEL"],
            "output_name": ["MODEL"],
        },
    )
    return bundled.merged(NodeSchemas([lora, slots]))


def _expected_chain(tuning: WorkerTuning, flux: bool) -> list[str]:
    chain = ["RylaLoraSlots"] if tuning.lora_mode == "unmerged" else []
    return chain + (["TorchCompileModel"] if tuning.compile and flux else [])


def _chain_after(tuned: Mapping[str, Any], loader: str, new_ids: set[str]) -> list[str]:
    """Ids of the inserted nodes that follow ``loader``, in order."""
    chain: list[str] = []
    cur = loader
    while True:
        nxt = [nid for nid, _ in _consumers(tuned, cur) if nid in new_ids]
        if not nxt:
            return chain
        assert len(nxt) == 1 and len(_consumers(tuned, cur)) == 1, (cur, _consumers(tuned, cur))
        cur = nxt[0]
        chain.append(cur)


def _undo(tuned: Mapping[str, Any], new_ids: set[str], loaders: list[str]) -> ApiGraph:
    """The tuned graph with the inserted nodes cut out and LoRA classes set back to stock."""
    out = copy.deepcopy({k: v for k, v in tuned.items() if k not in new_ids})
    ends = {}
    for loader in loaders:
        chain = _chain_after(tuned, loader, new_ids)
        if chain:
            ends[chain[-1]] = loader
    for node in out.values():
        if node["class_type"] == "RylaLoraLoaderModelOnly":
            node["class_type"] = "LoraLoaderModelOnly"
        for name, value in node["inputs"].items():
            if is_link(value) and value[0] in ends:
                node["inputs"][name] = [ends[value[0]], value[1]]
    return out


# -- WorkerTuning.apply ------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*GRAPHS, "tiny"])
def test_default_tuning_leaves_the_graph_as_it_is(name: str) -> None:
    graph = tiny_graph() if name == "tiny" else GRAPHS[name]()
    before = copy.deepcopy(graph)
    tuning = WorkerTuning()
    assert not tuning.active and not tuning.needs_custom_nodes
    out = tuning.apply(graph)
    assert out == graph == before
    # A copy all the way down: editing it leaves the caller's graph alone.
    assert out is not graph
    for node_id in graph:
        assert out[node_id] is not graph[node_id]
        assert out[node_id]["inputs"] is not graph[node_id]["inputs"]
        out[node_id]["inputs"]["ryla_edit"] = 1
    assert graph == before


@pytest.mark.parametrize("tuning", [UNMERGED, BOTH], ids=["unmerged", "both"])
@pytest.mark.parametrize("name", list(GRAPHS))
def test_tuned_graph_is_the_stock_graph_plus_a_chain_after_each_unet_loader(
    name: str, tuning: WorkerTuning
) -> None:
    graph = GRAPHS[name]()
    before = copy.deepcopy(graph)
    tuned = tuning.apply(graph)
    assert graph == before  # the input is never modified

    loaders = _of_class(graph, "UNETLoader")
    expected = _expected_chain(tuning, name in FLUX)
    new_ids = set(tuned) - set(graph)
    assert len(new_ids) == len(expected) * len(loaders)
    for loader in loaders:
        chain = _chain_after(tuned, loader, new_ids)
        assert [tuned[c]["class_type"] for c in chain] == expected
        if chain:
            # The loader now feeds only the chain; the chain's end feeds everything the
            # loader used to feed.
            assert _consumers(tuned, loader) == {(chain[0], "model")}
            assert _consumers(tuned, chain[-1]) == _consumers(graph, loader)
        else:
            assert _consumers(tuned, loader) == _consumers(graph, loader)
    for node_id in new_ids:
        if tuned[node_id]["class_type"] == "TorchCompileModel":
            assert tuned[node_id]["inputs"]["backend"] == "inductor"

    # LoRA nodes keep their ids and inputs; only their class changes, and only if unmerged.
    stock_loras = _of_class(graph, "LoraLoaderModelOnly")
    unmerged = tuning.lora_mode == "unmerged"
    wanted = "RylaLoraLoaderModelOnly" if unmerged else "LoraLoaderModelOnly"
    assert {tuned[k]["class_type"] for k in stock_loras} <= {wanted}
    assert len(_of_class(tuned, wanted)) == len(stock_loras)
    if unmerged:
        assert not _of_class(tuned, "LoraLoaderModelOnly")
    # Nothing else changed: cutting the chain out gives the stock graph back.
    assert _undo(tuned, new_ids, loaders) == graph

    # Still a well-formed graph ComfyUI accepts: no dangling links, types match, no cycles.
    assert _dangling(tuned) == []
    assert Graph.from_api(tuned).problems(_tuned_schemas()) == []


def test_unmerged_flux_dev_with_two_loras_runs_slots_then_each_lora() -> None:
    graph = FluxDev(prompt="a cat", loras=_loras("a.safetensors", "b.safetensors")).to_graph()
    api = graph.to_api()
    tuned = UNMERGED.apply(api)
    first, second = _of_class(api, "LoraLoaderModelOnly")
    slots = _of_class(tuned, "RylaLoraSlots")
    assert len(slots) == 1
    assert tuned[slots[0]]["inputs"] == {"model": ["1", 0]}
    assert tuned[first]["class_type"] == tuned[second]["class_type"] == "RylaLoraLoaderModelOnly"
    assert tuned[first]["inputs"] == {**api[first]["inputs"], "model": [slots[0], 0]}
    assert tuned[second]["inputs"] == api[second]["inputs"]  # still after the first LoRA
    assert not _of_class(tuned, "TorchCompileModel")


@pytest.mark.parametrize("workflow", [FluxDev, FluxSchnell])
def test_compile_goes_between_the_slots_and_the_loras_of_flux_graphs(
    workflow: type[FluxDev] | type[FluxSchnell],
) -> None:
    api = workflow(prompt="x", loras=_loras("a.safetensors")).to_graph().to_api()
    (lora,) = _of_class(api, "LoraLoaderModelOnly")
    tuned = BOTH.apply(api)
    (slots,) = _of_class(tuned, "RylaLoraSlots")
    (compiled,) = _of_class(tuned, "TorchCompileModel")
    assert tuned[slots]["inputs"]["model"] == ["1", 0]
    assert tuned[compiled]["inputs"] == {"model": [slots, 0], "backend": "inductor"}
    assert tuned[lora]["inputs"]["model"] == [compiled, 0]


def test_compile_with_stock_merged_loras_is_refused() -> None:
    # Merging replaces the weight tensors: every LoRA change would recompile (~1 min).
    with pytest.raises(ValueError, match="RYLA_GEN_LORA_MODE=unmerged"):
        WorkerTuning(compile=True)
    with pytest.raises(ValueError, match="RYLA_GEN_LORA_MODE=unmerged"):
        WorkerTuning.from_env({"RYLA_GEN_COMPILE": "1"})


def test_z_image_is_never_compiled() -> None:
    api = ZImageTurbo(prompt="x", loras=_loras("a.safetensors")).to_graph().to_api()
    tuned = BOTH.apply(api)
    assert not _of_class(tuned, "TorchCompileModel")
    assert len(_of_class(tuned, "RylaLoraSlots")) == 1


def test_lora_that_also_patches_the_text_encoder_stays_stock_but_valid() -> None:
    lora = LoRA(name="a.safetensors", strength=0.8, clip_strength=0.5)
    api = FluxDev(prompt="x", loras=[lora]).to_graph().to_api()
    (stock,) = _of_class(api, "LoraLoader")
    tuned = BOTH.apply(api)
    assert tuned[stock]["class_type"] == "LoraLoader"
    assert Graph.from_api(tuned).problems(_tuned_schemas()) == []


@pytest.mark.parametrize(
    ("tuning", "taken"), [(UNMERGED, "ryla_slots_1"), (BOTH, "ryla_compile_1")]
)
def test_node_id_collision_is_refused(tuning: WorkerTuning, taken: str) -> None:
    api = FluxDev(prompt="x").to_graph().to_api()
    api[taken] = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8}}
    before = copy.deepcopy(api)
    with pytest.raises(ValueError, match=taken):
        tuning.apply(api)
    assert api == before


# -- WorkerTuning from the environment, DeployConfig -------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, WorkerTuning()),
        (
            {"RYLA_GEN_LORA_MODE": "", "RYLA_GEN_COMPILE": "", "RYLA_GEN_LORA_RANK": ""},
            WorkerTuning(),
        ),
        ({"RYLA_GEN_LORA_MODE": " Unmerged "}, UNMERGED),
        ({"RYLA_GEN_LORA_MODE": "unmerged", "RYLA_GEN_COMPILE": "1"}, BOTH),
        ({"RYLA_GEN_LORA_MODE": "unmerged", "RYLA_GEN_COMPILE": "TRUE"}, BOTH),
        ({"RYLA_GEN_LORA_MODE": "unmerged", "RYLA_GEN_COMPILE": "inductor"}, BOTH),
        ({"RYLA_GEN_LORA_MODE": "unmerged", "RYLA_GEN_COMPILE": "on"}, BOTH),
        ({"RYLA_GEN_COMPILE": "off"}, WorkerTuning()),
        ({"RYLA_GEN_COMPILE": "0"}, WorkerTuning()),
        (
            {
                "RYLA_GEN_LORA_MODE": "unmerged",
                "RYLA_GEN_COMPILE": "yes",
                "RYLA_GEN_LORA_RANK": " 32",
            },
            WorkerTuning(lora_mode="unmerged", compile=True, lora_rank=32),
        ),
    ],
)
def test_tuning_is_read_from_the_environment(env: dict[str, str], expected: WorkerTuning) -> None:
    assert WorkerTuning.from_env(env) == expected


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RYLA_GEN_LORA_MODE", "fast"),
        ("RYLA_GEN_LORA_MODE", "merged"),
        ("RYLA_GEN_COMPILE", "maybe"),
        ("RYLA_GEN_COMPILE", "2"),
        ("RYLA_GEN_LORA_RANK", "abc"),
        ("RYLA_GEN_LORA_RANK", "16.5"),
        ("RYLA_GEN_LORA_RANK", "0"),
        ("RYLA_GEN_LORA_RANK", "-8"),
        ("RYLA_GEN_LORA_RANK", "4096"),
    ],
)
def test_bad_tuning_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=variable):
        WorkerTuning.from_env({variable: value})
    with pytest.raises(ValueError, match=variable):  # the deployment refuses it too
        DeployConfig.from_env({variable: value})


def test_tuning_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RYLA_GEN_LORA_MODE", "unmerged")
    monkeypatch.setenv("RYLA_GEN_LORA_RANK", "16")
    monkeypatch.delenv("RYLA_GEN_COMPILE", raising=False)
    assert WorkerTuning.from_env() == WorkerTuning(lora_mode="unmerged", lora_rank=16)


@pytest.mark.parametrize(
    "tuning",
    [
        WorkerTuning(lora_mode=mode, compile=comp, lora_rank=rank)
        for mode, comp, rank in itertools.product(LORA_MODES, (False, True), (1, 64, 1024))
        if mode == "unmerged" or not comp  # compile needs unmerged LoRAs
    ],
)
def test_tuning_survives_the_trip_through_worker_variables(tuning: WorkerTuning) -> None:
    assert WorkerTuning.from_env(tuning.env()) == tuning
    config = DeployConfig.from_env(tuning.env())
    assert config.tuning == tuning
    assert DeployConfig.from_env(config.worker_env()).tuning == tuning
    assert config.warmup_size == (1024 if tuning.compile else 256)
    assert tuning.active == (tuning.lora_mode == "unmerged" or tuning.compile)
    env = tuning.comfyui_env()
    if tuning.lora_mode == "unmerged":
        # What ryla_gen_nodes reads inside ComfyUI: the slot rank, and whether a compiled
        # model keeps one graph for jobs with and without LoRAs.
        assert env["RYLA_GEN_LORA_RANK"] == str(tuning.lora_rank)
        assert bool(env["RYLA_GEN_LORA_STATIC"]) == tuning.compile
    else:
        assert env == {}


def test_deploy_config_defaults_to_stock_graphs_and_its_own_compile_cache() -> None:
    config = DeployConfig.from_env({})
    assert config.tuning == WorkerTuning() and not config.tuning.active
    assert config.warmup_size == 256
    volumes = {config.models_volume, config.loras_volume, config.compile_cache_volume}
    assert len(volumes) == 3  # a Volume of its own
    assert config.app_name in config.compile_cache_volume
    env = compile_cache_env("/cc")
    assert env["TORCHINDUCTOR_CACHE_DIR"].startswith("/cc/")
    assert env["TRITON_CACHE_DIR"].startswith("/cc/")
    assert env["TORCHINDUCTOR_CACHE_DIR"] != env["TRITON_CACHE_DIR"]


def _yaml_sections(text: str) -> dict[str, dict[str, str]]:
    """The two-level ``extra_model_paths.yaml`` (block values joined by newlines)."""
    sections: dict[str, dict[str, str]] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            section = sections.setdefault(line.rstrip(":"), {})
        elif not line.startswith("   "):
            key, _, value = line.strip().partition(":")
            section[key] = value.strip()
        else:
            section[key] = (section[key] + "\n" + line.strip()).strip()
    return sections


def test_extra_model_paths_lists_custom_nodes_only_when_asked() -> None:
    nodes = str(COMFY_NODES_DIR)
    with_nodes = _yaml_sections(extra_model_paths_yaml("/models", "/loras", custom_nodes_dir=nodes))
    without = _yaml_sections(extra_model_paths_yaml("/models", "/loras"))
    assert [s["custom_nodes"] for s in with_nodes.values() if "custom_nodes" in s] == [nodes]
    assert not [s for s in without.values() if "custom_nodes" in s]
    # The rest is the same file.
    assert {k: v for k, v in with_nodes.items() if "custom_nodes" not in v} == without
    assert without["ryla_gen_loras"]["base_path"] == "/loras"


def test_nodes_dir_command_prints_the_folder_comfyui_loads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert modal_main(["nodes-dir"]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed == COMFY_NODES_DIR
    source = (printed / "ryla_gen_nodes" / "__init__.py").read_text(encoding="utf-8")
    assert "NODE_CLASS_MAPPINGS" in source


@pytest.mark.parametrize(
    ("variable", "value"), [("RYLA_GEN_LORA_MODE", "bogus"), ("RYLA_GEN_COMPILE", "sometimes")]
)
def test_serve_refuses_a_bad_tuning_value(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
) -> None:
    monkeypatch.delenv("RYLA_GEN_API_TOKEN", raising=False)
    monkeypatch.setenv(variable, value)
    code = modal_main(["serve", "--comfyui-url", "http://127.0.0.1:9", "--insecure-no-auth"])
    assert code == 2
    err = capsys.readouterr().err
    assert variable in err and value in err


# -- ComfyUIProvider(graph_transform=...) on the real server ------------------------------------


def _recolor(color: int, prefix: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    def transform(graph: Mapping[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(dict(graph))
        out["1"]["inputs"]["color"] = color
        out["2"]["inputs"]["filename_prefix"] = prefix
        return out

    return transform


async def _history_prompt(url: str, prompt_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        entry = (await http.get(f"{url}/history/{prompt_id}")).json()[prompt_id]
    prompt: dict[str, Any] = entry["prompt"][2]
    return prompt


@pytest.mark.comfyui
async def test_provider_sends_the_transformed_graph_and_keeps_the_request(
    comfyui_url: str,
) -> None:
    asked, sent = fresh_color(), fresh_color()
    while sent == asked:
        sent = fresh_color()
    request = JobRequest(graph=tiny_graph(width=24, height=16, color=asked, prefix="ryla_asked"))
    before = copy.deepcopy(request.graph)
    transform = _recolor(sent, "ryla_transformed")
    provider = ComfyUIProvider(comfyui_url, graph_transform=transform)
    async with AsyncClient(provider) as client:
        result = await client.generate(request)
    image = result.image.to_pil().convert("RGB")
    assert image.size == (24, 16)
    assert image.getpixel((0, 0)) == rgb(sent)
    assert image.getpixel((23, 15)) == rgb(sent)
    assert Path(result.image.filename).name.startswith("ryla_transformed")
    # ComfyUI ran exactly the transformed graph; the request still holds the one asked for.
    assert await _history_prompt(comfyui_url, result.job_id) == transform(before)
    assert result.graph == transform(before)  # the result names the graph that ran
    assert request.graph == before


@pytest.mark.comfyui
async def test_provider_keeps_the_request_even_if_the_transform_edits_in_place(
    comfyui_url: str,
) -> None:
    sent = fresh_color()

    def in_place(graph: Mapping[str, Any]) -> dict[str, Any]:
        g: dict[str, Any] = graph  # type: ignore[assignment]
        g["1"]["inputs"]["color"] = sent
        return g

    request = JobRequest(graph=tiny_graph(width=8, height=8, color=sent ^ 0xFFFFFF))
    before = copy.deepcopy(request.graph)
    async with AsyncClient(ComfyUIProvider(comfyui_url, graph_transform=in_place)) as client:
        result = await client.generate(request)
    assert result.image.to_pil().convert("RGB").getpixel((0, 0)) == rgb(sent)
    assert request.graph == before


@pytest.mark.comfyui
async def test_warm_up_sends_a_job_of_the_requested_size(comfyui_url: str) -> None:
    seen: list[dict[str, Any]] = []

    def spy(graph: Mapping[str, Any]) -> dict[str, Any]:
        seen.append(copy.deepcopy(dict(graph)))
        return BOTH.apply(graph)

    provider = ComfyUIProvider(comfyui_url, graph_transform=spy)
    try:
        # The session server lacks ryla-gen's nodes: the tuned graph is refused, which
        # a warm-up reports instead of raising.
        report = await warm_up(provider, ["flux-dev"], timeout=60, size=1024)
    finally:
        await provider.aclose()
    assert report["flux-dev"]["status"] == "failed"
    assert "RylaLoraSlots" in str(report["flux-dev"]["error"])
    (graph,) = seen
    (latent,) = _of_class(graph, "EmptySD3LatentImage")
    assert (graph[latent]["inputs"]["width"], graph[latent]["inputs"]["height"]) == (1024, 1024)


@pytest.mark.comfyui
def test_server_without_ryla_nodes_refuses_tuned_graphs(comfyui_url: str) -> None:
    # The negative of the tests below: without the nodes, ComfyUI rejects the graph.
    tuned = UNMERGED.apply(FluxDev(prompt="x").to_graph().to_api())
    response = httpx.post(f"{comfyui_url}/prompt", json={"prompt": tuned}, timeout=30)
    assert response.status_code == 400
    assert "RylaLoraSlots" in response.text


# -- a real ComfyUI with ryla-gen's nodes ------------------------------------------------------

LORA_FILE = "ryla_test_lora.safetensors"


@pytest.fixture(scope="module")
def ryla_server(
    comfyui_install: ComfyUIInstall, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ComfyUIServer]:
    """ComfyUI with ryla_gen_nodes loaded, configured as a worker with both options."""
    server = ComfyUIServer(
        comfyui_install,
        base_dir=tmp_path_factory.mktemp("ryla-nodes"),
        placeholders=manifest_placeholders(),
        custom_nodes=[NODES_PACKAGE],
        env=BOTH.comfyui_env(),
    )
    server.add_model_file("loras", LORA_FILE)
    try:
        server.start()
    except Exception as exc:
        server.stop()
        pytest.fail(f"starting ComfyUI with ryla_gen_nodes failed: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def _object_info(url: str) -> dict[str, Any]:
    info: dict[str, Any] = httpx.get(f"{url}/object_info", timeout=60).json()
    return info


def _wait_history(url: str, prompt_id: str, timeout: float = 120) -> dict[str, Any]:
    """The prompt's ``/history`` entry once it succeeded or failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = httpx.get(f"{url}/history/{prompt_id}", timeout=30).json().get(prompt_id)
        if entry and entry.get("status", {}).get("status_str") in ("error", "success"):
            result: dict[str, Any] = entry
            return result
        time.sleep(0.25)
    raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s")


@pytest.mark.comfyui
def test_ryla_nodes_are_listed_with_the_stock_lora_inputs(ryla_server: ComfyUIServer) -> None:
    info = _object_info(ryla_server.url)
    assert {"RylaLoraSlots", "RylaLoraLoaderModelOnly"} <= set(info)
    stock, ours = info["LoraLoaderModelOnly"], info["RylaLoraLoaderModelOnly"]
    # Same inputs (LoRA file choices, strength range) and output: a drop-in swap.
    assert ours["input"] == stock["input"]
    assert ours["output"] == stock["output"] == ["MODEL"]
    assert LORA_FILE in ours["input"]["required"]["lora_name"][0]
    slots = info["RylaLoraSlots"]
    assert slots["input"]["required"] == {"model": ["MODEL"]}
    assert slots["output"] == ["MODEL"]
    # The schemas the offline checks above use agree with the real ones.
    real = NodeSchemas.from_object_info(
        {k: info[k] for k in ("RylaLoraSlots", "RylaLoraLoaderModelOnly")}
    )
    offline = _tuned_schemas()
    for name in real:
        assert [(i.name, i.type, i.category) for i in real[name].inputs.values()] == [
            (i.name, i.type, i.category) for i in offline[name].inputs.values()
        ]
        assert real[name].outputs == offline[name].outputs


@pytest.mark.comfyui
@pytest.mark.parametrize("tuning", [UNMERGED, BOTH], ids=["unmerged", "both"])
def test_tuned_flux_graph_passes_comfyui_validation_and_fails_only_at_a_loader(
    ryla_server: ComfyUIServer, tuning: WorkerTuning
) -> None:
    url = ryla_server.url
    workflow = FluxDev(
        prompt="x",
        width=256,
        height=256,
        steps=1,
        loras=[LoRA(name=LORA_FILE, strength=0.7), LoRA(name=LORA_FILE, strength=-0.3)],
        filename_prefix=f"ryla_{fresh_color()}",
    )
    tuned = tuning.apply(workflow.to_graph().to_api())
    assert set(_of_class(tuned, "RylaLoraLoaderModelOnly"))
    schemas = NodeSchemas.from_object_info(_object_info(url))
    assert Graph.from_api(tuned).problems(schemas, check_files=True) == []

    response = httpx.post(f"{url}/prompt", json={"prompt": tuned}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json().get("node_errors") == {}
    entry = _wait_history(url, response.json()["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert len(errors) == 1
    # Placeholder weights: a model loader fails, never one of our nodes.
    assert errors[0]["node_type"] in LOADERS, errors[0]
    assert errors[0]["node_type"] not in OURS


@pytest.mark.comfyui
async def test_worker_provider_runs_tuned_jobs_on_the_ryla_server(
    ryla_server: ComfyUIServer,
) -> None:
    # As the worker does it: the client sends the stock graph, the provider tunes it.
    provider = ComfyUIProvider(ryla_server.url, graph_transform=BOTH.apply)
    workflow = FluxSchnell(
        prompt="x",
        width=256,
        height=256,
        steps=1,
        seed=1,
        loras=[LoRA(name=LORA_FILE, strength=0.5)],
        filename_prefix=f"ryla_{fresh_color()}",
    )
    async with AsyncClient(provider) as client:
        with pytest.raises(JobFailedError) as info:
            await client.generate(workflow, timeout=120)
    assert info.value.node_type in LOADERS
    sent = await _history_prompt(ryla_server.url, str(info.value.job_id))
    assert sent == BOTH.apply(workflow.to_graph().to_api())
    assert {n["class_type"] for n in sent.values()} >= OURS


@pytest.mark.comfyui
def test_worker_extra_model_paths_loads_the_ryla_nodes(
    comfyui_install: ComfyUIInstall, tmp_path: Path
) -> None:
    # The GPU worker does not symlink anything: its extra_model_paths.yaml names the folder.
    models, loras = tmp_path / "models", tmp_path / "loras"
    models.mkdir()
    loras.mkdir()
    (loras / LORA_FILE).write_bytes(b"x")
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(
        extra_model_paths_yaml(str(models), str(loras), custom_nodes_dir=str(COMFY_NODES_DIR))
    )
    with ComfyUIServer(
        comfyui_install,
        base_dir=tmp_path / "base",
        extra_args=["--extra-model-paths-config", str(config)],
        env=UNMERGED.comfyui_env(),
    ) as server:
        info = httpx.get(f"{server.url}/object_info/RylaLoraLoaderModelOnly", timeout=30).json()
        loaded = [ln for ln in server.log_tail(400).splitlines() if "ryla_gen_nodes" in ln]
    assert loaded and not [ln for ln in loaded if "IMPORT FAILED" in ln], loaded
    assert LORA_FILE in info["RylaLoraLoaderModelOnly"]["input"]["required"]["lora_name"][0]


# -- the LoRA math inside ComfyUI's own Python --------------------------------------------------


def _run_check(
    install: ComfyUIInstall, work: Path, tuning: WorkerTuning, *args: str
) -> dict[str, Any]:
    env = {**os.environ, **tuning.comfyui_env(), "PYTHONHASHSEED": "0"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [str(install.python), str(CHECK_SCRIPT), str(NODES_PACKAGE), str(work), *args],
        cwd=install.comfy_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=550,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, output[-4000:]
    result: dict[str, Any] = json.loads(lines[0][len("RESULT ") :])
    return result


def _assert_same_as_stock(result: dict[str, Any]) -> None:
    cases = result["cases"]
    assert set(cases) == {"a", "b", "b_half", "a_plus_b", "diffusers", "negative"}
    for name, case in cases.items():
        # The LoRA really changes the image, and unmerged gives what merging gives.
        assert case["rel_change_vs_plain"] > 0.05, (name, case)
        assert case["rel_err_vs_stock"] < 1e-5, (name, case)
    assert result["plain_after_loras_max_abs_diff"] == 0.0  # nothing left in the model
    assert result["slots"] > 0
    assert all(n > 0 for n in result["targets"].values())


@pytest.mark.comfyui
@pytest.mark.timeout(600)
def test_unmerged_loras_match_stock_merging_inside_comfyui(
    comfyui_install: ComfyUIInstall, tmp_path: Path
) -> None:
    result = _run_check(comfyui_install, tmp_path, UNMERGED)
    assert result["compile"] is False
    _assert_same_as_stock(result)


@pytest.mark.comfyui
@pytest.mark.timeout(600)
def test_compiled_model_never_recompiles_when_loras_change(
    comfyui_install: ComfyUIInstall, tmp_path: Path
) -> None:
    # The ComfyUI environment a worker with both options gets (RYLA_GEN_LORA_STATIC=1).
    result = _run_check(comfyui_install, tmp_path, BOTH, "--compile")
    assert result["compile"] is True
    _assert_same_as_stock(result)
    before, after = result["dynamo_stats_before"], result["dynamo_stats_after"]
    assert before and before.get("unique_graphs", 0) > 0  # it really was compiled
    assert after == before


# -- prefetch ----------------------------------------------------------------------------------


def _write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def test_prefetch_reads_every_byte_and_reports_missing_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk = 4096
    monkeypatch.setattr(prefetch_mod, "CHUNK", chunk)
    sizes = [0, 1, chunk - 1, chunk, chunk + 1, 5 * chunk + 17]
    files = [_write(tmp_path / f"f{i}.bin", s) for i, s in enumerate(sizes)]
    missing = tmp_path / "nope.safetensors"
    report = prefetch([*files, str(missing)], threads=3)
    assert report.files == len(files)
    assert report.bytes == sum(sizes)
    assert report.missing == [str(missing)]
    assert report.seconds >= 0 and report.gb_per_s >= 0
    as_dict = report.as_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["bytes"] == sum(sizes) and as_dict["missing"] == [str(missing)]


def test_prefetch_with_the_real_chunk_size(tmp_path: Path) -> None:
    sizes = [prefetch_mod.CHUNK + 7, 3 * prefetch_mod.CHUNK // 2, 10]
    files = [_write(tmp_path / f"m{i}.safetensors", s) for i, s in enumerate(sizes)]
    report = prefetch(files, threads=1)
    assert (report.files, report.bytes, report.missing) == (3, sum(sizes), [])
    empty = prefetch([])
    assert (empty.files, empty.bytes, empty.missing, empty.gb_per_s) == (0, 0, [], 0.0)


def test_prefetch_in_background_fills_the_report(tmp_path: Path) -> None:
    files = [_write(tmp_path / "x.bin", 1000), tmp_path / "gone.bin"]
    thread, result = prefetch_in_background(files, threads=2)
    thread.join(timeout=60)
    assert not thread.is_alive() and thread.daemon
    assert result["files"] == 1 and result["bytes"] == 1000
    assert result["missing"] == [str(tmp_path / "gone.bin")]


def test_workflow_files_finds_manifest_files_in_the_first_folder_that_has_them(
    tmp_path: Path,
) -> None:
    manifest = [f for f in for_workflow("flux-dev") if f.in_graph]
    assert len(manifest) >= 3
    first, second = tmp_path / "volume", tmp_path / "baked"
    on_first, on_both, nowhere, *rest = manifest
    for f in (on_first, on_both):
        _write(first / f.relpath, 3)
    for f in (on_both, *rest):
        _write(second / f.relpath, 5)
    found = workflow_files(["flux-dev"], [first, second])
    assert found == [
        first / on_first.relpath,
        first / on_both.relpath,
        *(second / f.relpath for f in rest),
    ]
    assert second / on_both.relpath not in found
    assert all(nowhere.relpath not in str(p) for p in found)
    # A workflow listed twice, or two sharing files (Flux Dev and Schnell share the text
    # encoders and VAE), reads each file once.
    twice = workflow_files(["flux-dev", "flux-dev", "flux-schnell"], [first, second])
    assert len(twice) == len(set(twice))
    assert set(found) <= set(twice)
    assert workflow_files(["flux-dev"], [tmp_path / "empty"]) == []
    with pytest.raises(ValueError, match="nope"):
        workflow_files(["nope"], [first])


# -- warm-up size ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [256, 1024])
@pytest.mark.parametrize("name", ["flux-dev", "flux-schnell", "z-image-turbo"])
def test_warmup_request_has_the_asked_size(name: str, size: int) -> None:
    request = warmup_request(name, size)
    Graph.from_api(request.graph).validate()
    (latent,) = _of_class(request.graph, "EmptySD3LatentImage")
    inputs = request.graph[latent]["inputs"]
    assert (inputs["width"], inputs["height"]) == (size, size)
    (sampler,) = _of_class(request.graph, "KSampler")
    assert request.graph[sampler]["inputs"]["steps"] == 1


def test_warmup_default_size_is_small() -> None:
    (latent,) = _of_class(warmup_request("flux-dev").graph, "EmptySD3LatentImage")
    assert warmup_request("flux-dev").graph[latent]["inputs"]["width"] == 256


def test_prefetch_is_opt_in_and_reaches_the_worker() -> None:
    assert DeployConfig.from_env({}).prefetch is False
    config = DeployConfig.from_env({"RYLA_GEN_PREFETCH": "1", "RYLA_GEN_WARMUP": "flux-dev"})
    assert config.prefetch is True
    assert DeployConfig.from_env(config.worker_env()).prefetch is True
    assert DeployConfig.from_env({"RYLA_GEN_PREFETCH": "0"}).prefetch is False


async def test_compiled_warm_up_runs_flux_twice_and_the_rest_small(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # torch.compile guards on the step schedule's length: two step counts during the
    # warm-up make it dynamic, so a user's 20-step job does not recompile (run 4 of
    # BENCHMARKS.md: 28 s). Z-Image is never compiled: one small job is enough.
    import ryla_gen_modal.warmup as warmup_mod

    sent: list[tuple[int, int, int]] = []

    async def fake_run_job(provider: Any, request: JobRequest, **kw: Any) -> dict[str, Any]:
        (latent,) = _of_class(request.graph, "EmptySD3LatentImage")
        (sampler,) = _of_class(request.graph, "KSampler")
        inputs = request.graph[latent]["inputs"]
        sent.append((inputs["width"], inputs["height"], request.graph[sampler]["inputs"]["steps"]))
        return {"status": "completed", "error": None}

    monkeypatch.setattr(warmup_mod, "run_job", fake_run_job)
    report = await warm_up(
        None,  # type: ignore[arg-type]  # run_job is replaced
        ["flux-dev", "z-image-turbo"],
        size=1024,
        compiled=True,
    )
    assert sent == [(1024, 1024, 1), (1024, 1024, 2), (256, 256, 1)]
    assert {r["status"] for r in report.values()} == {"completed"}
    sent.clear()
    await warm_up(None, ["flux-dev"], size=256)  # type: ignore[arg-type]
    assert sent == [(256, 256, 1)]
