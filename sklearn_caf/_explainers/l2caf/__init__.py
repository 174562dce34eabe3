"""L2-CAF (Taha et al., ECCV 2020): the explainer and its solvers.

``_explainer`` binds the model and explains batches; ``_problem`` is what it minimizes (the
filter under its constraint, the loss of Eq. 1 or Eq. 2, dead starts); the solvers are
``_exact`` (closed form on the unit sphere for heads affine in the filter), ``_adam`` (the
authors' schedule, rows converging independently), ``_lbfgs`` (on the sphere) and
``_adam_lbfgs`` (Adam until each map settles, then L-BFGS).
"""

from ._explainer import DeadFilterWarning, L2CAFExplainer

__all__ = ["DeadFilterWarning", "L2CAFExplainer"]
