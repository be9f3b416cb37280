"""Declarative TAP_SCHEMA metadata (YAML), installed as package data."""
