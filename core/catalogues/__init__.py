"""Optional asset catalogue files shipped with citywatch (enable with CITYWATCH_ASSET_CATALOGUE)."""
