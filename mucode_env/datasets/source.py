"""Where benchmark records come from: the offline data directory or the Hugging Face hub.

The data directory is the ``data_dir`` argument, else the ``MUCODE_DATA_DIR`` environment
variable; it is read when a loader runs, never at import. ``source="local"`` reads only that
directory, ``"hub"`` only ``datasets.load_dataset`` (imported lazily, so the hub is never
contacted at import), and ``"auto"`` the directory when its files are there, else the hub.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mucode_env.errors import DatasetError, did_you_mean

DATA_DIR_ENV = "MUCODE_DATA_DIR"
SOURCES = ("auto", "local", "hub")

Record = dict[str, Any]


def check_choice(kind: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raise ``DatasetError`` naming ``value``, the allowed values and a close match.

    Args:
        kind: what the value is (``"benchmark"``, ``"split"``, ``"source"``).
        value: the value received.
        allowed: the accepted values.

    Raises:
        DatasetError: if ``value`` is not in ``allowed``.
    """
    if value not in allowed:
        raise DatasetError(
            f"unknown {kind} {value!r}; allowed: {', '.join(allowed)}."
            + did_you_mean(str(value), allowed)
        )


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path | None:
    """The data directory: the argument, else ``$MUCODE_DATA_DIR``, else None."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else None


def read_jsonl(path: Path) -> Iterator[Record]:
    """Yield the JSON objects of a ``.jsonl`` file, one per non-blank line."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"{path}:{number} is not valid JSON ({exc.msg}); re-copy the dataset file"
                ) from exc


def load_hub(name: str, config: str | None = None, **kwargs: Any) -> Any:
    """``datasets.load_dataset(name, config, **kwargs)``, with failures as ``DatasetError``.

    Raises:
        DatasetError: if the ``datasets`` package is missing or the download fails; the message
            says to set ``MUCODE_DATA_DIR`` to an offline copy instead.
    """
    try:
        from datasets import load_dataset  # lazy: optional dependency, and no import-time I/O
    except ImportError as exc:
        raise DatasetError(
            f"loading {name!r} from the Hugging Face hub needs the `datasets` package "
            f"(pip install 'mucode[agents]'), or set {DATA_DIR_ENV} to a folder with the "
            "offline files"
        ) from exc
    try:
        return load_dataset(name, config, **kwargs)
    except Exception as exc:  # network, auth and schema errors all mean "not available"
        raise DatasetError(
            f"could not load {name!r} from the Hugging Face hub ({type(exc).__name__}: {exc}); "
            f"set {DATA_DIR_ENV} (or pass data_dir=) to a folder with the offline files"
        ) from exc


def load_records(
    benchmark: str,
    relative_path: str,
    data_dir: str | os.PathLike[str] | None,
    source: str,
    from_hub: Callable[[], list[Record]],
) -> tuple[list[Record], str]:
    """Records of one benchmark from the data directory or the hub, per ``source``.

    Args:
        benchmark: the benchmark's name, for messages.
        relative_path: the offline file, relative to the data directory.
        data_dir: the ``data_dir`` argument of ``load_problems`` (None: use the env var).
        source: ``"auto"``, ``"local"`` or ``"hub"``.
        from_hub: loads the records from the hub (called only when needed).

    Returns:
        The records and where they came from (``"local"`` or ``"hub"``).

    Raises:
        DatasetError: if the chosen source has no data.
    """
    check_choice("source", source, SOURCES)
    directory = resolve_data_dir(data_dir)
    path = directory / relative_path if directory is not None else None
    if source != "hub" and path is not None and path.is_file():
        return list(read_jsonl(path)), "local"
    if source == "local":
        where = f"{path}" if path is not None else f"the data directory (${DATA_DIR_ENV} unset)"
        raise DatasetError(
            f"{benchmark}: no offline file at {where}; set {DATA_DIR_ENV} (or pass data_dir=) to "
            f"a folder containing {relative_path}, or use source='hub'"
        )
    try:
        return from_hub(), "hub"
    except DatasetError as exc:
        if source == "hub":
            raise
        missing = f"{path} does not exist" if path is not None else f"${DATA_DIR_ENV} is unset"
        raise DatasetError(
            f"{benchmark}: no offline data ({missing}) and the hub failed: {exc}. "
            f"Set {DATA_DIR_ENV} to a folder containing {relative_path}."
        ) from exc
