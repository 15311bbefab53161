"""Shipped binary device profiles (``<name>.yaml``), one per citywatch asset type.

This is a package only so that its YAML and JSON files ship with the wheel.
See :mod:`ingest.lorawan.codecs.binary_profile` for the schema.
"""
