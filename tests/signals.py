"""A reporter that signals its own process mid-run: graceful stops without a subprocess."""

import os
import signal

from trainctl.train.progress import QuietReporter


class SignalAtStep(QuietReporter):
    """Sends `signum` to this very process after a given number of training steps."""

    def __init__(self, step: int, signum: int = signal.SIGINT) -> None:
        super().__init__()
        self.step, self.signum, self.count = step, signum, 0

    def advanced(self, loss: float, lr: float, samples_per_s: float) -> None:
        self.count += 1
        if self.count == self.step:
            os.kill(os.getpid(), self.signum)
