"""Build, read and validate ComfyUI API-format graphs.

::

    from ryla_gen.graph import Graph

    g = Graph()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name="sd_xl_base_1.0.safetensors")
    pos = g.node("CLIPTextEncode", text="a cat", clip=ckpt.out("CLIP"))
    g.validate()            # raises GraphValidationError listing every problem
    prompt = g.to_api()     # the "prompt" of POST /prompt
"""

from ryla_gen.graph._graph import Graph, Node, Output
from ryla_gen.graph._schema import InputSpec, NodeSchema, NodeSchemas, OutputSpec
from ryla_gen.graph._validate import types_match

__all__ = [
    "Graph",
    "InputSpec",
    "Node",
    "NodeSchema",
    "NodeSchemas",
    "Output",
    "OutputSpec",
    "types_match",
]
