"""The judges' word lists, one word or phrase per line (data; read with importlib.resources)."""
