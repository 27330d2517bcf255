"""GPU worker speed options that change the graph ComfyUI runs (opt-in; off by default).

The SDK always builds the stock graphs. A worker started with these options rewrites
each graph just before it is queued (``ComfyUIProvider(graph_transform=...)``), so clients
and their graphs stay the same whichever options a deployment picks:

=============================  ========  ==============================================
variable                       default   what
=============================  ========  ==============================================
``RYLA_GEN_LORA_MODE``         ``merge`` ``unmerged``: LoRAs applied at run time in
                                         fixed-size slots (ryla-gen's ComfyUI node)
                                         instead of merged into the weights
``RYLA_GEN_LORA_RANK``         ``64``    slot rank per layer (sum of one job's LoRA
                                         ranks on a layer; more falls back to merging)
``RYLA_GEN_COMPILE``           off       ``1``: ``torch.compile`` (inductor) the Flux
                                         diffusion model; pair with ``RYLA_GEN_WARMUP``
=============================  ========  ==============================================

What each one costs and buys (numbers: BENCHMARKS.md):

* ``unmerged`` LoRAs: changing the LoRA or its strength between jobs costs a GPU copy of
  the LoRA instead of a backup-and-merge of the 12 B weights. Images differ from stock
  merging at bfloat16 rounding level (the LoRA term is added to each layer's output rather
  than merged into its weight in float32); a job with LoRAs does ~3 % more matrix work.
* ``compile``: faster steps after a one-time compile of about a minute per process and
  image size. The worker's warm-up (``RYLA_GEN_WARMUP``) runs at 1024x1024 with compile on,
  so that minute is spent while the container starts, not on a user's request; other
  sizes compile on their first use. Only Flux graphs are compiled: their text conditioning
  has a fixed shape, so prompts do not trigger recompiles. With ``unmerged`` LoRAs the
  compiled model is shared by jobs with and without LoRAs (changing LoRAs never
  recompiles); stock merged LoRAs would replace the weight tensors and recompile.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ryla_gen.graph._validate import is_link

__all__ = ["COMFY_NODES_DIR", "WorkerTuning"]

COMFY_NODES_DIR = Path(__file__).resolve().parent / "comfy_nodes"
"""Folder to add to ComfyUI's ``custom_nodes`` search path (holds ``ryla_gen_nodes``)."""

_LORA_NODE = "LoraLoaderModelOnly"
_UNMERGED_LORA_NODE = "RylaLoraLoaderModelOnly"
_SLOTS_NODE = "RylaLoraSlots"
_TRUE = ("1", "true", "yes", "on", "inductor")
_FALSE = ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class WorkerTuning:
    """Which opt-in speed options a worker applies to every graph (none by default)."""

    lora_mode: Literal["merge", "unmerged"] = "merge"
    compile: bool = False
    lora_rank: int = 64

    def __post_init__(self) -> None:
        if self.lora_mode not in ("merge", "unmerged"):
            raise ValueError(
                f"RYLA_GEN_LORA_MODE must be 'merge' or 'unmerged', got {self.lora_mode!r}"
            )
        if self.compile and self.lora_mode != "unmerged":
            raise ValueError(
                "RYLA_GEN_COMPILE=1 needs RYLA_GEN_LORA_MODE=unmerged: a stock (merged) LoRA "
                "replaces the weight tensors, and the compiled model would then recompile "
                "(about a minute) on every change of LoRA, on users' requests"
            )
        if not 1 <= self.lora_rank <= 1024:
            raise ValueError(f"RYLA_GEN_LORA_RANK must be 1..1024, got {self.lora_rank}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerTuning:
        """The options from ``RYLA_GEN_LORA_MODE``, ``RYLA_GEN_LORA_RANK``, ``RYLA_GEN_COMPILE``."""
        env = os.environ if env is None else env
        mode = (env.get("RYLA_GEN_LORA_MODE") or "merge").strip().lower()
        raw_compile = (env.get("RYLA_GEN_COMPILE") or "").strip().lower()
        if raw_compile not in _TRUE + _FALSE:
            raise ValueError(f"RYLA_GEN_COMPILE must be 1 or 0, got {raw_compile!r}")
        raw_rank = (env.get("RYLA_GEN_LORA_RANK") or "64").strip()
        try:
            rank = int(raw_rank)
        except ValueError:
            raise ValueError(f"RYLA_GEN_LORA_RANK must be an integer, got {raw_rank!r}") from None
        return cls(
            lora_mode=mode,  # type: ignore[arg-type]  # checked in __post_init__
            compile=raw_compile in _TRUE,
            lora_rank=rank,
        )

    @property
    def active(self) -> bool:
        """Whether graphs are rewritten at all."""
        return self.lora_mode != "merge" or self.compile

    @property
    def needs_custom_nodes(self) -> bool:
        """Whether ComfyUI must load ryla-gen's nodes (:data:`COMFY_NODES_DIR`)."""
        return self.lora_mode == "unmerged"

    def env(self) -> dict[str, str]:
        """The worker variables that reproduce these options (for ``worker_env``)."""
        return {
            "RYLA_GEN_LORA_MODE": self.lora_mode,
            "RYLA_GEN_LORA_RANK": str(self.lora_rank),
            "RYLA_GEN_COMPILE": "1" if self.compile else "",
        }

    def comfyui_env(self) -> dict[str, str]:
        """Environment of the ComfyUI process these options need (read by ryla_gen_nodes)."""
        if not self.needs_custom_nodes:
            return {}
        return {
            "RYLA_GEN_LORA_RANK": str(self.lora_rank),
            # One compiled graph for jobs with and without LoRAs: no recompiles.
            "RYLA_GEN_LORA_STATIC": "1" if self.compile else "",
        }

    def apply(self, graph: Mapping[str, Any]) -> dict[str, Any]:
        """The graph as this worker runs it; the input is never modified.

        With ``unmerged`` LoRAs every ``LoraLoaderModelOnly`` becomes
        ``RylaLoraLoaderModelOnly`` (same inputs) and each ``UNETLoader`` gets a
        ``RylaLoraSlots`` node after it; with ``compile``, a ``TorchCompileModel`` follows
        the ``UNETLoader`` of Flux graphs, before any LoRA, so LoRA jobs share the
        compiled model.
        """
        out: dict[str, Any] = copy.deepcopy(dict(graph))
        if not self.active:
            return out
        if self.lora_mode == "unmerged":
            for node in out.values():
                if isinstance(node, dict) and node.get("class_type") == _LORA_NODE:
                    node["class_type"] = _UNMERGED_LORA_NODE
        compile_here = self.compile and _is_flux(out)
        for loader in [k for k, n in out.items() if _class(n) == "UNETLoader"]:
            inserted: list[tuple[str, dict[str, Any]]] = []
            source: list[Any] = [loader, 0]
            if self.lora_mode == "unmerged":
                inserted.append((f"ryla_slots_{loader}", {"class_type": _SLOTS_NODE, "inputs": {}}))
            if compile_here:
                inserted.append(
                    (
                        f"ryla_compile_{loader}",
                        {"class_type": "TorchCompileModel", "inputs": {"backend": "inductor"}},
                    )
                )
            if not inserted:
                continue
            new_ids = {node_id for node_id, _ in inserted}
            for node_id in new_ids & out.keys():
                raise ValueError(f"graph already has a node with id {node_id!r}")
            last = [inserted[-1][0], 0]
            for node_id, node in out.items():
                if node_id in new_ids or not isinstance(node, dict):
                    continue
                inputs = node.get("inputs")
                if not isinstance(inputs, dict):
                    continue
                for name, value in inputs.items():
                    if is_link(value) and value == source:
                        inputs[name] = list(last)
            for node_id, node in inserted:
                node["inputs"]["model"] = source
                out[node_id] = node
                source = [node_id, 0]
        return out


def _class(node: Any) -> Any:
    return node.get("class_type") if isinstance(node, dict) else None


def _is_flux(graph: Mapping[str, Any]) -> bool:
    """A Flux graph: its text encoders are loaded as Flux's (T5 padded to 256 tokens)."""
    for node in graph.values():
        if _class(node) == "DualCLIPLoader":
            inputs = node.get("inputs") or {}
            if inputs.get("type") == "flux":
                return True
    return False
