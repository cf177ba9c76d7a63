"""``python -m lorapipe``: the CLI, so ``accelerate launch -m lorapipe train CONFIG`` works."""

from lorapipe.cli import main

main()
