"""Model and pipeline configurations (YAML), installed as package data."""
