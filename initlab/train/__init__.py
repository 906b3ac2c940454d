"""Training: the one place a config becomes objects (``build``), the training step (``step``), the
chunk planner (``schedule``: no JAX), the device programs and the host loop with its checkpoints
(``loop``), the memory estimate (``memory``) and JAX's compilation cache (``cache``). Nothing here
reads or writes a run folder: the loop hands rows and checkpoints to the sink it is given."""
