"""Typed image-generation requests that build ComfyUI API-format graphs.

>>> from ryla_gen.workflows import FluxDev, LoRA
>>> wf = FluxDev(prompt="a lighthouse at dusk", seed=7, loras=[LoRA(name="film.safetensors")])
>>> graph = wf.to_graph()          # ryla_gen.graph.Graph; graph.to_api() is POST /prompt's "prompt"
>>> [m.relpath for m in wf.required_models()][0]
'diffusion_models/flux1-dev.safetensors'

Every builder validates its fields when constructed (``pydantic.ValidationError`` names the
field and the allowed values), picks a random seed when none is given (``wf.seed`` reports
it), and lists the model files (``required_models()``) and input images
(``input_images()``) its graph needs.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from ._base import MAX_PROMPT_CHARS, MAX_SEED, SAMPLERS, SCHEDULERS, WEIGHT_DTYPES, Workflow
from ._images import MAX_IMAGE_BYTES, MAX_IMAGE_SIDE, InputImage
from ._lora import MAX_LORA_STRENGTH, MAX_LORAS, LoRA, with_triggers
from .flux import FluxDev, FluxSchnell
from .instantid import CharacterSheet, InstantID
from .z_image import ZImageTurbo

__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_SIDE",
    "MAX_LORAS",
    "MAX_LORA_STRENGTH",
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "SAMPLERS",
    "SCHEDULERS",
    "WEIGHT_DTYPES",
    "WORKFLOWS",
    "CharacterSheet",
    "FluxDev",
    "FluxSchnell",
    "InputImage",
    "InstantID",
    "LoRA",
    "Workflow",
    "ZImageTurbo",
    "example_face",
    "examples",
    "get_workflow",
    "with_triggers",
]

WORKFLOWS: dict[str, type[Workflow]] = {
    cls.name: cls for cls in (FluxDev, FluxSchnell, ZImageTurbo, InstantID, CharacterSheet)
}
"""Registry name -> workflow class."""


def get_workflow(name: str) -> type[Workflow]:
    """The workflow class registered as ``name`` (``_`` and case are forgiven).

    Raises ValueError listing the valid names when ``name`` is unknown.
    """
    key = name.strip().lower().replace("_", "-")
    try:
        return WORKFLOWS[key]
    except KeyError:
        valid = ", ".join(sorted(WORKFLOWS))
        raise ValueError(f"Unknown workflow {name!r}; valid names: {valid}.") from None


def example_face(size: int = 64, *, tint: int = 0) -> InputImage:
    """A small drawn face (not a photo: real face detection will not find it).

    Enough for graph validation and upload tests; ``tint`` varies the colours so
    different ``tint`` values give different upload names.
    """
    im = Image.new("RGB", (size, size), (235 - tint % 40, 225, 215))
    d = ImageDraw.Draw(im)
    s = size / 64
    d.ellipse((14 * s, 8 * s, 50 * s, 56 * s), fill=(224, 182, 150 + tint % 50))
    d.ellipse((22 * s, 24 * s, 28 * s, 30 * s), fill=(40, 40, 40))
    d.ellipse((36 * s, 24 * s, 42 * s, 30 * s), fill=(40, 40, 40))
    d.line((32 * s, 30 * s, 30 * s, 38 * s), fill=(150, 110, 90), width=max(1, int(s)))
    d.arc((24 * s, 36 * s, 40 * s, 48 * s), 20, 160, fill=(150, 60, 60), width=max(1, int(2 * s)))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return InputImage.load(buf.getvalue(), field="face_image")


def examples() -> list[Workflow]:
    """Typical requests for every builder, with fixed seeds (for tests against a server).

    Covers LoRA stacks (model-only and model+clip, trigger words), fp8 weights, swapped
    samplers, the advanced InstantID node, a pose image, and a three-view character
    sheet. LoRA files are named ``example_*.safetensors``; ``required_models()`` lists them.
    """
    face = example_face()
    pose = example_face(tint=17)
    film = LoRA(name="example_film.safetensors", strength=0.8)
    person = LoRA(
        name="example_person.safetensors", strength=1.0, clip_strength=0.6, trigger="ohwx woman"
    )
    sdxl_style = LoRA(name="example_sdxl_style.safetensors", strength=0.7, trigger="analog film")
    return [
        FluxDev(prompt="a lighthouse on a cliff at dusk, 35mm photo", seed=1),
        FluxDev(
            prompt="portrait photo, soft window light",
            width=832,
            height=1216,
            steps=28,
            guidance=2.8,
            seed=2,
            weight_dtype="fp8_e4m3fn",
            loras=[film, person],
        ),
        FluxDev(
            prompt="isometric city diorama",
            seed=3,
            weight_dtype="fp8_e4m3fn_fast",
            sampler="dpmpp_2m",
            scheduler="beta",
            batch_size=2,
        ),
        FluxSchnell(prompt="a red fox in fresh snow", seed=4),
        FluxSchnell(prompt="neon street at night", seed=5, weight_dtype="fp8_e4m3fn", loras=[film]),
        ZImageTurbo(prompt="a cup of coffee on a wooden table, morning light", seed=6),
        ZImageTurbo(
            prompt="ohwx woman hiking in the alps",
            seed=7,
            width=768,
            height=1344,
            loras=[person, film],
        ),
        InstantID(prompt="portrait photo of a person, studio lighting", face_image=face, seed=8),
        InstantID(
            prompt="a person as an astronaut, cinematic",
            face_image=face,
            pose_image=pose,
            seed=9,
            ip_weight=0.9,
            cn_strength=0.5,
            noise=0.2,
            loras=[sdxl_style],
        ),
        InstantID(
            prompt="oil painting of a person",
            face_image=face,
            seed=10,
            weight=1.1,
            start_at=0.1,
            end_at=0.9,
            provider="CPU",
            sampler="dpmpp_2m_sde",
            scheduler="karras",
        ),
        CharacterSheet(
            face_image=face,
            views=[
                "front view portrait of a person, neutral background",
                "profile view of a person, neutral background",
                "full body shot of a person standing, neutral background",
            ],
            seed=11,
            loras=[sdxl_style],
        ),
    ]
