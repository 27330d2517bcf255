"""Fields and checks shared by the text-to-image workflows."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator

from ryla_gen.graph import Graph, Output

from ._base import (
    MAX_SEED,
    SAMPLERS,
    SCHEDULERS,
    Between,
    Workflow,
    check_choice,
    check_filename_prefix,
    check_prompt,
    random_seed,
)
from ._lora import MAX_LORAS

__all__ = [
    "BatchSize",
    "CommonFields",
    "FluxSize",
    "SdxlSize",
    "Seed",
    "Steps",
    "loras_field",
    "sample_flow_model",
    "sampler_field",
    "scheduler_field",
    "seed_field",
]

FluxSize = Annotated[int, Between(256, 2048, 16)]
"""Flux / Z-Image width and height: a multiple of 16 in 256..2048."""
SdxlSize = Annotated[int, Between(256, 2048, 8)]
"""SDXL width and height: a multiple of 8 in 256..2048."""
Steps = Annotated[int, Between(1, 150)]
BatchSize = Annotated[int, Between(1, 8)]
Seed = Annotated[int | None, Between(0, MAX_SEED)]


def seed_field() -> Any:
    """The ``seed`` field: None picks a random seed when the workflow is built."""
    return Field(
        default=None,
        validate_default=True,
        description=(
            f"Noise seed, 0 to {MAX_SEED}. Leave empty for a random one; the chosen seed "
            "is reported back so the image can be reproduced."
        ),
    )


def sampler_field(default: str) -> Any:
    """The ``sampler`` field, with the KSampler choices as its JSON-schema enum."""
    return Field(
        default=default,
        description="KSampler sampler name (one of ComfyUI's samplers).",
        json_schema_extra={"enum": list(SAMPLERS)},
    )


def scheduler_field(default: str) -> Any:
    """The ``scheduler`` field, with the KSampler choices as its JSON-schema enum."""
    return Field(
        default=default,
        description="KSampler noise schedule.",
        json_schema_extra={"enum": list(SCHEDULERS)},
    )


def loras_field() -> Any:
    """The ``loras`` field."""
    return Field(
        default_factory=list,
        max_length=MAX_LORAS,
        description=f"LoRAs to stack on the model, applied in this order (at most {MAX_LORAS}).",
    )


class CommonFields(Workflow):
    """Checks every generation workflow shares (its subclasses declare the fields)."""

    @field_validator("seed", mode="after", check_fields=False)
    @classmethod
    def _seed_or_random(cls, v: int | None) -> int:
        return random_seed() if v is None else v

    @field_validator("sampler", mode="after", check_fields=False)
    @classmethod
    def _sampler_ok(cls, v: str, info: ValidationInfo) -> str:
        return check_choice(v, info.field_name or "sampler", SAMPLERS)

    @field_validator("scheduler", mode="after", check_fields=False)
    @classmethod
    def _scheduler_ok(cls, v: str, info: ValidationInfo) -> str:
        return check_choice(v, info.field_name or "scheduler", SCHEDULERS)

    @field_validator("prompt", mode="after", check_fields=False)
    @classmethod
    def _prompt_ok(cls, v: str, info: ValidationInfo) -> str:
        return check_prompt(v, info.field_name or "prompt")

    @field_validator("negative_prompt", mode="after", check_fields=False)
    @classmethod
    def _negative_ok(cls, v: str, info: ValidationInfo) -> str:
        return check_prompt(v, info.field_name or "negative_prompt", allow_empty=True)

    @field_validator("filename_prefix", mode="after", check_fields=False)
    @classmethod
    def _prefix_ok(cls, v: str, info: ValidationInfo) -> str:
        return check_filename_prefix(v, info.field_name or "filename_prefix")


def sample_flow_model(
    wf: Any, g: Graph, *, model: Output, text: Output, positive: Output, vae: Output
) -> None:
    """The tail every flow-matching text-to-image graph here shares (Flux, Z-Image).

    The negative is the prompt's conditioning zeroed out (ComfyUI's templates), the latent
    an ``EmptySD3LatentImage``, the sampler a ``KSampler`` at cfg 1.0, then VAEDecode and
    SaveImage. ``wf`` supplies size, batch, seed, steps, sampler, scheduler and prefix.
    """
    negative = g.node("ConditioningZeroOut", title="Negative (zeroed)", conditioning=text)
    latent = g.node(
        "EmptySD3LatentImage", width=wf.width, height=wf.height, batch_size=wf.batch_size
    )
    sampler = g.node(
        "KSampler",
        model=model,
        positive=positive,
        negative=negative[0],
        latent_image=latent[0],
        seed=wf._seed(),
        steps=wf.steps,
        cfg=1.0,
        sampler_name=wf.sampler,
        scheduler=wf.scheduler,
        denoise=1.0,
    )
    decoded = g.node("VAEDecode", samples=sampler[0], vae=vae)
    g.node("SaveImage", images=decoded[0], filename_prefix=wf.filename_prefix)
