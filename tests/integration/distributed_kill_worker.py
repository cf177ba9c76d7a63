"""`lorapipe` CLI in which rank $KILL_RANK SIGKILLs itself as optimizer step $KILL_AT_STEP + 1 begins.

Used by test_distributed.py as the script of `accelerate launch`, to kill -9 one rank of a real
multi-process run right after a checkpoint was written (no timing games)."""

import os
import signal

import transformers
from transformers import TrainerCallback


class _KillOneRank(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if (state.global_step == int(os.environ["KILL_AT_STEP"])
                and os.environ.get("RANK") == os.environ["KILL_RANK"]):
            os.kill(os.getpid(), signal.SIGKILL)


_init = transformers.Trainer.__init__


def _init_with_kill(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.add_callback(_KillOneRank())


# patch the class itself: `from transformers import Trainer` in lorapipe.train.trainer returns it
transformers.Trainer.__init__ = _init_with_kill

if __name__ == "__main__":
    from lorapipe.cli import main

    main()
