"""ryla-gen's ComfyUI nodes: LoRAs applied at run time, never merged into the weights.

Loaded by ComfyUI itself (the GPU worker points ComfyUI's ``custom_nodes`` search path at
this folder), so this module imports only what ComfyUI's own environment has: torch and
ComfyUI's packages, never ``ryla_gen``.

Why: stock ``LoraLoaderModelOnly`` merges a LoRA into the diffusion model's weights before
sampling. Each change of LoRA or strength then restores a backup of every patched weight
and merges again (Flux Dev on an H200: +3.5 to +4.7 s a change, +20 s for the first LoRA
while ComfyUI copies ~22 GiB of backups to host memory). When every user brings their own
character LoRA, almost every job pays that.

Here each targeted ``Linear`` layer gets a *LoRA slot* once, a pair of zero matrices of a
fixed rank beside the weight; its forward becomes ``base(x) + (x @ down.T) @ up.T``. A job's
LoRAs are copied into the slots when sampling starts and zeroed when it ends. Changing a
LoRA is then a copy of a few hundred megabytes on the GPU, the weights are never touched
(no backups), and because the slots keep their shapes, a ``torch.compile``-d model does
not recompile when the LoRA changes.

Trade-offs: the LoRA term is computed in the model's compute dtype (bfloat16) on every step
instead of being merged in float32 once, so images differ from stock merging at rounding
level; a job with LoRAs runs two thin extra matrix products per layer (about 3 % more work
at rank 64). Anything the slots cannot express (non-Linear layers, LoCon/LoHa/DoRA, ranks
beyond the slot size) falls back to stock merging for those weights, so every LoRA ComfyUI
accepts still works.

Environment (read once, in ComfyUI's process):

``RYLA_GEN_LORA_RANK``
    Slot rank per layer (default 64): the sum of the ranks of one job's LoRAs on a layer.
    A diffusers-format Flux LoRA of rank r uses 3r on fused ``qkv`` layers and 4r on
    single-block ``linear1`` layers.
``RYLA_GEN_LORA_CACHE``
    Parsed LoRAs kept on the GPU between jobs (default 8).
``RYLA_GEN_LORA_STATIC``
    ``1``: compute the slot term on every step even without a LoRA, so a compiled model
    has a single graph for jobs with and without LoRAs (set by the worker with
    ``RYLA_GEN_COMPILE``). Otherwise layers without a LoRA skip it.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import threading
from typing import Any

import comfy.lora
import comfy.lora_convert
import comfy.utils
import folder_paths
import torch
from comfy.patcher_extension import WrappersMP
from comfy.weight_adapter.lora import LoRAAdapter

log = logging.getLogger("ryla_gen_nodes")

SLOT_RANK = int(os.environ.get("RYLA_GEN_LORA_RANK", "64") or 64)
CACHE_SIZE = int(os.environ.get("RYLA_GEN_LORA_CACHE", "8") or 8)
STATIC = os.environ.get("RYLA_GEN_LORA_STATIC", "") not in ("", "0", "false", "no")
WRAPPER_KEY = "ryla_gen_lora_slots"
_PREFIX = "diffusion_model."


class LoraSlot:
    """The forward of one ``Linear`` layer with a zero-initialised low-rank term beside it."""

    def __init__(self, module: torch.nn.Linear, rank: int, device: Any, dtype: Any) -> None:
        self.module = module
        out_features, in_features = module.weight.shape
        self.down = torch.zeros(rank, in_features, device=device, dtype=dtype)
        self.up = torch.zeros(out_features, rank, device=device, dtype=dtype)
        self.active = False  # any non-zero entry (checked only when not STATIC)
        self.used = 0  # ranks filled by the current job

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        y = type(self.module).forward(self.module, x, *args, **kwargs)
        if STATIC or self.active:
            h = torch.nn.functional.linear(x.to(self.down.dtype), self.down)
            if y.dtype == self.up.dtype and y.is_contiguous():
                # y += h @ up.T as one matrix product that accumulates into y: the output
                # is read and written once, not three times as with a separate add.
                y.view(-1, y.shape[-1]).addmm_(h.reshape(-1, h.shape[-1]), self.up.t())
            else:
                y = y + torch.nn.functional.linear(h, self.up).to(y.dtype)
        return y

    def clear(self) -> None:
        if self.used or self.active:
            self.down[: self.used].zero_()
            self.up[:, : self.used].zero_()
        self.used = 0
        self.active = False


def _compute_dtype(model: Any) -> torch.dtype:
    base = model.model
    dtype = getattr(base, "manual_cast_dtype", None) or base.get_dtype()
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        dtype = torch.bfloat16  # fp8 weights compute in bfloat16
    return dtype


def _targets(model: Any) -> dict[str, torch.nn.Linear]:
    """Linear layers of the diffusion model that some LoRA key format can address."""
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    found: dict[str, torch.nn.Linear] = {}
    for target in key_map.values():
        key = target if isinstance(target, str) else target[0]
        if not (key.startswith(_PREFIX) and key.endswith(".weight")):
            continue
        path = key[: -len(".weight")]
        try:
            module = comfy.utils.get_attr(model.model, path)
        except AttributeError:
            continue
        if isinstance(module, torch.nn.Linear) and module.weight.ndim == 2:
            found[path] = module
    return found


def install_slots(model: Any) -> dict[str, LoraSlot]:
    """Give every addressable Linear layer of ``model`` a LoRA slot (once per model)."""
    base = model.model
    slots: dict[str, LoraSlot] | None = getattr(base, "_ryla_lora_slots", None)
    if slots is not None:
        return slots
    device, dtype = model.load_device, _compute_dtype(model)
    slots = {}
    for path, module in _targets(model).items():
        slot = LoraSlot(module, SLOT_RANK, device, dtype)
        module.forward = slot
        slots[path] = slot
    base._ryla_lora_slots = slots
    mib = sum(s.down.nbytes + s.up.nbytes for s in slots.values()) / 2**20
    log.info("ryla-gen: LoRA slots of rank %d on %d layers (%.0f MiB)", SLOT_RANK, len(slots), mib)
    return slots


class _LoraCache:
    """Parsed LoRAs (ComfyUI's own parser), on the GPU, least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: collections.OrderedDict[tuple[Any, ...], dict[Any, Any]] = (
            collections.OrderedDict()
        )
        self.lock = threading.Lock()

    def get(self, model: Any, path: str) -> dict[Any, Any]:
        st = os.stat(path)
        key = (path, st.st_mtime_ns, st.st_size, id(model.model))
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        patches: dict[Any, Any]
        state = comfy.utils.load_torch_file(path, safe_load=True)
        state = comfy.lora_convert.convert_lora(state)
        key_map = comfy.lora.model_lora_keys_unet(model.model, {})
        patches = dict(comfy.lora.load_lora(state, key_map, log_missing=False))
        device, dtype = model.load_device, _compute_dtype(model)
        for adapter in patches.values():
            if isinstance(adapter, LoRAAdapter) and _plain(adapter):
                up, down, *rest = adapter.weights
                adapter.weights = (
                    up.to(device=device, dtype=dtype),
                    down.to(device=device, dtype=dtype),
                    *rest,
                )
        with self.lock:
            self.items[key] = patches
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return patches


_cache = _LoraCache(CACHE_SIZE)


def _plain(adapter: Any) -> bool:
    """A plain low-rank pair (no LoCon mid, DoRA scale or reshape)."""
    up, down, _alpha, mid, dora, reshape = adapter.weights
    return mid is None and dora is None and reshape is None and up.ndim == 2 and down.ndim == 2


def _split_key(k: Any) -> tuple[str, tuple[int, int, int] | None, Any]:
    if isinstance(k, str):
        return k, None, None
    return k[0], k[1], (k[2] if len(k) > 2 else None)


class _Fill:
    """OUTER_SAMPLE wrapper: fill the slots with this model's LoRAs, zero them afterwards."""

    def __init__(self, entries: tuple[tuple[str, float, frozenset[Any]], ...]) -> None:
        self.entries = entries  # (lora path, strength, patch keys that go to slots)

    def __call__(self, executor: Any, *args: Any, **kwargs: Any) -> Any:
        patcher = executor.class_obj.model_patcher
        slots = install_slots(patcher)
        try:
            self.fill(patcher, slots)
            return executor(*args, **kwargs)
        finally:
            for slot in slots.values():
                slot.clear()

    def fill(self, patcher: Any, slots: dict[str, LoraSlot]) -> None:
        for slot in slots.values():
            slot.clear()
        with torch.no_grad():
            for path, strength, keys in self.entries:
                patches = _cache.get(patcher, path)
                for k in sorted(keys, key=str):
                    key, offset, _ = _split_key(k)
                    slot = slots[key[: -len(".weight")]]
                    up, down, alpha, *_ = patches[k].weights
                    rank = down.shape[0]
                    scale = strength * (alpha / rank if alpha is not None else 1.0)
                    lo, hi = slot.used, slot.used + rank
                    slot.down[lo:hi].copy_(down)
                    rows = slot.up if offset is None else slot.up.narrow(0, offset[1], offset[2])
                    rows[:, lo:hi].copy_(up * scale)
                    slot.used = hi
                    slot.active = True


class RylaLoraSlots:
    """Give the model LoRA slots now (so a compiled model is compiled with them)."""

    DESCRIPTION = "Prepares the model for unmerged LoRAs (ryla-gen). Returns the same model."
    CATEGORY = "loaders/ryla-gen"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "prepare"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",)}}

    def prepare(self, model: Any) -> tuple[Any]:
        install_slots(model)
        return (model,)


class RylaLoraLoaderModelOnly:
    """``LoraLoaderModelOnly`` with the LoRA applied at run time instead of merged."""

    DESCRIPTION = (
        "Applies a LoRA to the diffusion model without merging it into the weights "
        "(ryla-gen): changing LoRAs between jobs costs a GPU copy, not a re-merge."
    )
    CATEGORY = "loaders/ryla-gen"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_lora_model_only"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "lora_name": (folder_paths.get_filename_list("loras"),),
                "strength_model": (
                    "FLOAT",
                    {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01},
                ),
            }
        }

    def load_lora_model_only(self, model: Any, lora_name: str, strength_model: float) -> tuple[Any]:
        if strength_model == 0:
            return (model,)
        path = folder_paths.get_full_path_or_raise("loras", lora_name)
        slots = install_slots(model)
        patches = _cache.get(model, path)
        previous = model.get_wrappers(WrappersMP.OUTER_SAMPLE, WRAPPER_KEY)
        entries = previous[-1].entries if previous else ()
        used: collections.Counter[str] = collections.Counter()
        for earlier_path, _strength, keys in entries:
            earlier = _cache.get(model, earlier_path)  # once per LoRA, not once per key
            for k in keys:
                used[_split_key(k)[0]] += patches_rank(earlier[k])
        to_slots: set[Any] = set()
        fallback: dict[Any, Any] = {}
        for k, adapter in patches.items():
            key, offset, function = _split_key(k)
            module = key[: -len(".weight")]
            fits = (
                module in slots
                and isinstance(adapter, LoRAAdapter)
                and _plain(adapter)
                and function is None
                and (offset is None or offset[0] == 0)
                and used[key] + patches_rank(adapter) <= SLOT_RANK
            )
            if fits:
                used[key] += patches_rank(adapter)
                to_slots.add(k)
            else:
                fallback[k] = adapter
        m = model.clone()
        if fallback:
            log.warning(
                "ryla-gen: %d of %d weights of %s merged the stock way (no slot fits them)",
                len(fallback),
                len(patches),
                lora_name,
            )
            m.add_patches(fallback, strength_model)
            # Merge into the existing tensors: replacing them would make a compiled
            # model recompile on every change of LoRA.
            m.weight_inplace_update = True
        m.remove_wrappers_with_key(WrappersMP.OUTER_SAMPLE, WRAPPER_KEY)
        fill = _Fill((*entries, (path, float(strength_model), frozenset(to_slots))))
        m.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, fill)
        return (m,)


def patches_rank(adapter: Any) -> int:
    """The rank a LoRA adapter takes in a slot."""
    return int(adapter.weights[1].shape[0])


def _register_routes() -> None:
    """``POST /ryla/gc_freeze``: move everything alive now out of the garbage collector's view.

    ComfyUI runs ``gc.collect()`` between prompts (at most every 10 s). After a warm-up
    the heap holds the models and, with torch.compile, many compiled-graph objects; a full
    collection then scans them all and holds the next prompt up to ~1.5 s (H200,
    BENCHMARKS.md). The worker calls this once after its warm-up, so later collections
    only scan what jobs create.
    """
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:  # imported outside a ComfyUI server (e.g. in tests)
        return
    instance = getattr(PromptServer, "instance", None)
    if instance is None:
        return

    async def gc_freeze(request: Any) -> Any:
        gc.collect()
        gc.freeze()
        return web.json_response({"frozen_objects": gc.get_freeze_count()})

    instance.routes.post("/ryla/gc_freeze")(gc_freeze)


_register_routes()

NODE_CLASS_MAPPINGS = {
    "RylaLoraSlots": RylaLoraSlots,
    "RylaLoraLoaderModelOnly": RylaLoraLoaderModelOnly,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "RylaLoraSlots": "LoRA slots (ryla-gen)",
    "RylaLoraLoaderModelOnly": "Load LoRA, unmerged (ryla-gen)",
}
