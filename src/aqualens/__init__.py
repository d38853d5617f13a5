"""AquaLens: open, self-hostable AI image analysis for aquatic science."""

__version__ = "0.1.0"
