"""``LoRA``: one LoRA file to stack on a model, with its strength and trigger words."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ryla_gen.graph import Graph, Output
from ryla_gen.models import ModelFile

from ._base import Between, check_filename, check_prompt, model_file

__all__ = [
    "MAX_LORAS",
    "MAX_LORA_STRENGTH",
    "LoRA",
    "apply_loras",
    "lora_models",
    "with_triggers",
]

MAX_LORA_STRENGTH = 5.0
"""Strengths lie in ``-MAX_LORA_STRENGTH..MAX_LORA_STRENGTH`` (negative ones invert a LoRA)."""
MAX_LORAS = 10
"""The most LoRAs one workflow stacks."""

Strength = Annotated[float, Between(-MAX_LORA_STRENGTH, MAX_LORA_STRENGTH)]


class LoRA(BaseModel):
    """A LoRA from ComfyUI's ``models/loras`` folder, applied in the order given.

    With ``clip_strength`` unset, Flux and Z-Image patch only the diffusion model
    (``LoraLoaderModelOnly``); setting it patches the text encoder too (``LoraLoader``).
    SDXL workflows always use ``LoraLoader`` (``clip_strength`` defaults to ``strength``).
    ``trigger`` words are put in front of the prompt once, unless the prompt has them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(
        description="File name in models/loras, e.g. 'my_character.safetensors' (no folders)."
    )
    strength: Strength = Field(
        default=1.0,
        description=(
            "How strongly the LoRA changes the diffusion model "
            f"(-{MAX_LORA_STRENGTH:g} to {MAX_LORA_STRENGTH:g})."
        ),
    )
    clip_strength: Annotated[float | None, Between(-MAX_LORA_STRENGTH, MAX_LORA_STRENGTH)] = Field(
        default=None,
        description=(
            f"How strongly it changes the text encoder (-{MAX_LORA_STRENGTH:g} to "
            f"{MAX_LORA_STRENGTH:g}). None: Flux/Z-Image leave the text "
            "encoder alone, SDXL uses `strength`."
        ),
    )
    trigger: str | None = Field(
        default=None,
        description="Trigger words put in front of the prompt, e.g. 'ohwx woman'.",
    )

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str, info: ValidationInfo) -> str:
        return check_filename(v, "name", (".safetensors",))

    @field_validator("trigger")
    @classmethod
    def _trigger_ok(cls, v: str | None) -> str | None:
        if v is None:
            return None
        return check_prompt(v, "trigger", max_chars=500).replace("\n", " ")


def with_triggers(prompt: str, loras: Sequence[LoRA]) -> str:
    """``prompt`` with the LoRAs' trigger words in front, each once.

    A trigger the prompt already contains (as whole words, any case) is not added again,
    and one shared by several LoRAs is added once: ``"ohwx woman, <prompt>"``.
    """
    triggers: list[str] = []
    for lora in loras:
        t = lora.trigger
        if not t or any(t.casefold() == x.casefold() for x in triggers):
            continue
        if re.search(rf"(?<!\w){re.escape(t)}(?!\w)", prompt, flags=re.IGNORECASE):
            continue
        triggers.append(t)
    if not triggers:
        return prompt
    return ", ".join([*triggers, prompt])


def apply_loras(
    g: Graph,
    model: Output,
    clip: Output,
    loras: Sequence[LoRA],
    *,
    clip_always: bool,
) -> tuple[Output, Output]:
    """Chain one loader node per LoRA, in order; return the final (model, clip) outputs.

    ``clip_always`` (SDXL) uses ``LoraLoader`` for every LoRA; otherwise a LoRA without
    ``clip_strength`` gets ``LoraLoaderModelOnly`` and leaves ``clip`` as it was.
    """
    for lora in loras:
        if clip_always or lora.clip_strength is not None:
            clip_strength = lora.strength if lora.clip_strength is None else lora.clip_strength
            node = g.node(
                "LoraLoader",
                model=model,
                clip=clip,
                lora_name=lora.name,
                strength_model=lora.strength,
                strength_clip=clip_strength,
            )
            model, clip = node[0], node[1]
        else:
            node = g.node(
                "LoraLoaderModelOnly",
                model=model,
                lora_name=lora.name,
                strength_model=lora.strength,
            )
            model = node[0]
    return model, clip


def lora_models(loras: Sequence[LoRA]) -> list[ModelFile]:
    """``loras/<name>`` entries for the LoRAs, each once (no download source)."""
    seen: dict[str, ModelFile] = {}
    for lora in loras:
        if lora.name not in seen:
            seen[lora.name] = model_file("loras", lora.name, "LoRA")
    return list(seen.values())
