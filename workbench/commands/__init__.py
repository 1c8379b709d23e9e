"""Technique subcommands (``workbench sensitivity``, ``export``, ``quantize``, ``sweep``, ``report`` …).

Each module here calls ``workbench.cli.add_command`` at import; ``workbench.cli`` imports them all.
"""
