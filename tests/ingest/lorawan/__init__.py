"""Tests for ingest.lorawan."""
