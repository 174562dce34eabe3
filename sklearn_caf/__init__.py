"""sklearn-caf: what a convolutional network looks at, behind scikit-learn's estimator API.

Explainers turn images into heatmaps (``fit`` binds the model, ``transform`` explains);
:class:`HeatmapBoxes` turns heatmaps into boxes; :mod:`sklearn_caf.metrics` scores them.
The core never imports a deep-learning framework: backends (``sklearn-caf-torch``) do.
"""

from ._explainers import (
    BRNPAParts,
    BRNPAPooling,
    DeadFilterWarning,
    Explanation,
    GradCAMExplainer,
    L2CAFExplainer,
)
from .boxes import HeatmapBoxes
from .features import FeatureMapExtractor

__version__ = "0.1.0.dev0"

__all__ = [
    "BRNPAParts",
    "BRNPAPooling",
    "DeadFilterWarning",
    "Explanation",
    "FeatureMapExtractor",
    "GradCAMExplainer",
    "HeatmapBoxes",
    "L2CAFExplainer",
    "__version__",
]
