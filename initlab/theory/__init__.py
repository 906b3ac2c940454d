"""Theory: mean-field signal propagation and its predictions for a config (``mean_field``), and kernel
shaping (``shaping``). Numbers and registry entries in, numbers out; never training."""
