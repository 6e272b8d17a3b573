"""Benchmark loaders: MBPP, HumanEval, CodeContests and APPS as lists of ``Problem`` records.

Nothing is read or downloaded at import. The data directory is the ``data_dir`` argument, else
``$MUCODE_DATA_DIR`` (point it at the offline copies); see :mod:`mucode_env.datasets.source`.

>>> from mucode_env.datasets import load_problems
>>> problems = load_problems("mbpp", split="test", data_dir="/path/to/data")  # doctest: +SKIP
>>> problems[0].id  # doctest: +SKIP
'MBPP/11'
"""

from __future__ import annotations

import os
from collections.abc import Callable

from mucode_env.datasets.apps import load_apps
from mucode_env.datasets.asserts import assert_to_test, top_level_names
from mucode_env.datasets.codecontests import load_codecontests
from mucode_env.datasets.humaneval import load_humaneval
from mucode_env.datasets.mbpp import load_mbpp
from mucode_env.datasets.source import DATA_DIR_ENV, check_choice
from mucode_env.problem import Problem

_LOADERS: dict[str, Callable[..., list[Problem]]] = {
    "mbpp": load_mbpp,
    "humaneval": load_humaneval,
    "codecontests": load_codecontests,
    "apps": load_apps,
}
BENCHMARKS = tuple(_LOADERS)


def load_problems(
    benchmark: str,
    split: str = "test",
    data_dir: str | os.PathLike[str] | None = None,
    source: str = "auto",
) -> list[Problem]:
    """Load one split of a benchmark, in a deterministic order.

    Args:
        benchmark: ``"mbpp"``, ``"humaneval"``, ``"codecontests"`` or ``"apps"``.
        split: the benchmark's split: MBPP ``test``/``validation``/``prompt``/``train``;
            HumanEval ``test``; CodeContests ``train`` (offline subset), ``test``/``valid``
            (hub); APPS ``test`` (offline APPS-150), ``train`` (hub).
        data_dir: folder with the offline files (default: ``$MUCODE_DATA_DIR``).
        source: ``"local"`` (data directory only), ``"hub"`` (Hugging Face ``datasets``) or
            ``"auto"`` (local when the file is there, else the hub).

    Returns:
        The split's problems with the paper's public/private test split.

    Raises:
        DatasetError: unknown benchmark, split or source (the message lists the allowed values
            and a close match), or no data available (the message says to set
            ``MUCODE_DATA_DIR``).
    """
    check_choice("benchmark", benchmark, BENCHMARKS)
    return _LOADERS[benchmark](split=split, data_dir=data_dir, source=source)


__all__ = [
    "BENCHMARKS",
    "DATA_DIR_ENV",
    "assert_to_test",
    "load_apps",
    "load_codecontests",
    "load_humaneval",
    "load_mbpp",
    "load_problems",
    "top_level_names",
]
