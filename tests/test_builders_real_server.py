"""Every workflow builder's graph is accepted by the REAL ComfyUI 0.3.75 server.

The server has placeholder files for every model of the manifest, so its validator
checks our graphs exactly as it would on a GPU machine: node types, input names,
types, ranges, choices and file names. InstantID's custom nodes cannot be installed
from the package registries; their graphs are checked against the recorded InstantID
schemas (tests/test_workflows.py) and their core part against the real server here.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ryla_gen.graph import NodeSchemas
from ryla_gen.testing import ComfyUIServer
from ryla_gen.workflows import Workflow, examples

pytestmark = pytest.mark.comfyui

EXAMPLES = examples()


def _core_part(graph: dict[str, Any], core: set[str]) -> dict[str, Any]:
    """The graph with its custom nodes bypassed.

    Each link to a custom node's output of type T is rewired to whatever feeds that
    node's input of the same type T (ApplyInstantID passes MODEL and both
    conditionings through), and the custom nodes are dropped.
    """
    schemas = NodeSchemas.bundled()
    custom = {nid for nid, n in graph.items() if n["class_type"] not in core}

    def source(link: list[Any]) -> list[Any]:
        nid, index = str(link[0]), int(link[1])
        if nid not in custom:
            return link
        schema = schemas.get(graph[nid]["class_type"])
        assert schema is not None, graph[nid]["class_type"]
        wanted = schema.outputs[index].type
        same_type = [
            value
            for name, value in graph[nid]["inputs"].items()
            if isinstance(value, list) and _input_type(schema, name) == wanted
        ]
        # The n-th output of that type passes the n-th input of that type through.
        nth = [o.type for o in schema.outputs[: index + 1]].count(wanted) - 1
        assert nth < len(same_type), f"no pass-through for output {index} of node {nid}"
        return source(same_type[nth])

    out: dict[str, Any] = {}
    for nid, node in graph.items():
        if nid in custom:
            continue
        inputs = {
            k: source(v) if isinstance(v, list) and len(v) == 2 else v
            for k, v in node["inputs"].items()
        }
        out[nid] = {"class_type": node["class_type"], "inputs": inputs}
    return out


def _input_type(schema: Any, name: str) -> str | None:
    spec = schema.required.get(name) or schema.optional.get(name)
    return None if spec is None else str(spec.type)


@pytest.fixture(scope="module")
def core_classes(comfyui_url: str) -> set[str]:
    return set(httpx.get(f"{comfyui_url}/object_info", timeout=60).json())


@pytest.mark.parametrize(
    "workflow", EXAMPLES, ids=[f"{i}-{w.name}" for i, w in enumerate(EXAMPLES)]
)
def test_builder_graph_is_accepted_by_real_comfyui(
    workflow: Workflow, comfyui_server: ComfyUIServer, core_classes: set[str]
) -> None:
    url = comfyui_server.url
    # The user's LoRAs and input images exist on a real deployment; put them here too.
    for lora in getattr(workflow, "loras", []):
        comfyui_server.add_model_file("loras", lora.name)
    for name, data in workflow.input_images().items():
        r = httpx.post(
            f"{url}/upload/image",
            files={"image": (name, data, "image/png")},
            data={"overwrite": "true"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert r.json()["name"] == name

    graph = workflow.to_graph().to_api()
    uses_custom = any(n["class_type"] not in core_classes for n in graph.values())
    sent = _core_part(graph, core_classes) if uses_custom else graph
    if uses_custom:
        assert workflow.name in ("instantid", "character-sheet")
        assert len(sent) < len(graph)

    r = httpx.post(f"{url}/prompt", json={"prompt": sent}, timeout=60)
    body = r.json()
    assert r.status_code == 200, body
    assert body["node_errors"] == {}
    # Placeholder weights cannot run: take the prompt back off the queue.
    httpx.post(f"{url}/queue", json={"delete": [body["prompt_id"]]}, timeout=30)
    httpx.post(f"{url}/interrupt", json={"prompt_id": body["prompt_id"]}, timeout=30)


def test_every_builder_is_covered() -> None:
    from ryla_gen.workflows import WORKFLOWS

    assert {w.name for w in EXAMPLES} == set(WORKFLOWS)


def test_core_part_rewires_instantid_through_the_checkpoint() -> None:
    instantid = next(w for w in EXAMPLES if w.name == "instantid")
    graph = instantid.to_graph().to_api()
    core = {n["class_type"] for n in graph.values()} - {
        "ApplyInstantID",
        "ApplyInstantIDAdvanced",
        "InstantIDModelLoader",
        "InstantIDFaceAnalysis",
    }
    sent = _core_part(graph, core)
    sampler = next(n for n in sent.values() if n["class_type"] == "KSampler")
    model_src = sent[sampler["inputs"]["model"][0]]["class_type"]
    pos_src = sent[sampler["inputs"]["positive"][0]]["class_type"]
    assert model_src in ("CheckpointLoaderSimple", "LoraLoader")
    assert pos_src == "CLIPTextEncode"
