"""Build ComfyUI API-format graphs: the ``prompt`` of ``POST /prompt``."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NoReturn

from ryla_gen.errors import GraphValidationError, InputError, NodeError
from ryla_gen.graph._schema import NodeSchema, NodeSchemas
from ryla_gen.graph._validate import find_problems, is_link

__all__ = ["Graph", "Node", "Output"]


@dataclass(frozen=True)
class Output:
    """One output slot of a node; as an input value it links that slot to the input.

    In API format it is written ``[node_id, index]``.
    """

    node_id: str
    index: int


_VALUE_TYPES = (Output, str, int, float, bool, type(None), list, dict)


@dataclass
class Node:
    """One node of a :class:`Graph`. Get its outputs with ``node.out(name)`` or ``node[i]``.

    ``inputs`` maps input names to values or :class:`Output` links; edit it freely (also
    the way to set inputs named ``id`` or ``title``, which ``Graph.node`` keeps for itself).
    """

    id: str
    class_type: str
    inputs: dict[str, Any] = field(default_factory=dict)
    title: str | None = None
    _schemas: NodeSchemas = field(default_factory=NodeSchemas, repr=False, compare=False)

    @property
    def schema(self) -> NodeSchema | None:
        """The schema of ``class_type`` in the graph's schemas; None if they lack it."""
        return self._schemas.get(self.class_type)

    def out(self, key: str | int) -> Output:
        """The output ``key``: a name (the schema's ``output_name``, or a type name that
        only one output has) or an index.

        Raises ValueError listing the node's outputs when there is no such output, and
        for names when the class has no schema (use an index then).
        """
        if isinstance(key, bool) or not isinstance(key, int | str):
            raise TypeError(f"An output key is a name or an index, not {type(key).__name__}.")
        schema = self.schema
        if schema is not None:
            return Output(self.id, schema.output_index(key))
        if isinstance(key, str):
            raise ValueError(
                f"Cannot find output {key!r} of node {self.id}: there is no schema for "
                f"{self.class_type!r}, so its output names are unknown. Use an index."
            )
        if key < 0:
            raise ValueError(f"Output indices start at 0, got {key}.")
        return Output(self.id, key)

    def __getitem__(self, key: str | int) -> Output:
        """Same as :meth:`out`."""
        return self.out(key)

    def __iter__(self) -> NoReturn:
        """Nodes are not iterable; take outputs with ``node.out(...)`` or ``node[...]``."""
        raise TypeError("A Node is not iterable; use node.out(name) or node[index].")


class Graph:
    """An API-format ComfyUI graph: nodes with deterministic ids ``"1"``, ``"2"``, ...

    ``schemas`` resolve output names and are the default for validation; None means
    :meth:`NodeSchemas.bundled`.
    """

    def __init__(self, schemas: NodeSchemas | None = None) -> None:
        self._schemas = schemas if schemas is not None else NodeSchemas.bundled()
        self._nodes: dict[str, Node] = {}

    @property
    def schemas(self) -> NodeSchemas:
        """The schemas that resolve output names and are the default for validation."""
        return self._schemas

    def node(
        self, class_type: str, /, *, id: str | None = None, title: str | None = None, **inputs: Any
    ) -> Node:
        """Add a node of ``class_type`` and return it.

        ``id`` defaults to one more than the largest numeric id so far; an id already in
        use raises ValueError. Input values are JSON values or :class:`Output` links.
        """
        if not isinstance(class_type, str) or not class_type:
            raise TypeError(f"class_type must be a non-empty string, got {class_type!r}.")
        for name, value in inputs.items():
            if isinstance(value, Node):
                raise TypeError(
                    f"Input {name!r} got a Node; link one of its outputs instead: "
                    f"node.out(name) or node[index] (outputs of node {value.id}: "
                    f"{value.schema.describe_outputs() if value.schema else 'unknown'})."
                )
            if not isinstance(value, _VALUE_TYPES):
                raise TypeError(
                    f"Input {name!r} got a {type(value).__name__}; use a JSON value "
                    "(str, int, float, bool, None, list, dict) or an Output link."
                )
        return self._add(Node(self._new_id(id), class_type, dict(inputs), title))

    def _new_id(self, id: str | None) -> str:
        if id is None:
            numbers = (int(i) for i in self._nodes if i.isascii() and i.isdigit())
            return str(max(numbers, default=0) + 1)
        if not isinstance(id, str) or not id:
            raise TypeError(f"A node id must be a non-empty string, got {id!r}.")
        if id in self._nodes:
            raise ValueError(f"Node id {id!r} is already used by {self._nodes[id].class_type}.")
        return id

    def _add(self, node: Node) -> Node:
        node._schemas = self._schemas
        self._nodes[node.id] = node
        return node

    @property
    def nodes(self) -> Mapping[str, Node]:
        """The nodes by id, in insertion order (a read-only view)."""
        return MappingProxyType(self._nodes)

    def __getitem__(self, node_id: str) -> Node:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise KeyError(f"No node {node_id!r} in the graph.") from None

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __repr__(self) -> str:
        return f"Graph({len(self)} nodes)"

    # -- API format ------------------------------------------------------------------

    def to_api(self) -> dict[str, dict[str, Any]]:
        """The graph in API format, ready to POST as ``prompt`` (a fresh, JSON-able dict)."""
        api: dict[str, dict[str, Any]] = {}
        for node in self._nodes.values():
            inputs = {
                k: [v.node_id, v.index] if isinstance(v, Output) else copy.deepcopy(v)
                for k, v in node.inputs.items()
            }
            entry: dict[str, Any] = {"class_type": node.class_type, "inputs": inputs}
            if node.title:
                entry["_meta"] = {"title": node.title}
            api[node.id] = entry
        return api

    @classmethod
    def from_api(cls, data: Mapping[str, Any], *, schemas: NodeSchemas | None = None) -> Graph:
        """Read an API-format graph (e.g. one exported with ComfyUI's "Save (API)").

        ``[node_id, index]`` values become :class:`Output` links and ``_meta.title``
        becomes the node's title; other keys of a node are ignored. Raises InputError
        (a ValueError) when the data does not have the API-format shape.
        """
        if not isinstance(data, Mapping):
            raise InputError(
                f"An API-format graph is an object of nodes by id, not {type(data).__name__}."
            )
        if isinstance(data.get("nodes"), list):
            raise InputError(
                "This is a UI workflow (it has 'nodes' and 'links'), not an API-format graph: "
                "export it from ComfyUI with 'Save (API)'."
            )
        graph = cls(schemas)
        for node_id, entry in data.items():
            where = f"Node {node_id!r}"
            if not isinstance(node_id, str) or not node_id:
                raise InputError(f"{where}: node ids must be non-empty strings.")
            if not isinstance(entry, Mapping):
                raise InputError(f"{where} must be an object, not {type(entry).__name__}.")
            class_type, inputs, meta = (
                entry.get("class_type"),
                entry.get("inputs"),
                entry.get("_meta"),
            )
            if not isinstance(class_type, str) or not class_type:
                raise InputError(f"{where} has no 'class_type' string.")
            if not isinstance(inputs, Mapping):
                raise InputError(f"{where} ({class_type}) has no 'inputs' object.")
            if meta is not None and not isinstance(meta, Mapping):
                raise InputError(f"{where} ({class_type}): '_meta' must be an object.")
            title = (meta or {}).get("title")
            if title is not None and not isinstance(title, str):
                raise InputError(f"{where} ({class_type}): '_meta.title' must be a string.")
            node_inputs = {str(k): _from_api_value(v) for k, v in inputs.items()}
            graph._add(Node(node_id, class_type, node_inputs, title or None))
        return graph

    def to_json(self, indent: int | None = 2) -> str:
        """The API-format graph as JSON text."""
        return json.dumps(self.to_api(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes, *, schemas: NodeSchemas | None = None) -> Graph:
        """Read an API-format graph from JSON text. Raises InputError if it is not one."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"Not valid JSON: {exc}") from exc
        return cls.from_api(data, schemas=schemas)

    # -- validation --------------------------------------------------------------------

    def problems(
        self, schemas: NodeSchemas | None = None, *, check_files: bool = False
    ) -> list[NodeError]:
        """Every problem ComfyUI would reject the graph for, checked offline.

        ``schemas`` defaults to the graph's own. With ``check_files=False`` file-name
        inputs (models, input images) only need a safe relative path, because the
        schemas' file lists depend on the machine; pass True with schemas fetched from
        the server that will run the graph.
        """
        return find_problems(
            self.to_api(), schemas if schemas is not None else self.schemas, check_files
        )

    def validate(self, schemas: NodeSchemas | None = None, *, check_files: bool = False) -> None:
        """Raise GraphValidationError listing every problem (see :meth:`problems`)."""
        errors = self.problems(schemas, check_files=check_files)
        if errors:
            raise GraphValidationError(errors)

    def copy(self) -> Graph:
        """An independent copy: editing either graph's nodes leaves the other unchanged."""
        new = Graph(self.schemas)
        for node in self._nodes.values():
            new._add(Node(node.id, node.class_type, copy.deepcopy(node.inputs), node.title))
        return new


def _from_api_value(value: Any) -> Any:
    """``[node_id, index]`` becomes an Output; anything else is copied as is."""
    return Output(value[0], value[1]) if is_link(value) else copy.deepcopy(value)
