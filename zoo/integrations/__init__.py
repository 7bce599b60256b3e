"""Adapters that let other tools drive zoo models (each imports its tool only when used)."""
