"""Run inside ComfyUI's own Python (cwd = ComfyUI): unmerged LoRAs against stock merging.

Builds a tiny but real Flux model from ComfyUI's own classes, writes LoRA files in two
key formats (kohya ``lora_unet_*`` and diffusers ``transformer.*`` with separate q/k/v, which
ComfyUI maps onto slices of the fused qkv weights), and samples with ComfyUI's real sampler
three ways: no LoRA, stock ``LoraLoaderModelOnly`` and ryla-gen's ``RylaLoraLoaderModelOnly``.
Prints one JSON object with what the test asserts on.

Usage: python lora_slots_check.py NODES_DIR WORK_DIR [--compile]
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

nodes_dir, work = Path(sys.argv[1]), Path(sys.argv[2])
use_compile = "--compile" in sys.argv[3:]
sys.path.insert(0, ".")

import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = True  # before comfy.model_management picks a device

import comfy.lora  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.supported_models  # noqa: E402
import folder_paths  # noqa: E402
import nodes  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.manual_seed(0)
CTX, VEC = 64, 32
config = comfy.supported_models.Flux(
    {
        "image_model": "flux",
        "in_channels": 16,
        "out_channels": 16,
        "patch_size": 2,
        "vec_in_dim": VEC,
        "context_in_dim": CTX,
        "hidden_size": 64,
        "mlp_ratio": 4.0,
        "num_heads": 2,
        "depth": 2,
        "depth_single_blocks": 2,
        "axes_dim": [8, 12, 12],
        "theta": 10000,
        "qkv_bias": True,
        "guidance_embed": True,
    }
)
config.set_inference_dtype(torch.float32, None)
base = config.get_model({})
with torch.no_grad():
    for p in base.diffusion_model.parameters():
        p.normal_(0, 0.05)
cpu = torch.device("cpu")
model = comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)

key_map = comfy.lora.model_lora_keys_unet(base, {})
loras = work / "loras"
loras.mkdir(parents=True, exist_ok=True)
folder_paths.add_model_folder_path("loras", str(loras))


def make_lora(name: str, prefix: str, rank: int, seed: int) -> int:
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    targets = 0
    for lora_key, target in key_map.items():
        if not lora_key.startswith(prefix):
            continue
        key = target if isinstance(target, str) else target[0]
        try:
            w = comfy.utils.get_attr(base, key)
        except AttributeError:  # a key format ComfyUI maps for other Flux variants
            continue
        if w.ndim != 2:
            continue
        offset = None if isinstance(target, str) else target[1]
        out_dim = w.shape[0] if offset is None else offset[2]
        sd[f"{lora_key}.lora_down.weight"] = torch.randn(rank, w.shape[1], generator=g) * 0.2
        sd[f"{lora_key}.lora_up.weight"] = torch.randn(out_dim, rank, generator=g) * 0.2
        sd[f"{lora_key}.alpha"] = torch.tensor(float(rank) / 2)
        targets += 1
    save_file(sd, str(loras / name))
    return targets


counts = {
    "kohya_a": make_lora("kohya_a.safetensors", "lora_unet_", 4, 1),
    "kohya_b": make_lora("kohya_b.safetensors", "lora_unet_", 8, 2),
    "diffusers": make_lora("diffusers_c.safetensors", "transformer.", 4, 3),
}

spec = importlib.util.spec_from_file_location("ryla_gen_nodes", nodes_dir / "__init__.py")
assert spec is not None and spec.loader is not None
ryla = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ryla)

stock = nodes.LoraLoaderModelOnly()
ours = ryla.RylaLoraLoaderModelOnly()
slotted = ryla.RylaLoraSlots().prepare(model)[0]
assert slotted is model
if use_compile:
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    compiled = model.clone()
    set_torch_compile_wrapper(compiled, backend="inductor")
    model = compiled

noise = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(7))
latent = torch.zeros_like(noise)
cond = [[torch.randn(1, 8, CTX), {"pooled_output": torch.randn(1, VEC), "guidance": 3.5}]]


def sample(m: object) -> torch.Tensor:
    out = comfy.sample.sample(
        m, noise, 2, 1.0, "euler", "simple", cond, cond, latent, seed=1, disable_pbar=True
    )
    return out.float()


def chain(loader: object, pairs: list[tuple[str, float]]) -> object:
    m = model
    for name, strength in pairs:
        m = loader.load_lora_model_only(m, name, strength)[0]  # type: ignore[attr-defined]
    return m


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


cases = {
    "a": [("kohya_a.safetensors", 0.8)],
    "b": [("kohya_b.safetensors", 0.8)],
    "b_half": [("kohya_b.safetensors", 0.5)],
    "a_plus_b": [("kohya_a.safetensors", 0.8), ("kohya_b.safetensors", 0.7)],
    "diffusers": [("diffusers_c.safetensors", 1.0)],
    "negative": [("kohya_a.safetensors", -1.5)],
}
result: dict[str, object] = {"targets": counts, "compile": use_compile, "cases": {}}
plain = sample(model)
result["plain_std"] = float(plain.std())
frames_before = None
if use_compile:
    from torch._dynamo.utils import counters

    frames_before = dict(counters["stats"])
# ours first (the stock merge leaves merged weights behind until unpatched)
order = ["a", "b", "a", "b_half", "a_plus_b", "diffusers", "negative"]
ours_out: dict[str, torch.Tensor] = {}
times: dict[str, float] = {}
for name in order:
    t0 = time.monotonic()
    ours_out[name] = sample(chain(ours, cases[name]))
    times[name] = time.monotonic() - t0
after_lora = sample(model)
compile_stats = dict(counters["stats"]) if use_compile else None
for name in cases:
    ref = sample(chain(stock, cases[name]))
    result["cases"][name] = {  # type: ignore[index]
        "rel_err_vs_stock": rel(ours_out[name], ref),
        "rel_change_vs_plain": rel(ref, plain),
    }
result["plain_after_loras_max_abs_diff"] = float((after_lora - plain).abs().max())
result["slots"] = len(base._ryla_lora_slots)
result["seconds"] = times
result["dynamo_stats_before"] = frames_before
result["dynamo_stats_after"] = compile_stats
print("RESULT " + json.dumps(result))
