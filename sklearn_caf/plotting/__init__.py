"""Pictures of explanations: heatmap overlays, boxes, contact sheets and figures.

Everything here works on plain ``uint8`` RGB arrays of shape (height, width, 3) and returns
new arrays; inputs are never modified. The colormap ``"jet"`` is built in, so overlays need
only numpy; :func:`draw_box` and :func:`image_grid` need Pillow, and colormaps other than
``"jet"`` need matplotlib. Both are imported only when called.
"""

from ._figures import (
    plot_deletion_insertion,
    plot_localization_examples,
    plot_model_randomization,
    plot_threshold_curves,
)
from ._images import (
    apply_colormap,
    display_image,
    draw_box,
    image_grid,
    overlay_heatmap,
    overlay_part_maps,
    part_map_rgb,
)

__all__ = [
    "apply_colormap",
    "display_image",
    "draw_box",
    "image_grid",
    "overlay_heatmap",
    "overlay_part_maps",
    "part_map_rgb",
    "plot_deletion_insertion",
    "plot_localization_examples",
    "plot_model_randomization",
    "plot_threshold_curves",
]
