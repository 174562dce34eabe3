"""The one module that imports scikit-learn's private API.

``_fit_context`` and the parameter constraints of ``sklearn.utils._param_validation`` are what
scikit-learn's own estimators use; they are private there, so a scikit-learn release may move
them. Everything in sklearn-caf takes them from here: such a change is one edit.
"""

from sklearn.base import _fit_context as fit_context
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

__all__ = ["Interval", "StrOptions", "fit_context", "validate_params"]
