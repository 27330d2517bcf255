"""InstantID identity-preserving SDXL workflows (cubiq/ComfyUI_InstantID nodes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ryla_gen.graph import Graph, Output
from ryla_gen.models import ANTELOPEV2, INSTANTID_ADAPTER, INSTANTID_CONTROLNET, ModelFile

from ._base import MAX_SEED, Between, check_filename, check_prompt, model_file
from ._common import (
    BatchSize,
    CommonFields,
    SdxlSize,
    Seed,
    Steps,
    loras_field,
    sampler_field,
    scheduler_field,
    seed_field,
)
from ._images import InputImage
from ._lora import LoRA, apply_loras, lora_models, with_triggers

__all__ = [
    "BASIC_NOISE",
    "DEFAULT_NEGATIVE",
    "MAX_VIEWS",
    "CharacterSheet",
    "CombineEmbeds",
    "FaceProvider",
    "InstantID",
]

DEFAULT_NEGATIVE = "blurry, deformed, glitch, noisy, watermark, text, lowres"
"""The default negative prompt of the InstantID workflows."""

BASIC_NOISE = 0.35
"""The noise ``ApplyInstantID`` injects into the negative embeds (fixed in that node)."""

FaceProvider = Literal["CPU", "CUDA", "ROCM", "CoreML"]
"""onnxruntime execution provider for the insightface face analysis."""
CombineEmbeds = Literal["average", "norm average", "concat"]
"""How ApplyInstantIDAdvanced combines several face embeddings."""

Unit = Annotated[float, Between(0.0, 1.0)]

MAX_VIEWS = 8
"""The most views one character sheet renders."""
MAX_IP_WEIGHT = 3.0
"""ApplyInstantIDAdvanced's largest ip_weight."""


@dataclass(frozen=True)
class _Shared:
    model: Output
    clip: Output
    vae: Output
    instantid: Output
    faceanalysis: Output
    control_net: Output
    face: Output
    pose: Output | None


class _InstantIDBase(CommonFields):
    """Loaders and the apply step shared by ``InstantID`` and ``CharacterSheet``."""

    if TYPE_CHECKING:
        face_image: InputImage
        negative_prompt: str
        checkpoint: str
        weight: float
        start_at: float
        end_at: float
        ip_weight: float | None
        cn_strength: float | None
        noise: float
        combine_embeds: CombineEmbeds
        provider: FaceProvider
        width: int
        height: int
        steps: int
        cfg: float
        sampler: str
        scheduler: str
        seed: int | None
        loras: list[LoRA]
        filename_prefix: str

    @field_validator("checkpoint", check_fields=False)
    @classmethod
    def _checkpoint_ok(cls, v: str) -> str:
        return check_filename(v, "checkpoint", (".safetensors", ".ckpt"))

    @model_validator(mode="after")
    def _consistent(self) -> Any:
        if self.end_at < self.start_at:
            raise PydanticCustomError(
                "range_order",
                "end_at ({end}) must not be smaller than start_at ({start})",
                {"end": self.end_at, "start": self.start_at},
            )
        if self.advanced and self.ip_weight is None and self.weight > MAX_IP_WEIGHT:
            # ApplyInstantIDAdvanced caps ip_weight at 3; the basic node has no such cap.
            raise PydanticCustomError(
                "out_of_range",
                "ip_weight defaults to weight ({weight}), but with the advanced settings "
                "(ip_weight, cn_strength, noise, combine_embeds) it must be between 0 and "
                "{max}; set ip_weight explicitly or lower weight",
                {"weight": self.weight, "max": MAX_IP_WEIGHT},
            )
        return self

    @property
    def advanced(self) -> bool:
        """True when the graph needs ``ApplyInstantIDAdvanced`` (a setting the basic node lacks)."""
        return (
            self.ip_weight is not None
            or self.cn_strength is not None
            or self.noise != BASIC_NOISE
            or self.combine_embeds != "average"
        )

    def _pose(self) -> InputImage | None:
        return None

    def _shared(self, g: Graph) -> _Shared:
        ckpt = g.node("CheckpointLoaderSimple", ckpt_name=self.checkpoint)
        model, clip = apply_loras(g, ckpt[0], ckpt[1], self.loras, clip_always=True)
        instantid = g.node("InstantIDModelLoader", instantid_file=INSTANTID_ADAPTER.filename)
        face_analysis = g.node("InstantIDFaceAnalysis", provider=self.provider)
        control_net = g.node("ControlNetLoader", control_net_name=INSTANTID_CONTROLNET.filename)
        face = g.node("LoadImage", title="Face reference", image=self.face_image.name)
        pose_out: Output | None = None
        pose = self._pose()
        if pose is not None:
            if pose.name == self.face_image.name:
                pose_out = face[0]
            else:
                pose_out = g.node("LoadImage", title="Pose reference", image=pose.name)[0]
        return _Shared(
            model=model,
            clip=clip,
            vae=ckpt[2],
            instantid=instantid[0],
            faceanalysis=face_analysis[0],
            control_net=control_net[0],
            face=face[0],
            pose=pose_out,
        )

    def _apply(
        self, g: Graph, s: _Shared, positive: Output, negative: Output
    ) -> tuple[Output, Output, Output]:
        inputs: dict[str, Any] = {
            "instantid": s.instantid,
            "insightface": s.faceanalysis,
            "control_net": s.control_net,
            "image": s.face,
            "model": s.model,
            "positive": positive,
            "negative": negative,
            "start_at": self.start_at,
            "end_at": self.end_at,
        }
        if s.pose is not None:
            inputs["image_kps"] = s.pose
        if self.advanced:
            inputs.update(
                ip_weight=self.weight if self.ip_weight is None else self.ip_weight,
                cn_strength=self.weight if self.cn_strength is None else self.cn_strength,
                noise=self.noise,
                combine_embeds=self.combine_embeds,
            )
            node = g.node("ApplyInstantIDAdvanced", **inputs)
        else:
            inputs["weight"] = self.weight
            node = g.node("ApplyInstantID", **inputs)
        return node[0], node[1], node[2]

    def _sample(
        self,
        g: Graph,
        s: _Shared,
        model: Output,
        positive: Output,
        negative: Output,
        latent: Output,
        *,
        seed: int,
        prefix: str,
    ) -> None:
        sampler = g.node(
            "KSampler",
            model=model,
            positive=positive,
            negative=negative,
            latent_image=latent,
            seed=seed,
            steps=self.steps,
            cfg=self.cfg,
            sampler_name=self.sampler,
            scheduler=self.scheduler,
            denoise=1.0,
        )
        decoded = g.node("VAEDecode", samples=sampler[0], vae=s.vae)
        g.node("SaveImage", images=decoded[0], filename_prefix=prefix)

    def required_models(self) -> list[ModelFile]:
        """The SDXL checkpoint, InstantID adapter and ControlNet, antelopev2, any LoRAs."""
        return [
            model_file("checkpoints", self.checkpoint, "SDXL checkpoint"),
            INSTANTID_ADAPTER,
            INSTANTID_CONTROLNET,
            *ANTELOPEV2,
            *lora_models(self.loras),
        ]


# Field declarations shared (by copy) between the two classes below.
_DESC_FACE = (
    "Reference photo of the face to keep: a path (Python only), bytes, a PIL image, or a "
    "base64 / data: URL. One clearly visible face works best."
)


class InstantID(_InstantIDBase):
    """One SDXL image of the person in ``face_image``, via InstantID.

    The graph follows ComfyUI_InstantID's basic example: CheckpointLoaderSimple,
    InstantIDModelLoader, InstantIDFaceAnalysis, ControlNetLoader (IdentityNet),
    LoadImage -> ApplyInstantID -> KSampler. Setting ``ip_weight``, ``cn_strength``,
    ``noise`` (other than 0.35) or ``combine_embeds`` switches to ApplyInstantIDAdvanced;
    ``pose_image`` feeds its face keypoints (``image_kps``) to copy the head pose.
    """

    name: ClassVar[str] = "instantid"

    prompt: str = Field(description="What to draw (at most 10,000 characters).")
    face_image: InputImage = Field(description=_DESC_FACE)
    negative_prompt: str = Field(
        default=DEFAULT_NEGATIVE, description="What to avoid (may be empty)."
    )
    width: SdxlSize = Field(
        default=1016,
        description="Image width, a multiple of 8 in 256..2048 (InstantID likes 1016, not 1024).",
    )
    height: SdxlSize = Field(
        default=1016, description="Image height, a multiple of 8 in 256..2048."
    )
    steps: Steps = Field(default=30, description="Sampling steps, 1 to 150.")
    cfg: Annotated[float, Between(0.0, 30.0)] = Field(
        default=4.5, description="Classifier-free guidance, 0 to 30 (InstantID likes 4-5)."
    )
    seed: Seed = seed_field()
    sampler: str = sampler_field("ddpm")
    scheduler: str = scheduler_field("karras")
    batch_size: BatchSize = Field(default=1, description="Images per run, 1 to 8.")
    weight: Annotated[float, Between(0.0, 5.0)] = Field(
        default=0.8, description="Overall InstantID strength, 0 to 5 (0.8 is the default)."
    )
    start_at: Unit = Field(default=0.0, description="Fraction of sampling where InstantID starts.")
    end_at: Unit = Field(default=1.0, description="Fraction of sampling where InstantID stops.")
    ip_weight: Annotated[float | None, Between(0.0, MAX_IP_WEIGHT)] = Field(
        default=None,
        description="Advanced: face-embedding (IP-Adapter) weight, 0 to 3; default `weight`.",
    )
    cn_strength: Annotated[float | None, Between(0.0, 10.0)] = Field(
        default=None,
        description="Advanced: IdentityNet ControlNet strength, 0 to 10; default `weight`.",
    )
    noise: Unit = Field(
        default=BASIC_NOISE,
        description="Advanced: noise mixed into the negative face embeds, 0 to 1 (0.35 built in).",
    )
    combine_embeds: CombineEmbeds = Field(
        default="average", description="Advanced: how several face embeddings are combined."
    )
    pose_image: InputImage | None = Field(
        default=None,
        description="Optional image whose face keypoints set the head pose (image_kps).",
    )
    provider: FaceProvider = Field(
        default="CUDA", description="onnxruntime provider for face analysis (CUDA on GPUs)."
    )
    checkpoint: str = Field(
        default="sd_xl_base_1.0.safetensors",
        description="SDXL checkpoint in models/checkpoints (a plain file name).",
    )
    loras: list[LoRA] = loras_field()
    filename_prefix: str = Field(
        default="instantid", description="Prefix of the saved image files."
    )

    def _pose(self) -> InputImage | None:
        return self.pose_image

    def to_graph(self) -> Graph:
        """Shared loaders, prompt encodes, ApplyInstantID(Advanced), KSampler, decode, save."""
        g = Graph()
        s = self._shared(g)
        pos = g.node(
            "CLIPTextEncode",
            title="Positive prompt",
            text=with_triggers(self.prompt, self.loras),
            clip=s.clip,
        )
        neg = g.node(
            "CLIPTextEncode", title="Negative prompt", text=self.negative_prompt, clip=s.clip
        )
        latent = g.node(
            "EmptyLatentImage", width=self.width, height=self.height, batch_size=self.batch_size
        )
        model, positive, negative = self._apply(g, s, pos[0], neg[0])
        self._sample(
            g,
            s,
            model,
            positive,
            negative,
            latent[0],
            seed=self._seed(),
            prefix=self.filename_prefix,
        )
        return g


class CharacterSheet(_InstantIDBase):
    """Several views of one identity in one graph (e.g. front, profile, full body).

    The checkpoint, LoRAs, InstantID model, face analysis, ControlNet and the face image
    are loaded once; each view gets its own prompt, ApplyInstantID, KSampler (seed
    ``seed + i``), decode and SaveImage (``<filename_prefix>_<i>``).
    """

    name: ClassVar[str] = "character-sheet"

    face_image: InputImage = Field(description=_DESC_FACE)
    views: list[str] = Field(
        description=f"One prompt per view, 1 to {MAX_VIEWS}; view i is saved as <prefix>_<i>.",
        json_schema_extra={"minItems": 1, "maxItems": MAX_VIEWS},
    )
    negative_prompt: str = Field(
        default=DEFAULT_NEGATIVE, description="What to avoid in every view (may be empty)."
    )
    width: SdxlSize = Field(default=1016, description="Image width, a multiple of 8 in 256..2048.")
    height: SdxlSize = Field(
        default=1016, description="Image height, a multiple of 8 in 256..2048."
    )
    steps: Steps = Field(default=30, description="Sampling steps per view, 1 to 150.")
    cfg: Annotated[float, Between(0.0, 30.0)] = Field(
        default=4.5, description="Classifier-free guidance, 0 to 30."
    )
    seed: Seed = seed_field()
    sampler: str = sampler_field("ddpm")
    scheduler: str = scheduler_field("karras")
    weight: Annotated[float, Between(0.0, 5.0)] = Field(
        default=0.8, description="Overall InstantID strength, 0 to 5."
    )
    start_at: Unit = Field(default=0.0, description="Fraction of sampling where InstantID starts.")
    end_at: Unit = Field(default=1.0, description="Fraction of sampling where InstantID stops.")
    ip_weight: Annotated[float | None, Between(0.0, MAX_IP_WEIGHT)] = Field(
        default=None, description="Advanced: face-embedding weight, 0 to 3; default `weight`."
    )
    cn_strength: Annotated[float | None, Between(0.0, 10.0)] = Field(
        default=None, description="Advanced: ControlNet strength, 0 to 10; default `weight`."
    )
    noise: Unit = Field(
        default=BASIC_NOISE, description="Advanced: negative-embed noise, 0 to 1 (0.35 built in)."
    )
    combine_embeds: CombineEmbeds = Field(
        default="average", description="Advanced: how several face embeddings are combined."
    )
    provider: FaceProvider = Field(
        default="CUDA", description="onnxruntime provider for face analysis."
    )
    checkpoint: str = Field(
        default="sd_xl_base_1.0.safetensors",
        description="SDXL checkpoint in models/checkpoints (a plain file name).",
    )
    loras: list[LoRA] = loras_field()
    filename_prefix: str = Field(
        default="character_sheet", description="Prefix of the saved files; view i adds _<i>."
    )

    @field_validator("views", mode="after")
    @classmethod
    def _views_ok(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if not 1 <= len(v) <= MAX_VIEWS:
            raise PydanticCustomError(
                "views_count",
                "views must hold 1 to {max} prompts, got {n}",
                {"max": MAX_VIEWS, "n": len(v)},
            )
        return [check_prompt(p, f"views[{i}]") for i, p in enumerate(v)]

    @model_validator(mode="after")
    def _seed_fits(self) -> Any:
        if self.seed is not None and self.seed + len(self.views) - 1 > MAX_SEED:
            raise PydanticCustomError(
                "out_of_range",
                "seed must be at most {max} for {n} views (view i uses seed + i), got {seed}",
                {"max": MAX_SEED - len(self.views) + 1, "n": len(self.views), "seed": self.seed},
            )
        return self

    def to_graph(self) -> Graph:
        """Shared loaders; per view: encode, ApplyInstantID, KSampler, decode, save."""
        g = Graph()
        s = self._shared(g)
        neg = g.node(
            "CLIPTextEncode", title="Negative prompt", text=self.negative_prompt, clip=s.clip
        )
        latent = g.node("EmptyLatentImage", width=self.width, height=self.height, batch_size=1)
        for i, view in enumerate(self.views):
            pos = g.node(
                "CLIPTextEncode",
                title=f"View {i} prompt",
                text=with_triggers(view, self.loras),
                clip=s.clip,
            )
            model, positive, negative = self._apply(g, s, pos[0], neg[0])
            self._sample(
                g,
                s,
                model,
                positive,
                negative,
                latent[0],
                seed=self._seed(i),
                prefix=f"{self.filename_prefix}_{i}",
            )
        return g
