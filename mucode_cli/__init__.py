"""The ``mucode`` command line, the top layer: thin callers of the library (:mod:`mucode_cli.main`)."""

from mucode_cli.main import build_parser, main

__all__ = ["build_parser", "main"]
