"""Training: the one place a config becomes objects (``build``), the training step (``step``), loss
scaling, the chunk planner (``schedule``: no JAX), the device programs and host loop with their
checkpoints (``loop``), the memory estimate (``memory``) and JAX's compilation cache (``cache``).
Nothing here reads or writes a run folder."""
