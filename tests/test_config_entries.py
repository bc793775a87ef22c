"""``init_app`` checks the values inside ``TASKS_ROUTES`` and ``TASKS_ANNOTATIONS``."""

from __future__ import annotations

import re

import pytest
from flask import Flask

from flask_tasks import Task, Tasks
from flask_tasks.config_entries import ANNOTATION_CHECKS, parse_rate
from flask_tasks.exceptions import ImproperlyConfigured


def make_app(**config: object) -> Flask:
    app = Flask(__name__)
    app.config.update(TASKS_BROKER_URL="memory://", **config)
    return app


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        ({"*add": 5}, "TASKS_ROUTES['*add'] must be a queue name or a dict"),
        ({"*add": ""}, "TASKS_ROUTES['*add'] is an empty queue name"),
        ({"*add": {"queue": 3}}, "TASKS_ROUTES['*add']['queue'] must be a non-empty queue"),
        ({"*add": {"priority": 10}}, "TASKS_ROUTES['*add']['priority'] must be an int from 0"),
        ({"*add": {"queues": "a"}}, "TASKS_ROUTES['*add'] has unknown keys ['queues']"),
        ({5: "a"}, "TASKS_ROUTES keys must be task names, got 5"),
    ],
)
def test_bad_route_names_the_entry(routes, expected):
    with pytest.raises(ImproperlyConfigured, match=re.escape(expected)):
        Tasks(make_app(TASKS_ROUTES=routes))


def test_good_routes_pass():
    Tasks(make_app(TASKS_ROUTES={"a.*": "q", "b": {"queue": "x", "priority": 2}, "c": {}}))


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        (
            {"*add": {"rate_limit": "fast"}},
            "TASKS_ANNOTATIONS['*add']['rate_limit'] must be a rate",
        ),
        ({"*add": {"rate_limit": -1}}, "['rate_limit'] must be a rate"),
        ({"*": {"time_limit": "1s"}}, "TASKS_ANNOTATIONS['*']['time_limit'] must be a positive"),
        ({"*": {"priority": 11}}, "['priority'] must be an int from 0 to 9"),
        ({"*": {"acks_late": "yes"}}, "['acks_late'] must be True, False or None"),
        ({"*": {"rate_limt": "1/s"}}, "sets unknown task option 'rate_limt'; task options are:"),
        ({"*": "10/s"}, "TASKS_ANNOTATIONS['*'] must be a dict of task options"),
        ({None: {}}, "TASKS_ANNOTATIONS keys must be task names, got None"),
    ],
)
def test_bad_annotation_names_the_entry(annotations, expected):
    with pytest.raises(ImproperlyConfigured, match=re.escape(expected)):
        Tasks(make_app(TASKS_ANNOTATIONS=annotations))


def test_good_annotations_pass():
    Tasks(make_app(TASKS_ANNOTATIONS={"*": {"rate_limit": "10/m", "time_limit": 5, "queue": "q"}}))


def test_annotation_checks_cover_every_task_option():
    assert set(ANNOTATION_CHECKS) == set(Task.OPTIONS) - {"name", "bind"}


def test_parse_rate():
    assert parse_rate("10/s") == (10.0, 1.0)
    assert parse_rate("100/m") == (100.0, 60.0)
    assert parse_rate(5) == (5.0, 1.0)
    assert parse_rate(None) is None
    assert parse_rate("0/s") is None
    with pytest.raises(ValueError, match="'fast' is not a rate"):
        parse_rate("fast")
