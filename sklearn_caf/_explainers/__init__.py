"""The explainers: the estimator binding a model, the base class, and each method.

``_model_estimator`` binds a model through its backend (fit, pickling, cloning);
``_base`` holds :class:`BaseExplainer` and :class:`Explanation` (batches, targets,
post-processing); ``_validation`` the input checks; ``_frames`` the per-frame rows of clips;
``_heatmaps`` resizing and normalizing raw maps; then one module per method: ``_gradcam``,
``_brnpa`` and the ``l2caf`` package.

The names below are what the rest of sklearn-caf (and, for BR-NPA's math, the backends) take
from here; the public ones are re-exported by :mod:`sklearn_caf`.
"""

from ._base import BaseExplainer, Explanation
from ._brnpa import EPS, BRNPAParts, BRNPAPooling, check_layer_params, representative_vectors
from ._gradcam import GradCAMExplainer
from ._heatmaps import resize_maps
from ._model_estimator import ModelEstimator
from ._validation import check_images, check_targets
from .l2caf import DeadFilterWarning, L2CAFExplainer

__all__ = [
    "EPS",
    "BRNPAParts",
    "BRNPAPooling",
    "BaseExplainer",
    "DeadFilterWarning",
    "Explanation",
    "GradCAMExplainer",
    "L2CAFExplainer",
    "ModelEstimator",
    "check_images",
    "check_layer_params",
    "check_targets",
    "representative_vectors",
    "resize_maps",
]
