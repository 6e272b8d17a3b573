"""No path of a particular machine (its home, data folder, interpreter prefix) in the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# home directories, this project's workspace layout and interpreter prefixes
MACHINE_PATH = re.compile(r"(?<![\w.~])(/root/|/home/\w|/work/|/Users/\w|\.pyenv/versions|/opt/wheels)")


def test_no_machine_path_in_tracked_files():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in files:
        path = REPO / name
        if path.suffix in (".png", ".gguf", ".parquet") or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line) and "MACHINE_PATH" not in line and "no-machine-path: ok" not in line:
                offenders.append(f"{name}:{number}: {line.strip()[:120]}")
    assert not offenders, "\n".join(offenders)
