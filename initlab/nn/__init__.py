"""The network: number formats, activations, initializers, normalizations, regularizers, weight
reparameterizations, parameterizations, optimizers and losses (each a registry), the parameter
pytrees (``params``), the MLP itself (``model``) and whole-network initialization schemes
(``network_init``). Imports registries and errors only; never a config."""
