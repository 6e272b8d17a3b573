"""The flags that spread a command's episodes over Ray actors, shared by ``eval``, ``train`` and
``bench``: ``--ray [ADDRESS]``, ``--ray-actors``, ``--ray-cpus-per-actor``, ``--ray-gpus-per-actor``,
``--ray-chunk-size`` and ``--endpoints URL,URL``.

    mucode eval --ray auto --ray-actors 8 --ray-cpus-per-actor 4 --limit 0
    mucode eval --ray --endpoints http://gpu1:8000/v1,http://gpu2:8000/v1 --model Qwen/Qwen2.5-Coder-7B-Instruct
"""

from __future__ import annotations

import argparse

__all__ = ["add_ray_arguments", "ray_config"]

ENDPOINT_CHUNK_SIZE = 16  # episodes per chunk with servers: enough concurrent requests per server


def add_ray_arguments(parser: argparse.ArgumentParser, stages: str) -> None:
    """Add the Ray flags to ``parser``; ``stages`` says which of the command's episodes they move."""
    group = parser.add_argument_group(
        "distributed episodes (Ray)",
        f"Play {stages} on Ray actors, each with its own policy replica and sandbox (pip install 'mucode[ray]'; "
        "every node needs mucode, and model paths must exist on every node).")
    group.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                       help="play the episodes on Ray actors; ADDRESS: an existing cluster ('auto', 'host:6379', "
                            "'ray://host:10001'); without it: $RAY_ADDRESS, else a cluster started on this machine, "
                            "else a new local one")
    group.add_argument("--ray-actors", type=int, default=None,
                       help="episode actors (default: one per endpoint, else 1)")
    group.add_argument("--ray-cpus-per-actor", type=int, default=1,
                       help="CPUs per actor: its sandbox workers and llama.cpp threads (default: %(default)s)")
    group.add_argument("--ray-gpus-per-actor", type=float, default=0.0,
                       help="GPUs per actor, for a GPU model replica in each (default: %(default)s)")
    group.add_argument("--ray-chunk-size", type=int, default=None,
                       help=f"episodes handed to an actor at once (default: {ENDPOINT_CHUNK_SIZE} with --endpoints, "
                            "else 4)")
    group.add_argument("--endpoints", default=None, metavar="URL,URL",
                       help="OpenAI-compatible servers (vLLM, SGLang) serving the model: actor k sends its "
                            "generations to server k mod len, so an episode keeps its server (needs --ray; the "
                            "model is then the served name and the backend openai)")


def ray_config(args: argparse.Namespace):
    """The :class:`agents.ray_episodes.RayEpisodesConfig` the flags ask for, or None without ``--ray``.

    Raises:
        ValueError: a Ray flag without ``--ray``, or a bad value (the message names the flag).
    """
    if args.ray is None:
        given = [flag for flag, value in (("--ray-actors", args.ray_actors), ("--endpoints", args.endpoints),
                                          ("--ray-chunk-size", args.ray_chunk_size)) if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} need --ray (with a cluster address, or alone for a local Ray)")
        return None
    from agents.ray_episodes import RayEpisodesConfig

    endpoints = tuple(e.strip() for e in args.endpoints.split(",") if e.strip()) if args.endpoints else None
    if args.endpoints is not None and not endpoints:
        raise ValueError("--endpoints is empty: give base URLs, e.g. http://gpu1:8000/v1,http://gpu2:8000/v1")
    for flag, value in (("--ray-actors", args.ray_actors), ("--ray-chunk-size", args.ray_chunk_size),
                        ("--ray-cpus-per-actor", args.ray_cpus_per_actor)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    try:
        return RayEpisodesConfig(
            address=args.ray or None,
            n_actors=args.ray_actors or (len(endpoints) if endpoints else 1),
            cpus_per_actor=args.ray_cpus_per_actor, gpus_per_actor=args.ray_gpus_per_actor, endpoints=endpoints,
            chunk_size=args.ray_chunk_size or (ENDPOINT_CHUNK_SIZE if endpoints else 4),
        )
    except ValueError as exc:
        raise ValueError(f"bad Ray flags: {exc}") from None
