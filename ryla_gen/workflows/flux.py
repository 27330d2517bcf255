"""FLUX.1 [dev] and [schnell] text-to-image, as in ComfyUI's own Flux templates."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from ryla_gen.graph import Graph
from ryla_gen.models import CLIP_L, FLUX_AE, T5XXL_FP16, ModelFile

from ._base import Between, check_filename, model_file
from ._common import (
    BatchSize,
    CommonFields,
    FluxSize,
    Seed,
    Steps,
    loras_field,
    sample_flow_model,
    sampler_field,
    scheduler_field,
    seed_field,
)
from ._lora import LoRA, apply_loras, lora_models, with_triggers

__all__ = ["FluxDev", "FluxSchnell", "WeightDtype"]

WeightDtype = Literal["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]
"""How UNETLoader stores the diffusion model's weights on the GPU."""

_UNET_SUFFIXES = (".safetensors", ".sft")


class _Flux(CommonFields):
    """The graph shared by Flux Dev and Schnell (the subclasses declare the fields)."""

    if TYPE_CHECKING:
        prompt: str
        width: int
        height: int
        steps: int
        seed: int | None
        sampler: str
        scheduler: str
        batch_size: int
        weight_dtype: WeightDtype
        unet_name: str
        loras: list[LoRA]
        filename_prefix: str

    @field_validator("unet_name", check_fields=False)
    @classmethod
    def _unet_ok(cls, v: str) -> str:
        return check_filename(v, "unet_name", _UNET_SUFFIXES)

    def _guidance(self) -> float | None:
        return None

    def to_graph(self) -> Graph:
        """UNETLoader + DualCLIPLoader(t5xxl, clip_l, flux) + VAELoader(ae) -> KSampler(cfg 1)."""
        g = Graph()
        unet = g.node("UNETLoader", unet_name=self.unet_name, weight_dtype=self.weight_dtype)
        clip_loader = g.node(
            "DualCLIPLoader",
            clip_name1=T5XXL_FP16.filename,
            clip_name2=CLIP_L.filename,
            type="flux",
        )
        vae = g.node("VAELoader", vae_name=FLUX_AE.filename)
        model, clip = apply_loras(g, unet[0], clip_loader[0], self.loras, clip_always=False)
        text = g.node(
            "CLIPTextEncode",
            title="Positive prompt",
            text=with_triggers(self.prompt, self.loras),
            clip=clip,
        )
        positive = text[0]
        guidance = self._guidance()
        if guidance is not None:
            positive = g.node("FluxGuidance", conditioning=positive, guidance=guidance)[0]
        sample_flow_model(self, g, model=model, text=text[0], positive=positive, vae=vae[0])
        return g

    def required_models(self) -> list[ModelFile]:
        """The diffusion model, T5-XXL, CLIP-L, the Flux VAE and any LoRAs."""
        return [
            model_file("diffusion_models", self.unet_name, "Flux diffusion model"),
            T5XXL_FP16,
            CLIP_L,
            FLUX_AE,
            *lora_models(self.loras),
        ]


class FluxDev(_Flux):
    """FLUX.1 [dev]: the canonical ComfyUI graph (guidance-distilled, so cfg stays 1.0).

    The prompt goes through ``FluxGuidance``; the negative side is the prompt's
    conditioning zeroed out (``ConditioningZeroOut``), as in ComfyUI's Flux Dev template:
    Flux Dev has no negative prompt.
    """

    name: ClassVar[str] = "flux-dev"

    prompt: str = Field(description="What to draw (at most 10,000 characters).")
    width: FluxSize = Field(
        default=1024, description="Image width in pixels: a multiple of 16, 256 to 2048."
    )
    height: FluxSize = Field(
        default=1024, description="Image height in pixels: a multiple of 16, 256 to 2048."
    )
    steps: Steps = Field(default=20, description="Sampling steps, 1 to 150 (20-30 is typical).")
    guidance: Annotated[float, Between(0.0, 30.0)] = Field(
        default=3.5,
        description="Flux distilled guidance (FluxGuidance), 0 to 30; 3.5 is the usual value.",
    )
    seed: Seed = seed_field()
    sampler: str = sampler_field("euler")
    scheduler: str = scheduler_field("simple")
    batch_size: BatchSize = Field(default=1, description="Images per run, 1 to 8.")
    weight_dtype: WeightDtype = Field(
        default="default",
        description=(
            "Diffusion model weight format on the GPU: 'default' (bf16) or an fp8 variant, "
            "which halves memory (~12 GB) at a small quality cost."
        ),
    )
    unet_name: str = Field(
        default="flux1-dev.safetensors",
        description=(
            "Diffusion model file in models/diffusion_models; swap in a fine-tune of Flux Dev "
            "(a plain file name)."
        ),
    )
    loras: list[LoRA] = loras_field()
    filename_prefix: str = Field(default="flux_dev", description="Prefix of the saved image files.")

    def _guidance(self) -> float | None:
        return self.guidance


class FluxSchnell(_Flux):
    """FLUX.1 [schnell]: the step-distilled Flux, 1-4 steps, no guidance, cfg 1.0."""

    name: ClassVar[str] = "flux-schnell"

    prompt: str = Field(description="What to draw (at most 10,000 characters).")
    width: FluxSize = Field(
        default=1024, description="Image width in pixels: a multiple of 16, 256 to 2048."
    )
    height: FluxSize = Field(
        default=1024, description="Image height in pixels: a multiple of 16, 256 to 2048."
    )
    steps: Steps = Field(
        default=4, description="Sampling steps, 1 to 150 (Schnell is made for 1-4)."
    )
    seed: Seed = seed_field()
    sampler: str = sampler_field("euler")
    scheduler: str = scheduler_field("simple")
    batch_size: BatchSize = Field(default=1, description="Images per run, 1 to 8.")
    weight_dtype: WeightDtype = Field(
        default="default",
        description=(
            "Diffusion model weight format on the GPU: 'default' (bf16) or an fp8 variant, "
            "which halves memory (~12 GB) at a small quality cost."
        ),
    )
    unet_name: str = Field(
        default="flux1-schnell.safetensors",
        description="Diffusion model file in models/diffusion_models (a plain file name).",
    )
    loras: list[LoRA] = loras_field()
    filename_prefix: str = Field(
        default="flux_schnell", description="Prefix of the saved image files."
    )
