"""``citywatch assets``: show the asset catalogue and check operators' catalogue files."""

from __future__ import annotations

import json
from pathlib import Path

import click

from core.assets import (
    ASSET_TYPES,
    BUILTIN_CATALOGUE,
    CATALOGUE_ENV,
    CatalogueError,
    catalogue_files_from_env,
    read_catalogue_file,
)


@click.group()
def assets() -> None:
    """The asset catalogue: asset types and the metrics their sensors report.

    \b
    Built-in types ship with citywatch. Add your own without editing code: write
    a TOML file like core/asset_types.toml and list it in
    CITYWATCH_ASSET_CATALOGUE (several files separated by ':'). See docs/assets.md.
    """


@assets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON.")
def assets_list(as_json: bool) -> None:
    """Print every asset type this process knows, with units and physical ranges."""
    if as_json:
        doc = {
            name: {
                "description": t.description,
                "metrics": [
                    {"name": m.name, "unit": m.unit, "low": m.low, "high": m.high}
                    for m in t.metrics
                ],
            }
            for name, t in ASSET_TYPES.items()
        }
        click.echo(json.dumps(doc, indent=2))
        return
    for name, t in ASSET_TYPES.items():
        click.echo(f"{name}: {t.description}")
        for m in t.metrics:
            click.echo(f"  {m.name:<18} {m.unit or '-':<12} {m.low:g} .. {m.high:g}")


@assets.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def assets_check(files: tuple[Path, ...]) -> None:
    """Check catalogue files before listing them in CITYWATCH_ASSET_CATALOGUE.

    Exits 1 with the file and place of the first mistake in each bad file, or a
    type that is already defined.
    """
    bad = 0
    checked = {f.resolve() for f in files}
    others = [BUILTIN_CATALOGUE] + [
        f for f in catalogue_files_from_env() if f.resolve() not in checked
    ]
    seen = {name: str(f) for f in others for name in read_catalogue_file(f)}
    for path in files:
        try:
            types = read_catalogue_file(path)
        except CatalogueError as exc:
            bad += 1
            click.echo(f"refused: {exc}", err=True)
            continue
        clashes = sorted(name for name in types if name in seen)
        if clashes:
            bad += 1
            where = ", ".join(f"{n} (in {seen[n]})" for n in clashes)
            click.echo(f"refused: {path}: already defined: {where}", err=True)
            continue
        seen.update(dict.fromkeys(types, str(path)))
        click.echo(f"ok: {path}: {', '.join(types)}")
    if bad:
        raise SystemExit(1)
    click.echo(f"add the file(s) to {CATALOGUE_ENV} to use them")
