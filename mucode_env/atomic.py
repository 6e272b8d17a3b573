"""Atomic writes: a crash or an interrupt never leaves half a file or half a directory behind.

Every artifact (results, rollouts, datasets, checkpoints, caches) is written to a temporary
sibling and renamed into place; ``os.replace`` is atomic within one filesystem.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; what the block writes there replaces ``path`` on success.

    For writers that take a path (Parquet, PNG: pass ``format=`` since the name ends in
    ``.tmp``, model files). On an exception the temporary file is removed and ``path`` is left
    untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same directory."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any, **dumps_kwargs: Any) -> Path:
    """``json.dumps(data, indent=2, sort_keys=True, **dumps_kwargs)`` written atomically."""
    options = {"indent": 2, "sort_keys": True, **dumps_kwargs}
    return write_text_atomic(path, json.dumps(data, **options) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[Any], **dumps_kwargs: Any) -> Path:
    """One ``json.dumps(row, **dumps_kwargs)`` per line, written atomically."""
    return write_text_atomic(path, "".join(json.dumps(row, **dumps_kwargs) + "\n" for row in rows))


def save_figure_atomic(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """``fig.savefig`` (a matplotlib figure) written atomically; the format comes from the suffix."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **savefig_kwargs)
    return path


@contextlib.contextmanager
def atomic_dir(output_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``output_dir`` when the block succeeds.

    On an exception the temporary directory is removed and ``output_dir`` is left untouched.
    """
    out = Path(output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old.{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
