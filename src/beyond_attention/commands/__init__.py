"""The subcommands of ``beyond-attention``, one module each.

Each module provides ``add_arguments(parser)`` and ``run(args) -> int``; :mod:`beyond_attention.cli`
imports a module only when its command runs or its help is built.
"""
