"""lorapipe.evaluate."""
