"""Offline validation of API-format graphs, following ComfyUI 0.3.75's ``validate_prompt``.

Differences from the server, all deliberate:

- every node is checked, not only those an output node depends on, and every problem is
  reported (the server stops at the first bad link of a chain);
- inputs the class does not have are reported (``unknown_input``; the server ignores
  them, which hides typos such as ``weigth``);
- STRING inputs need a str and BOOLEAN inputs a bool (the server calls ``str()`` /
  ``bool()`` on anything);
- file-name combos only need a safe relative path unless ``check_files`` is set, since the
  schemas' file lists depend on the machine;
- dependency cycles are reported here (``dependency_cycle``) rather than at run time.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ryla_gen.errors import NodeError
from ryla_gen.graph._schema import InputSpec, NodeSchema, NodeSchemas

__all__ = ["find_problems", "is_link", "types_match"]

Problem = tuple[str, str]
"""(ComfyUI error type, message)."""

_LIMIT = 10  # allowed values quoted in a message
_STRICT: dict[str, type] = {"STRING": str, "BOOLEAN": bool}  # the server would str()/bool() any


def find_problems(
    prompt: Mapping[str, Mapping[str, Any]], schemas: NodeSchemas, check_files: bool = False
) -> list[NodeError]:
    """Every problem in an API-format graph (``{id: {class_type, inputs}}``), in node order."""
    errors: list[NodeError] = []
    for node_id, node in prompt.items():
        class_type = node["class_type"]
        schema = schemas.get(class_type)
        if schema is None:
            message = (
                f"Unknown node type {class_type!r}{_did_you_mean(class_type, schemas)}. "
                "Install the custom node that provides it on the server (and validate with "
                "its schemas), or fix the name."
            )
            errors.append(NodeError(node_id, class_type, None, message, "missing_node_type"))
            continue
        for name, (kind, message) in _node_problems(
            schema, node["inputs"], prompt, schemas, check_files
        ):
            errors.append(NodeError(node_id, class_type, name, message, kind))
    errors += _cycles(prompt)
    classes = [schemas.get(node["class_type"]) for node in prompt.values()]
    if None not in classes and not any(s.output_node for s in classes if s):
        message = (
            "The graph has no output node, so ComfyUI would run nothing. "
            "Add one, e.g. SaveImage or PreviewImage."
        )
        errors.append(NodeError("", "", None, message, "prompt_no_outputs"))
    return errors


def is_link(value: Any) -> bool:
    """True for a well-formed link ``[node_id: str, output_index: int >= 0]``."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
        and value[1] >= 0
    )


def types_match(received: str, expected: str) -> bool:
    """ComfyUI's link rule: ``*`` matches anything; ``A,B`` unions match if they overlap."""
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return "*" in got or "*" in want or not got.isdisjoint(want)


def _node_problems(
    schema: NodeSchema,
    inputs: Mapping[str, Any],
    prompt: Mapping[str, Mapping[str, Any]],
    schemas: NodeSchemas,
    check_files: bool,
) -> Iterator[tuple[str, Problem]]:
    for name, spec in schema.inputs.items():
        if spec.category == "hidden":
            continue
        if name not in inputs:
            if spec.category == "required":
                yield (
                    name,
                    ("required_input_missing", f"Required input is missing. {_wanted(spec)}"),
                )
            continue
        value = inputs[name]
        if isinstance(value, list):
            problem = _check_link(spec, value, prompt, schemas)
        else:
            problem = _check_value(spec, value, check_files)
        if problem:
            yield name, problem
    settable = [n for n, s in schema.inputs.items() if s.category != "hidden"]
    for name in inputs:
        if name not in schema.inputs:
            message = (
                f"{schema.name} has no input {name!r}{_did_you_mean(name, settable)}; "
                f"ComfyUI would silently ignore it. Its inputs are: {', '.join(settable)}."
            )
            yield name, ("unknown_input", message)


def _check_link(
    spec: InputSpec,
    value: list[Any],
    prompt: Mapping[str, Mapping[str, Any]],
    schemas: NodeSchemas,
) -> Problem | None:
    if not is_link(value):
        return "bad_linked_input", (
            f"{value!r} is not a link: a link is [node_id, output_index], e.g. ['4', 0]. "
            "To pass a list as a value, wrap it as {'__value__': [...]}."
        )
    source_id, index = value
    if source_id not in prompt:
        return "bad_linked_input", f"It links to node {source_id!r}, which is not in the graph."
    source = schemas.get(prompt[source_id]["class_type"])
    if source is None:  # reported on that node as missing_node_type
        return None
    where = f"node {source_id} ({source.name})"
    if index >= len(source.outputs):
        return "bad_linked_input", (
            f"It links to output {index} of {where}, which has {len(source.outputs)} "
            f"output(s): {source.describe_outputs()}."
        )
    output = source.outputs[index]
    if types_match(output.type, spec.type):
        return None
    fits = [
        f"{i} ({o.name})" for i, o in enumerate(source.outputs) if types_match(o.type, spec.type)
    ]
    hint = (
        f"Output {' or '.join(fits)} of that node gives {spec.type}."
        if fits
        else f"Link it to a node that outputs {spec.type}."
    )
    return "return_type_mismatch", (
        f"It takes {spec.type} but is linked to output {index} ({output.name}, type "
        f"{output.type}) of {where}. {hint}"
    )


def _check_value(spec: InputSpec, value: Any, check_files: bool) -> Problem | None:
    if isinstance(value, dict) and "__value__" in value:
        value = value["__value__"]
    if spec.type in ("INT", "FLOAT"):
        try:  # ComfyUI converts with int() / float() and then checks the range
            number = int(value) if spec.type == "INT" else float(value)
        except (TypeError, ValueError, OverflowError):
            return "invalid_input_type", f"{value!r} is not valid here. {_wanted(spec)}"
        if not math.isfinite(number):  # NaN passes every range check and is not JSON
            return "invalid_input_type", f"{value!r} is not a finite number. {_wanted(spec)}"
        if spec.min is not None and number < spec.min:
            return "value_smaller_than_min", (
                f"Value {number} is smaller than the minimum {spec.min}. {_wanted(spec)}"
            )
        if spec.max is not None and number > spec.max:
            return "value_bigger_than_max", (
                f"Value {number} is bigger than the maximum {spec.max}. {_wanted(spec)}"
            )
    elif spec.type in _STRICT and not isinstance(value, _STRICT[spec.type]):
        return "invalid_input_type", f"{value!r} is a {type(value).__name__}. {_wanted(spec)}"
    elif spec.type == "COMBO":
        return _check_combo(spec, value, check_files)
    return None


def _check_combo(spec: InputSpec, value: Any, check_files: bool) -> Problem | None:
    if spec.is_file and not (check_files and spec.options is not None):
        reason = _unsafe_path(value)
        if reason is None:
            return None
        return "invalid_file_name", (
            f"{value!r} is not a usable file name: {reason}. Give the path relative to the "
            "server's model or input folder, with '/' between folders, e.g. "
            "'instantid/diffusion_pytorch_model.safetensors'."
        )
    options = spec.options or ()
    if value in options:
        return None
    hint = _did_you_mean(value, [o for o in options if isinstance(o, str)])
    if spec.is_file:
        return "value_not_in_list", (
            f"{value!r} is not on the server{hint}. Put the file in the server's folder for "
            f"{spec.name!r}, or use one it has: {_some(options)}."
        )
    return "value_not_in_list", f"{value!r} is not an allowed value{hint}. {_wanted(spec)}"


def _unsafe_path(value: Any) -> str | None:
    """Why ``value`` is not a safe relative file path, or None if it is one."""
    if not isinstance(value, str):
        return f"it is a {type(value).__name__}, not a string"
    if not value.strip():
        return "it is empty"
    if "\0" in value:
        return "it contains a NUL character"
    if "\\" in value:
        return "it contains a backslash"
    if value.startswith("/") or re.match(r"[A-Za-z]:", value):
        return "it is an absolute path"
    if ".." in value.split("/"):
        return "it has a '..' segment"
    return None


def _wanted(spec: InputSpec) -> str:
    """What ``spec`` accepts, as a sentence."""
    if spec.type == "COMBO":
        if spec.is_file:
            return "Give a file name the server has, relative to its folder."
        return f"Use one of: {_some(spec.options or ())}."
    if spec.type in ("INT", "FLOAT"):
        kind = "an integer" if spec.type == "INT" else "a number"
        if spec.min is not None and spec.max is not None:
            return f"Use {kind} from {spec.min} to {spec.max}."
        if spec.min is not None:
            return f"Use {kind} of at least {spec.min}."
        if spec.max is not None:
            return f"Use {kind} of at most {spec.max}."
        return f"Use {kind}."
    if spec.type == "STRING":
        return "Use a string."
    if spec.type == "BOOLEAN":
        return "Use true or false."
    return f"Link it to an output of type {spec.type}."


def _some(options: Iterable[Any]) -> str:
    """Up to ``_LIMIT`` options, quoted, and how many more there are."""
    items = list(options)
    if not items:
        return "(none)"
    shown = ", ".join(repr(o) for o in items[:_LIMIT])
    return shown + (f" and {len(items) - _LIMIT} more" if len(items) > _LIMIT else "")


def _did_you_mean(value: Any, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or ``""``."""
    if not isinstance(value, str):
        return ""
    pool = list(choices)
    same_case = [c for c in pool if c.lower() == value.lower()]
    close = same_case or difflib.get_close_matches(value, pool, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _cycles(prompt: Mapping[str, Mapping[str, Any]]) -> list[NodeError]:
    """One error per link that closes a dependency cycle, on the node holding that link."""
    needs = {
        node_id: [
            (name, value[0])
            for name, value in node["inputs"].items()
            if is_link(value) and value[0] in prompt
        ]
        for node_id, node in prompt.items()
    }
    errors: list[NodeError] = []
    done: set[str] = set()
    for start in prompt:
        if start in done:
            continue
        path = [start]  # path[i] needs path[i + 1]
        pending = [iter(needs[start])]
        while pending:
            for name, source in pending[-1]:
                if source in path:
                    loop = " -> ".join([*path[path.index(source) :], source])
                    message = (
                        f"Nodes {loop} form a dependency cycle (each needs the output of the "
                        "next), which ComfyUI cannot run. Remove one of these links."
                    )
                    node_id = path[-1]
                    class_type = prompt[node_id]["class_type"]
                    errors.append(NodeError(node_id, class_type, name, message, "dependency_cycle"))
                elif source not in done:
                    path.append(source)
                    pending.append(iter(needs[source]))
                    break
            else:
                done.add(path.pop())
                pending.pop()
    return errors
