"""init_app's startup hints: Celery-style keys it ignores, unsigned messages."""

from __future__ import annotations

import logging
import warnings

import pytest
from flask import Flask

from flask_tasks import Tasks


def make_app(tmp_path, **config):
    app = Flask("hints_app", instance_path=str(tmp_path))
    app.config.update(config)
    return app


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("CELERY_BROKER_URL", "TASKS_BROKER_URL"),
        ("CELERY_RESULT_BACKEND", "TASKS_RESULT_BACKEND"),
        ("CELERY_TASK_SERIALIZER", "TASKS_SERIALIZER"),
        ("CELERY_TASK_ALWAYS_EAGER", "TASKS_ALWAYS_EAGER"),
        ("CELERYBEAT_SCHEDULE", "TASKS_BEAT_SCHEDULE"),
        ("TASK_BROKER_URL", "TASKS_BROKER_URL"),
        ("TASK_DEFAULT_QUEUE", "TASKS_DEFAULT_QUEUE"),
    ],
)
def test_celery_and_task_keys_warn_with_the_key_meant(tmp_path, key, meant):
    app = make_app(tmp_path, SECRET_KEY="k", **{key: "redis://localhost"})
    with pytest.warns(UserWarning, match=f"{key} is in the app config.*use {meant}"):
        Tasks(app)


def test_an_unknown_celery_key_still_warns(tmp_path):
    app = make_app(tmp_path, SECRET_KEY="k", CELERY_WORKER_HIJACK_ROOT_LOGGER=False)
    with pytest.warns(UserWarning, match="ignores it: see the configuration page"):
        Tasks(app)


def test_the_apps_own_task_keys_are_left_alone(tmp_path):
    app = make_app(tmp_path, SECRET_KEY="k", TASK_PAGE_SIZE=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Tasks(app)


def test_a_missing_secret_key_is_logged_at_start(tmp_path, caplog):
    app = make_app(tmp_path)
    with caplog.at_level(logging.WARNING, logger="flask_tasks"):
        Tasks(app)
    assert "no SECRET_KEY, so task messages are not signed" in caplog.text
    assert "TASKS_SIGN_MESSAGES = False" in caplog.text


@pytest.mark.parametrize(
    "config",
    [
        {"SECRET_KEY": "k"},
        {"TASKS_SIGN_MESSAGES": False},
        {"TASKS_ALWAYS_EAGER": True},
        {"TASKS_BROKER_URL": "memory://"},
    ],
)
def test_no_unsigned_warning_when_signed_or_chosen(tmp_path, caplog, config):
    app = make_app(tmp_path, **config)
    with caplog.at_level(logging.WARNING, logger="flask_tasks"):
        Tasks(app)
    assert "not signed" not in caplog.text
