"""lorapipe.serve."""
