"""``python -m lorapipe.cli``: the same as ``lorapipe``."""

from lorapipe.cli import main

main()
