"""lorapipe.data."""
