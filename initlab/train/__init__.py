"""Training: the one place a config becomes objects (``build``), the training step (``step``), the
chunk planner (``schedule``: no JAX), the training program (``program``), a chunk's device loop
(``chunk``), group batching (``group``), the group's jitted programs (``device``), evaluation
(``evaluate``), each run's host-side record (``book``), checkpoint payloads (``checkpoint``), the
host loop (``loop``), the memory estimate (``memory``) and JAX's compilation cache (``cache``).
Nothing here reads or writes a run folder: the loop hands rows and checkpoints to the sink it is
given."""
