"""Training that survives faults: preemption, dead or hung ranks, bad numerics.

- `exit_codes`: the codes launch scripts act on (EXIT_REQUEUE = 42, ...) and the exit-status file.
- `preemption`: signals and the time budget become one stop decision all ranks agree on.
- `watchdog`: per-rank heartbeats in the rendezvous store; a dead or hung rank stops the job
  with a message naming it, its step and its phase.
- `numerics`: NaN/Inf/spike checks between gradient reduction and the optimizer update.
- `badsteps`: what a bad step is logged with (data position, samples, documents).
- `control`: the one object the training loop talks to.
- `inject`: test-only fault hooks, read from `MEGACODE_TEST_*` environment variables.
"""

from megacode.resilience.exit_codes import EXIT_BAD_NUMERICS, EXIT_OK, EXIT_PEER_FAILURE, EXIT_REQUEUE

__all__ = ["EXIT_BAD_NUMERICS", "EXIT_OK", "EXIT_PEER_FAILURE", "EXIT_REQUEUE"]
