"""Core: settings, the error hierarchy and the plugin registry. Imports nothing else of AquaLens."""
