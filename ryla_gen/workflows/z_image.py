"""Z-Image-Turbo text-to-image, as in ComfyUI's own Z-Image-Turbo template."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, field_validator

from ryla_gen.graph import Graph
from ryla_gen.models import FLUX_AE, QWEN_3_4B, ModelFile

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
from .flux import WeightDtype

__all__ = ["ZImageTurbo"]


class ZImageTurbo(CommonFields):
    """Z-Image-Turbo (6B, distilled): few steps, cfg 1.0, no negative prompt.

    The graph follows ComfyUI's template: UNETLoader, CLIPLoader(qwen_3_4b, lumina2),
    the Flux VAE, ``ModelSamplingAuraFlow(shift=3)`` on the model, and the prompt's
    conditioning zeroed out (``ConditioningZeroOut``) as the negative.
    """

    name: ClassVar[str] = "z-image-turbo"

    prompt: str = Field(description="What to draw (at most 10,000 characters).")
    width: FluxSize = Field(
        default=1024, description="Image width in pixels: a multiple of 16, 256 to 2048."
    )
    height: FluxSize = Field(
        default=1024, description="Image height in pixels: a multiple of 16, 256 to 2048."
    )
    steps: Steps = Field(default=9, description="Sampling steps, 1 to 150 (8-9 is typical).")
    shift: Annotated[float, Between(0.0, 20.0)] = Field(
        default=3.0,
        description="ModelSamplingAuraFlow shift, 0 to 20; ComfyUI's template uses 3.",
    )
    seed: Seed = seed_field()
    sampler: str = sampler_field("euler")
    scheduler: str = scheduler_field("simple")
    batch_size: BatchSize = Field(default=1, description="Images per run, 1 to 8.")
    weight_dtype: WeightDtype = Field(
        default="default",
        description="Diffusion model weight format on the GPU: 'default' (bf16) or an fp8 variant.",
    )
    unet_name: str = Field(
        default="z_image_turbo_bf16.safetensors",
        description="Diffusion model file in models/diffusion_models (a plain file name).",
    )
    loras: list[LoRA] = loras_field()
    filename_prefix: str = Field(
        default="z_image_turbo", description="Prefix of the saved image files."
    )

    @field_validator("unet_name")
    @classmethod
    def _unet_ok(cls, v: str) -> str:
        return check_filename(v, "unet_name", (".safetensors", ".sft"))

    def to_graph(self) -> Graph:
        """UNETLoader + CLIPLoader(lumina2) + VAELoader -> ModelSamplingAuraFlow -> KSampler."""
        g = Graph()
        unet = g.node("UNETLoader", unet_name=self.unet_name, weight_dtype=self.weight_dtype)
        clip_loader = g.node("CLIPLoader", clip_name=QWEN_3_4B.filename, type="lumina2")
        vae = g.node("VAELoader", vae_name=FLUX_AE.filename)
        model, clip = apply_loras(g, unet[0], clip_loader[0], self.loras, clip_always=False)
        sampling = g.node("ModelSamplingAuraFlow", model=model, shift=self.shift)
        text = g.node(
            "CLIPTextEncode",
            title="Positive prompt",
            text=with_triggers(self.prompt, self.loras),
            clip=clip,
        )
        sample_flow_model(self, g, model=sampling[0], text=text[0], positive=text[0], vae=vae[0])
        return g

    def required_models(self) -> list[ModelFile]:
        """The diffusion model, the Qwen3-4B text encoder, the Flux VAE and any LoRAs."""
        return [
            model_file("diffusion_models", self.unet_name, "Z-Image diffusion model"),
            QWEN_3_4B,
            FLUX_AE,
            *lora_models(self.loras),
        ]
