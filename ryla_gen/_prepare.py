"""Turn what a user hands the client (workflow, Graph or raw dict) into a JobRequest."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Union

from ryla_gen.errors import GraphValidationError, InputError
from ryla_gen.types import JobRequest

if TYPE_CHECKING:
    from ryla_gen.graph import Graph
    from ryla_gen.workflows import Workflow

__all__ = ["Work", "prepare"]

Work = Union["Workflow", "Graph", Mapping[str, Any], JobRequest]
"""Anything the client runs: a workflow model, a Graph, an API-format dict, a JobRequest."""


def prepare(
    work: Work,
    *,
    images: Mapping[str, bytes] | None = None,
    validate: bool = True,
) -> JobRequest:
    """Build the request for ``work`` and validate its graph against the bundled schemas.

    Raw graphs may use custom nodes we have no schema for: those nodes are left for the
    server to check; every node we know is checked here, before anything is sent.
    """
    from ryla_gen.graph import Graph
    from ryla_gen.workflows import Workflow

    extra = dict(images or {})
    for name, data in extra.items():
        if not isinstance(data, bytes | bytearray):
            raise InputError(f"Input image {name!r} must be bytes, got {type(data).__name__}.")
    if isinstance(work, JobRequest):
        req = JobRequest(
            graph=work.graph,
            images={**work.images, **extra},
            workflow=work.workflow,
            seed=work.seed,
        )
        graph = Graph.from_api(work.graph) if validate else None
        known_only = True
    elif isinstance(work, Workflow):
        graph = work.to_graph()
        req = JobRequest(
            graph=graph.to_api(),
            images={**work.input_images(), **extra},
            workflow=work.name,
            seed=getattr(work, "seed", None),
        )
        known_only = False
    elif isinstance(work, Graph):
        graph = work
        req = JobRequest(graph=work.to_api(), images=extra)
        known_only = True
    elif isinstance(work, Mapping):
        try:
            graph = Graph.from_api(work)
        except (TypeError, ValueError) as exc:
            raise InputError(f"Not an API-format ComfyUI graph: {exc}") from exc
        req = JobRequest(graph=json.loads(json.dumps(dict(work))), images=extra)
        known_only = True
    else:
        raise InputError(
            f"Cannot run a {type(work).__name__}: pass a workflow (e.g. FluxDev(...)), "
            "a ryla_gen.graph.Graph, or an API-format dict."
        )
    if validate and graph is not None:
        problems = graph.problems()
        if known_only:
            problems = [p for p in problems if p.type != "missing_node_type"]
        if problems:
            raise GraphValidationError(problems)
    try:  # nodes without schemas too: NaN and infinity cannot be sent at all
        json.dumps(req.graph, allow_nan=False)
    except ValueError as exc:
        raise InputError(
            f"The graph holds a value JSON cannot carry (NaN or infinity): {exc}"
        ) from exc
    return req
