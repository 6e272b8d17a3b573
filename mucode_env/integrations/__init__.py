"""Bridges to other RL stacks that use mucode without glue (verl and SkyRL: ``integrations.verl``).

``mucode serve`` (``mucode_env.serve``) covers OpenEnv clients and SandboxFusion's API.
"""
