"""The documentation keeps up with the code."""

from __future__ import annotations

from pathlib import Path

from flask_tasks.config import TasksConfig

DOCS = Path(__file__).parent.parent / "docs"


def test_every_config_key_is_documented():
    page = (DOCS / "configuration.rst").read_text()
    missing = [key for key in TasksConfig.keys() if f"``{key}``" not in page]
    assert missing == []


def test_every_docs_page_in_the_toctree_exists():
    index = (DOCS / "index.rst").read_text()
    pages = [
        line.strip() for line in index.split(":maxdepth: 2", 1)[1].splitlines() if line.strip()
    ]
    assert pages and all((DOCS / f"{page}.rst").exists() for page in pages), pages
