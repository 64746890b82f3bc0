"""Sub-commands of ``handover``: one module each, discovered at start-up.

A module here defines ``register(subparsers: argparse._SubParsersAction[...]) -> None``.
"""
