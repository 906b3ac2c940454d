"""Theory: Gaussian expectations and root finding (``quadrature``), mean-field signal propagation
(``mean_field``) and kernel shaping (``shaping``). Plain numbers and registry names in, numbers out;
never a config (``initlab.train.theory_inputs`` turns one into these numbers) and never training."""
