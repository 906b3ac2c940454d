"""The network and the registries it is made of: number formats and loss scaling (``formats``,
``loss_scale``), activations, initializers, normalizations, regularizers, weight
reparameterizations, parameterizations, optimizers, schedules and losses (each a registry), the
parameter pytrees (``params``), the MLP itself (``model``) and whole-network initialization schemes
(``network_init``). Nothing here reads a config."""
