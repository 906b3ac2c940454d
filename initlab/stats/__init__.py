"""Statistics: the per-layer statistics registry, its histogram bins and the layout that gathers them on
the device and splits them on the host (``statistics``), and the Jacobian spectrum (``spectrum``).
Reads the network (``initlab.nn``); never a config."""
