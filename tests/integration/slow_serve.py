"""`lorapipe serve` with every forward pass slowed down: a stand-in for a big teacher on a slow CPU.

    python tests/integration/slow_serve.py SECONDS serve --base DIR --adapters DIR --port N ...

Sleeps SECONDS before each of the engine's forward passes (prefill and every decode step), then runs
the `lorapipe` CLI with the remaining arguments, in this process.
"""

from __future__ import annotations

import sys
import time

from lorapipe.serve.engine import Engine


def main() -> None:
    delay = float(sys.argv[1])
    real = Engine._forward

    def slow(self, *args):
        time.sleep(delay)
        return real(self, *args)

    Engine._forward = slow
    sys.argv = ["lorapipe", *sys.argv[2:]]
    from lorapipe.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
