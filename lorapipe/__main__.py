"""``python -m lorapipe``: the CLI, so ``accelerate launch -m lorapipe train CONFIG`` works."""

from lorapipe.cli import main

if __name__ == "__main__":  # not when multiprocessing's spawn imports it as __mp_main__
    main()
