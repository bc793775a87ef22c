"""Sphinx configuration for the Flask-Tasks documentation."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "Flask-Tasks"
author = "The Flask-Tasks developers"
copyright = "2026, The Flask-Tasks developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
html_theme = "alabaster"
exclude_patterns = ["_build"]
