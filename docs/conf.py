"""Sphinx configuration for sklearn-caf.

Builds offline: no intersphinx inventories, no theme option that fetches anything.
Build with ``tox -e docs`` or ``sphinx-build -W -b html docs docs/_build/html``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from docutils import nodes

import sklearn_caf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # gallery_order

project = "sklearn-caf"
author = "The sklearn-caf developers"
copyright = "the sklearn-caf developers"
release = sklearn_caf.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "matplotlib.sphinxext.plot_directive",
]

# -- plot directive: the guide's figures and the plotting functions' pictures ---------------
# Drawn at build time (``.. plot::`` in the pages and in the docstrings' Examples).
plot_formats = [("png", 110)]
plot_html_show_formats = False
plot_html_show_source_link = False
plot_include_source = True
plot_rcparams = {"savefig.bbox": "tight"}
plot_pre_code = "import numpy as np\nimport matplotlib.pyplot as plt\n"

# -- sphinx-gallery: docs/examples/plot_*.py are run at build time ---------------------------
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "gallery_order.ExampleOrder",
    "image_scrapers": ("matplotlib",),
    "download_all_examples": False,
    "remove_config_comments": True,
    # Examples train small networks on the CPU: keep each one honest about its cost.
    "min_reported_time": 1,
    # "Examples using X" on every API page (the minigallery in docs/_templates).
    "backreferences_dir": "api/generated/backreferences",
    "doc_module": ("sklearn_caf", "sklearn_caf_torch", "sklearn_caf_tensorflow"),
    # Names in the examples' code link to their API pages.
    "reference_url": {"sklearn_caf": None},
    "matplotlib_animations": False,
    "show_memory": False,
}

# -- autodoc / autosummary -----------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
# Type hints are in the numpydoc "Parameters" sections already.
autodoc_typehints = "none"

# -- numpydoc --------------------------------------------------------------------------------
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# Every public parameter documented and described, every docstring with a summary and
# described return values: the build fails otherwise (-W). numpydoc does not check
# "Attributes" sections; tests/test_docstrings.py does (fitted attributes, result fields).
numpydoc_validation_checks = {
    "GL08",  # no docstring
    "PR01",  # a parameter not documented
    "PR02",  # a documented parameter the signature no longer has
    "PR07",  # a parameter without a description
    "PR10",  # "x: int" (missing space before the colon)
    "RT03",  # a return value without a description
    "SS01",  # no summary line
    "SS03",  # summary without a final period
}
numpydoc_validation_exclude = {
    r"\.__\w+__$",  # dunder methods
    r"\._\w+$",  # private helpers
    # Methods inherited from scikit-learn, documented (and validated) by scikit-learn.
    r"\.(get_params|set_params|set_output|get_metadata_routing|set_\w+_request)$",
    # Protocol classes: the PR01 finding is typing.Protocol's generated (*args, **kwargs).
    r"^sklearn_caf\.backend\.(Backend|BoundModel)$",
    # Result containers (dataclasses / NamedTuples the library builds, never the user):
    # their constructor arguments are their fields, documented under "Attributes" and
    # checked field by field in tests/test_docstrings.py.
    r"^sklearn_caf\.(Explanation|BRNPAParts)$",
    r"^sklearn_caf\.metrics\.MaxBoxAccuracy$",
    r"^sklearn_caf\.evaluation\.LocalizationReport$",
    r"^sklearn_caf\.datasets\.ModelPreset$",
    r"^sklearn_caf_torch\.brnpa\.BRNPAOutput(\.\w+)?$",  # and its fields' generated docs
    # Built by its from_* constructors; __init__ is not for direct use (its keyword
    # arguments are internal state, documented as the public Attributes).
    r"^sklearn_caf\.datasets\.ImageBoxDataset$",
    # A NumPy array: the docstring autodoc finds is ndarray's own.
    r"^sklearn_caf\.metrics\.DEFAULT_THRESHOLDS$",
}

# -- general ---------------------------------------------------------------------------------
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "examples"]
default_role = "py:obj"
nitpicky = False
pygments_style = "sphinx"

# -- HTML ------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sklearn-caf {release}"
html_static_path: list[str] = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    # The page's own contents on the right; no "edit this page" or source links.
    "secondary_sidebar_items": ["page-toc"],
}
# The left sidebar lists a section's sub-pages: the API reference and the gallery have
# them, the other top-level pages (user guide, backends, the topic pages...) do not, and
# an empty sidebar only narrows their text and code. Every top-level page but the API
# reference goes without one (the gallery's index is under auto_examples/).
html_sidebars = {page.stem: [] for page in HERE.glob("*.rst") if page.stem != "api"}
html_show_sourcelink = False
# MathJax is loaded by the reader's browser; the build itself needs no network.


# -- scikit-learn's own docstrings ------------------------------------------------------------
# The estimators' pages show the methods they inherit from scikit-learn (get_params,
# set_output, set_transform_request...), whose docstrings refer to labels of scikit-learn's
# documentation. Point those at scikit-learn's site instead of warning (a plain link: nothing
# is fetched at build time).
_SKLEARN = "https://scikit-learn.org/stable/"
_SKLEARN_REFS = {
    ("ref", "metadata_routing"): "metadata_routing.html",
    ("ref", "df_output_transform"): "auto_examples/miscellaneous/plot_set_output.html",
    (
        "ref",
        "sphx_glr_auto_examples_miscellaneous_plot_set_output.py",
    ): "auto_examples/miscellaneous/plot_set_output.html",
    ("term", "meta-estimator"): "glossary.html#term-meta-estimator",
    ("term", "meta-estimators"): "glossary.html#term-meta-estimators",
}


def _sklearn_reference(app, env, node, contnode):
    if node.get("refdomain") != "std":
        return None
    page = _SKLEARN_REFS.get((node.get("reftype"), node.get("reftarget", "").lower()))
    if page is None:
        return None
    text = contnode.astext() if contnode is not None else node["reftarget"]
    return nodes.reference(text, text, internal=False, refuri=_SKLEARN + page)


def setup(app):
    app.connect("missing-reference", _sklearn_reference)
