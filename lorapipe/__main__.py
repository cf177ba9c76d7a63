"""``python -m lorapipe``: the CLI, so ``accelerate launch -m lorapipe train CONFIG`` works."""

from lorapipe.cli import main

if __name__ == "__main__":  # not when imported (e.g. as multiprocessing's __mp_main__)
    main()
