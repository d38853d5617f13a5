"""Annotation interchange: import files into the catalogue, export collections and queries."""
