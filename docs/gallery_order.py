"""The order of the gallery's examples: a reading path, from first contact to the details.

sphinx-gallery calls ``ExampleOrder(src_dir)(filename)`` for each ``plot_*.py`` and sorts
by the key. Examples not listed here come after the listed ones, by file name, so a new
example appears without a change here (and can be placed by adding its name).
"""

from __future__ import annotations

ORDER = [
    # First contact: a pretrained network on photos, the methods side by side.
    "plot_pretrained_efficientnet.py",
    "plot_l2caf_vs_gradcam.py",
    # Other networks: retrieval embeddings, Keras.
    "plot_retrieval_embedding.py",
    "plot_keras_model.py",
    # Variants of the method and other inputs.
    "plot_l2caf_constraints.py",
    "plot_frames.py",
    # Measuring: localization, sanity checks, faithfulness.
    "plot_evaluate_localization.py",
    "plot_sanity_checks.py",
    "plot_deletion_insertion.py",
    # Attention built into the network.
    "plot_brnpa_parts.py",
]


class ExampleOrder:
    """Sort key: the position in :data:`ORDER`, then the file name for unlisted examples."""

    def __init__(self, src_dir: str) -> None:
        self.src_dir = src_dir

    def __repr__(self) -> str:  # sphinx-gallery compares configurations by their repr
        return "<ExampleOrder>"

    def __call__(self, filename: str) -> tuple[int, str]:
        name = str(filename).rsplit("/", 1)[-1]
        return (ORDER.index(name) if name in ORDER else len(ORDER), name)
