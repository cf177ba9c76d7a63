"""lorapipe.train."""
