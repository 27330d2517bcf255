"""Write full-size model files filled with random numbers, for GPU benchmarks.

Every file has the key names, shapes and dtypes of the public release it stands in
for, because each one is derived from ComfyUI's own model classes (built on PyTorch's
``meta`` device, so nothing is allocated): ComfyUI detects and loads the files exactly
as it loads the real ones, and every kernel does the same amount of work. The values
are random, so the pictures are noise: use these files for speed, memory, cold start
and plumbing, never for quality.

=========================  =============================================  ==========
key                        file (under --out, ComfyUI's models layout)     size
=========================  =============================================  ==========
flux1-dev                  diffusion_models/flux1-dev.safetensors          22.2 GiB
flux1-schnell              diffusion_models/flux1-schnell.safetensors      symlink
t5xxl                      text_encoders/t5xxl_fp16.safetensors            8.9 GiB
clip_l                     text_encoders/clip_l.safetensors                0.2 GiB
ae                         vae/ae.safetensors                              0.2 GiB
z_image_turbo              diffusion_models/z_image_turbo_bf16.safetensors 11.5 GiB
qwen_3_4b                  text_encoders/qwen_3_4b.safetensors             7.5 GiB
lora_a, lora_b             loras/bench_lora_{a,b}_r32.safetensors          0.3 GiB each
=========================  =============================================  ==========

``flux1-schnell`` is a symbolic link to the Dev file: a real Schnell file differs only
by lacking the 4 ``guidance_in.*`` tensors (a small MLP run once per step), and a second
22 GiB file does not fit the benchmark machine's disk. ComfyUI therefore detects it as
Flux Dev (guidance embedding on, Dev's sigma shift); the work per step is the same to
within that MLP. The two LoRAs are rank 32, alpha 32, in the kohya format
(``lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`` ...) over all 304 linear
layers of Flux's double and single blocks, with different random values.

Files are streamed tensor by tensor (a safetensors header, then each tensor's bytes),
so memory use stays at one tensor per writer; ``--workers`` files are written at once.
Random numbers are drawn on the GPU when there is one. A file that already has the
expected size is kept (re-running is cheap).

    python benchmarks/make_weights.py --comfy COMFYUI_DIR --out MODELS_DIR [--only KEY ...]
    python benchmarks/make_weights.py --comfy COMFYUI_DIR --check   # verify with ComfyUI
    python benchmarks/make_weights.py --comfy COMFYUI_DIR --list    # keys, params, sizes
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import logging
import math
import os
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

LORA_RANK = 32
LORA_NAMES = {"lora_a": "bench_lora_a_r32.safetensors", "lora_b": "bench_lora_b_r32.safetensors"}

#: The published FLUX.1 [dev] architecture, as ComfyUI's model detection describes it.
FLUX_DEV_CONFIG: dict[str, Any] = {
    "image_model": "flux",
    "in_channels": 16,
    "out_channels": 16,
    "vec_in_dim": 768,
    "context_in_dim": 4096,
    "hidden_size": 3072,
    "mlp_ratio": 4.0,
    "num_heads": 24,
    "depth": 19,
    "depth_single_blocks": 38,
    "axes_dim": [16, 56, 56],
    "theta": 10000,
    "patch_size": 2,
    "qkv_bias": True,
    "guidance_embed": True,
}

#: The published Z-Image-Turbo architecture (a Lumina 2 "NextDiT" of width 3840).
Z_IMAGE_CONFIG: dict[str, Any] = {
    "image_model": "lumina2",
    "patch_size": 2,
    "in_channels": 16,
    "dim": 3840,
    "cap_feat_dim": 2560,
    "n_layers": 30,
    "n_refiner_layers": 2,
    "n_heads": 30,
    "n_kv_heads": 30,
    "multiple_of": 256,
    "ffn_dim_multiplier": 8.0 / 3.0,
    "norm_eps": 1e-5,
    "qk_norm": True,
    "axes_dims": [32, 48, 48],
    "axes_lens": [1536, 512, 512],
    "rope_theta": 256.0,
    "z_image_modulation": True,
    "time_scale": 1000.0,
    "pad_tokens_multiple": 32,
}

#: The Flux VAE (ae.safetensors): SD's autoencoder with 16 latent channels.
FLUX_VAE_CONFIG: dict[str, Any] = {
    "double_z": True,
    "z_channels": 16,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
}

_ST_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
}


# -- model skeletons from ComfyUI's classes ------------------------------------------------


def _flux(dtype: torch.dtype) -> torch.nn.Module:
    import comfy.ldm.flux.model
    import comfy.ops

    return comfy.ldm.flux.model.Flux(
        **FLUX_DEV_CONFIG, dtype=dtype, device="meta", operations=comfy.ops.disable_weight_init
    )


def _z_image(dtype: torch.dtype) -> torch.nn.Module:
    import comfy.ldm.lumina.model
    import comfy.ops

    return comfy.ldm.lumina.model.NextDiT(
        **Z_IMAGE_CONFIG, dtype=dtype, device="meta", operations=comfy.ops.disable_weight_init
    )


def _t5xxl(dtype: torch.dtype) -> torch.nn.Module:
    import comfy.text_encoders.sd3_clip

    return comfy.text_encoders.sd3_clip.T5XXLModel(device="meta", dtype=dtype).transformer


def _clip_l(dtype: torch.dtype) -> torch.nn.Module:
    import comfy.sd1_clip

    return comfy.sd1_clip.SDClipModel(
        device="meta", dtype=dtype, return_projected_pooled=False
    ).transformer


def _qwen3_4b(dtype: torch.dtype) -> torch.nn.Module:
    import comfy.text_encoders.z_image

    return comfy.text_encoders.z_image.Qwen3_4BModel(device="meta", dtype=dtype).transformer


def _flux_vae(dtype: torch.dtype) -> torch.nn.Module:
    from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder

    with torch.device("meta"):
        vae = torch.nn.Module()
        vae.encoder = Encoder(**FLUX_VAE_CONFIG)
        vae.decoder = Decoder(**FLUX_VAE_CONFIG)
    return vae.to(dtype)


def flux_linear_layers() -> list[tuple[str, int, int]]:
    """``(module path, in_features, out_features)`` of every linear layer of Flux's blocks."""
    out = []
    for name, mod in _flux(torch.bfloat16).named_modules():
        if name.startswith(("double_blocks.", "single_blocks.")) and isinstance(
            mod, torch.nn.Linear
        ):
            out.append((name, mod.in_features, mod.out_features))
    return out


# -- what to write ----------------------------------------------------------------------------

Entry = tuple[str, tuple[int, ...], torch.dtype]


@dataclasses.dataclass(frozen=True)
class Spec:
    """One file: where it goes and how to list its tensors."""

    key: str
    relpath: str
    tensors: Callable[[], list[Entry]]
    seed: int
    link_to: str | None = None  # a symlink to this other key's file instead of a file


def _module_entries(build: Callable[[torch.dtype], torch.nn.Module], dtype: torch.dtype):
    def entries() -> list[Entry]:
        sd = build(dtype).state_dict()
        return [(k, tuple(v.shape), v.dtype) for k, v in sd.items()]

    return entries


def _lora_entries() -> list[Entry]:
    out: list[Entry] = []
    for path, fan_in, fan_out in flux_linear_layers():
        base = "lora_unet_" + path.replace(".", "_")
        out.append((f"{base}.lora_down.weight", (LORA_RANK, fan_in), torch.bfloat16))
        out.append((f"{base}.lora_up.weight", (fan_out, LORA_RANK), torch.bfloat16))
        out.append((f"{base}.alpha", (), torch.float32))
    return out


SPECS: dict[str, Spec] = {
    s.key: s
    for s in (
        Spec(
            "flux1-dev",
            "diffusion_models/flux1-dev.safetensors",
            _module_entries(_flux, torch.bfloat16),
            1,
        ),
        Spec(
            "flux1-schnell",
            "diffusion_models/flux1-schnell.safetensors",
            _module_entries(_flux, torch.bfloat16),
            1,
            link_to="flux1-dev",
        ),
        Spec(
            "t5xxl",
            "text_encoders/t5xxl_fp16.safetensors",
            _module_entries(_t5xxl, torch.float16),
            2,
        ),
        Spec(
            "clip_l", "text_encoders/clip_l.safetensors", _module_entries(_clip_l, torch.float16), 3
        ),
        Spec("ae", "vae/ae.safetensors", _module_entries(_flux_vae, torch.bfloat16), 4),
        Spec(
            "z_image_turbo",
            "diffusion_models/z_image_turbo_bf16.safetensors",
            _module_entries(_z_image, torch.bfloat16),
            5,
        ),
        Spec(
            "qwen_3_4b",
            "text_encoders/qwen_3_4b.safetensors",
            _module_entries(_qwen3_4b, torch.bfloat16),
            6,
        ),
        Spec("lora_a", f"loras/{LORA_NAMES['lora_a']}", _lora_entries, 7),
        Spec("lora_b", f"loras/{LORA_NAMES['lora_b']}", _lora_entries, 8),
    )
}


# -- values -------------------------------------------------------------------------------------


def _is_norm_gain(name: str, shape: tuple[int, ...]) -> bool:
    """RMS/layer/group-norm gains: ones, as in a trained model (keeps activations sane)."""
    if len(shape) != 1:
        return False
    leaf = name.rsplit(".", 1)[-1]
    owner = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
    return leaf == "scale" or (leaf == "weight" and "norm" in owner.lower())


def fill(
    name: str, shape: tuple[int, ...], dtype: torch.dtype, device: str, gen: torch.Generator
) -> torch.Tensor:
    """The values of one tensor: N(0, 0.02) weights, unit norm gains, zero biases."""
    if name.endswith(".alpha"):
        return torch.full(shape, float(LORA_RANK), dtype=dtype, device=device)
    if _is_norm_gain(name, shape):
        return torch.ones(shape, dtype=dtype, device=device)
    if name.endswith(".bias"):
        return torch.zeros(shape, dtype=dtype, device=device)
    t = torch.empty(shape, dtype=dtype, device=device)
    return t.normal_(0.0, 0.02, generator=gen)


# -- the writer -----------------------------------------------------------------------------------


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


def header_bytes(entries: list[Entry], metadata: dict[str, str]) -> bytes:
    """The safetensors header (length prefix included) for ``entries`` in this order."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, shape, dtype in entries:
        n = _nbytes(shape, dtype)
        header[name] = {
            "dtype": _ST_DTYPES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def file_size(entries: list[Entry], metadata: dict[str, str]) -> int:
    return len(header_bytes(entries, metadata)) + sum(_nbytes(s, d) for _, s, d in entries)


def _metadata(spec: Spec) -> dict[str, str]:
    return {
        "format": "pt",
        "ryla_gen_benchmark": "random weights: real key names, shapes and dtypes; noise images",
        "stands_for": spec.key,
    }


def write_file(spec: Spec, out: Path, device: str) -> tuple[int, int, float]:
    """Write one file; returns (tensors, bytes, seconds). Skips a file of the right size."""
    path = out / spec.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = spec.tensors()
    meta = _metadata(spec)
    size = file_size(entries, meta)
    t0 = time.monotonic()
    if path.is_file() and not path.is_symlink() and path.stat().st_size == size:
        return len(entries), size, 0.0
    gen = torch.Generator(device=device)
    gen.manual_seed(spec.seed)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb", buffering=0) as f:
        f.write(header_bytes(entries, meta))
        for name, shape, dtype in entries:
            t = fill(name, shape, dtype, device, gen).contiguous()
            data = t.view(torch.uint8) if t.dim() else t.reshape(1).view(torch.uint8)
            f.write(memoryview(data.cpu().numpy()))
        os.fsync(f.fileno())
    os.replace(tmp, path)
    written = path.stat().st_size
    if written != size:
        raise RuntimeError(f"{path}: wrote {written} bytes, expected {size}")
    return len(entries), size, time.monotonic() - t0


def make_link(spec: Spec, out: Path) -> None:
    assert spec.link_to is not None
    path = out / spec.relpath
    target = Path(SPECS[spec.link_to].relpath)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(os.path.relpath(out / target, path.parent))


def write_all(
    keys: list[str], out: Path, device: str, workers: int, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Write ``keys`` (largest first, ``workers`` at a time); returns a summary dict."""
    t0 = time.monotonic()
    files = [SPECS[k] for k in keys if SPECS[k].link_to is None]
    links = [SPECS[k] for k in keys if SPECS[k].link_to is not None]
    sizes = {s.key: file_size(s.tensors(), _metadata(s)) for s in files}
    files.sort(key=lambda s: -sizes[s.key])
    summary: dict[str, Any] = {"files": {}, "device": device, "workers": workers}
    lock = threading.Lock()

    def one(spec: Spec) -> None:
        n, size, secs = write_file(spec, out, device)
        with lock:
            summary["files"][spec.key] = {
                "path": spec.relpath,
                "tensors": n,
                "bytes": size,
                "seconds": round(secs, 1),
            }
            log(
                f"{spec.key}: {n} tensors, {size / 2**30:.2f} GiB -> {spec.relpath} "
                f"({'kept' if secs == 0 else f'{secs:.1f} s'})"
            )

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for fut in [pool.submit(one, s) for s in files]:
            fut.result()
    for spec in links:
        make_link(spec, out)
        summary["files"][spec.key] = {
            "path": spec.relpath,
            "symlink_to": SPECS[spec.link_to].relpath,
        }  # type: ignore[index]
        log(f"{spec.key}: symlink {spec.relpath} -> {SPECS[spec.link_to].relpath}")  # type: ignore[index]
    summary["bytes"] = sum(sizes.values())
    summary["seconds"] = round(time.monotonic() - t0, 1)
    log(f"wrote {summary['bytes'] / 2**30:.2f} GiB in {summary['seconds']:.1f} s")
    return summary


# -- checks with ComfyUI's own detection code ----------------------------------------------------


def _meta_sd(build: Callable[[torch.dtype], torch.nn.Module], dtype: torch.dtype):
    return build(dtype).state_dict()


def check() -> list[str]:
    """Ask ComfyUI's loaders what they make of each file's keys and shapes; returns problems."""
    import comfy.lora
    import comfy.model_detection
    import comfy.sd

    problems: list[str] = []

    def expect(cond: bool, ok: str, bad: str) -> None:
        print(("ok   " if cond else "FAIL ") + (ok if cond else bad))
        if not cond:
            problems.append(bad)

    for key, build, want_cfg, want_cls in (
        ("flux1-dev", _flux, FLUX_DEV_CONFIG, "Flux"),
        ("z_image_turbo", _z_image, Z_IMAGE_CONFIG, "ZImage"),
    ):
        sd = _meta_sd(build, torch.bfloat16)
        cfg = comfy.model_detection.detect_unet_config(sd, "")
        diff = {
            k: (v, cfg.get(k))
            for k, v in want_cfg.items()
            if k in cfg
            and (
                cfg.get(k) != v
                and not (isinstance(v, float) and math.isclose(v, cfg.get(k) or 0.0))
            )
        }
        expect(
            cfg is not None and not diff,
            f"{key}: detected config matches",
            f"{key}: detected config differs: {diff}",
        )
        mc = comfy.model_detection.model_config_from_unet_config(cfg, sd)
        name = type(mc).__name__ if mc is not None else None
        expect(name == want_cls, f"{key}: ComfyUI picks {name}", f"{key}: ComfyUI picks {name}")
        n = sum(math.prod(v.shape) for v in sd.values())
        print(f"     {key}: {len(sd)} tensors, {n / 1e9:.3f} B params")
    print("     flux1-schnell: a symlink to flux1-dev, so ComfyUI picks Flux (Dev) for it too")

    for key, build, dtype, want in (
        ("t5xxl", _t5xxl, torch.float16, "T5_XXL"),
        ("clip_l", _clip_l, torch.float16, "CLIP_L"),
        ("qwen_3_4b", _qwen3_4b, torch.bfloat16, "QWEN3_4B"),
    ):
        te = comfy.sd.detect_te_model(_meta_sd(build, dtype))
        got = getattr(te, "name", te)
        expect(
            got == want,
            f"{key}: text encoder detected as {got}",
            f"{key}: text encoder detected as {got}, want {want}",
        )

    vae = _meta_sd(_flux_vae, torch.bfloat16)
    z = vae["decoder.conv_in.weight"].shape[1]
    expect(
        z == 16 and "post_quant_conv.weight" not in vae,
        "ae: 16 latent channels, no quant convs (Flux VAE)",
        f"ae: {z} latent channels",
    )

    # LoRA: the key map ComfyUI builds for a Flux model, applied to our LoRA's keys.
    flux_sd = {f"diffusion_model.{k}": v for k, v in _meta_sd(_flux, torch.bfloat16).items()}

    class _Model:  # the two attributes model_lora_keys_unet reads
        model_config = type("C", (), {"unet_config": dict(FLUX_DEV_CONFIG)})()

        def state_dict(self) -> dict[str, torch.Tensor]:
            return flux_sd

    key_map = comfy.lora.model_lora_keys_unet(_Model(), {})
    lora: dict[str, torch.Tensor] = {}
    for name, shape, dtype in _lora_entries():
        lora[name] = (
            torch.full(shape, float(LORA_RANK), dtype=dtype)
            if name.endswith(".alpha")
            else torch.empty(shape, dtype=dtype, device="meta")
        )
    not_loaded: list[str] = []

    class _Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "lora key not loaded" in record.getMessage():
                not_loaded.append(record.getMessage())

    handler = _Catch()
    logging.getLogger().addHandler(handler)
    try:
        patches = comfy.lora.load_lora(lora, key_map)
    finally:
        logging.getLogger().removeHandler(handler)
    layers = len(flux_linear_layers())
    expect(
        len(patches) == layers == 304 and not not_loaded,
        f"LoRA: ComfyUI maps all {len(patches)} layers of the rank-{LORA_RANK} LoRA",
        f"LoRA: {len(patches)} of {layers} layers mapped, {len(not_loaded)} keys not loaded",
    )
    return problems


# -- command line ---------------------------------------------------------------------------------


def _iter_keys(only: list[str] | None) -> Iterator[str]:
    for key in only or SPECS:
        if key not in SPECS:
            raise SystemExit(f"unknown key {key!r}; known: {', '.join(SPECS)}")
        yield key


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfy", required=True, help="ComfyUI source folder (its model classes)")
    ap.add_argument("--out", type=Path, help="models folder to write into")
    ap.add_argument("--only", nargs="*", help=f"keys to write (default all): {', '.join(SPECS)}")
    ap.add_argument("--skip", nargs="*", default=[], help="keys not to write")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=3, help="files written at once")
    ap.add_argument("--list", action="store_true", help="print tensors, params and sizes")
    ap.add_argument("--check", action="store_true", help="verify the layouts with ComfyUI")
    ap.add_argument("--summary", type=Path, help="write a JSON summary here")
    a = ap.parse_args(argv)

    sys.path.insert(0, os.path.abspath(a.comfy))
    if not torch.cuda.is_available():
        import comfy.cli_args

        comfy.cli_args.args.cpu = True
    keys = [k for k in _iter_keys(a.only) if k not in a.skip]

    if a.check:
        problems = check()
        print("all checks passed" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0
    if a.list:
        total = 0
        for k in keys:
            s = SPECS[k]
            entries = s.tensors()
            size = file_size(entries, _metadata(s))
            n = sum(math.prod(sh) for _, sh, _ in entries)
            total += 0 if s.link_to else size
            link = f" (symlink to {SPECS[s.link_to].relpath})" if s.link_to else ""
            print(
                f"{k:15s} {len(entries):5d} tensors {n / 1e9:7.3f} B params "
                f"{size / 2**30:7.2f} GiB  {s.relpath}{link}"
            )
        print(f"total {total / 2**30:.2f} GiB on disk")
        return 0
    if a.out is None:
        ap.error("--out is required unless --list or --check")
    summary = write_all(keys, a.out, a.device, a.workers)
    if a.summary:
        a.summary.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
