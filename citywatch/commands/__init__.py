"""CLI subcommands, one module each; `citywatch.cli` wires them in. A command imports
no other command: what they share lives in ``services`` or ``citywatch.runtime``."""
