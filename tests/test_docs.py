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


def test_every_public_name_is_in_the_api_reference():
    import flask_tasks

    page = (DOCS / "api.rst").read_text()
    missing = [name for name in flask_tasks.__all__ if f"flask_tasks.{name}" not in page]
    assert missing == []


def test_every_signal_is_on_the_signals_page_with_its_sender():
    from flask_tasks import signals

    page = (DOCS / "signals.rst").read_text()
    entries = page.split("\n``")
    documented = {entry.split("``", 1)[0]: entry for entry in entries[1:]}
    missing = [name for name in signals.__all__ if name not in documented]
    assert missing == []
    assert all("Sender:" in documented[name] for name in signals.__all__)


def test_the_changelog_is_part_of_the_docs():
    page = (DOCS / "changes.rst").read_text()
    assert "../CHANGELOG.md" in page
