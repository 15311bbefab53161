"""CLI subcommands, one module each; `citywatch.cli` wires them in."""
