"""Bundled probe sets of the ethics audit (YAML data; read with importlib.resources)."""
