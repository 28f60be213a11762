"""Run `lgvq train-tokenizer` and SIGKILL the process in the middle of step KILL_AT + 1, after
its gradients are computed and before the optimizer applies them (used by test_trainer.py)."""

import os
import signal
import sys

import lgvq.training.trainer as trainer_module
from lgvq.cli import main

KILL_AT = int(os.environ["LGVQ_TEST_KILL_AT"])
original_step = trainer_module.Trainer._optimizer_step


def step_then_die(self):
    if self.step == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    return original_step(self)


trainer_module.Trainer._optimizer_step = step_then_die
sys.exit(main(sys.argv[1:]))
