"""Typer CLI: ``aqualens --help``."""
