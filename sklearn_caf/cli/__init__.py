"""The ``sklearn-caf`` command.

``sklearn-caf demo`` explains a pretrained ImageNet classifier (EfficientNet-Lite0, shipped in
a PyPI package, so nothing is downloaded) on the sample photos of scikit-image and
scikit-learn with three methods, and writes overlays, a contact sheet and a CSV table.

Nothing heavy is imported with this module: the demo lives in the PyTorch backend
(:mod:`sklearn_caf_torch.demo`) and is imported when the subcommand runs, so
``sklearn-caf --help`` is instant and works without torch.
"""

from .._demo_options import RESULT_COLUMNS
from ._main import main

__all__ = ["RESULT_COLUMNS", "main"]
