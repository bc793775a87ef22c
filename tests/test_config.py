"""init_app validation: every TASKS_* key, defaults, and the errors users meet first."""

from __future__ import annotations

import os
import sys

import pytest
from flask import Flask

from flask_tasks import ImproperlyConfigured, Tasks
from flask_tasks.config import TasksConfig


def make_app(**config):
    app = Flask("config_app")
    app.config.update(config)
    return app


def test_defaults_follow_the_spec(tmp_path):
    app = Flask("config_app", instance_path=str(tmp_path))
    Tasks(app)
    state = app.extensions["tasks"]
    assert state.config.default_queue == "default"
    assert state.config.result_expires == 86400
    assert state.config.visibility_timeout == 3600
    assert state.config.acks_late is True
    assert state.config.accept_content == ("json",)
    assert state.config.url_prefix == "/tasks"
    assert state.connections.broker_url == "sqlite:///" + os.path.join(
        str(tmp_path), "tasks.sqlite3"
    )


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("TASKS_RESULT_EXPIRES", "a day", "TASKS_RESULT_EXPIRES must be a number of seconds"),
        ("TASKS_ALWAYS_EAGER", "yes", "TASKS_ALWAYS_EAGER must be True or False"),
        ("TASKS_SERIALIZER", "yaml", "TASKS_SERIALIZER must be one of"),
        ("TASKS_COMPRESSION", "gzip", "TASKS_COMPRESSION must be None or one of"),
        ("TASKS_VISIBILITY_TIMEOUT", 0, "TASKS_VISIBILITY_TIMEOUT must be a positive number"),
        ("TASKS_ROUTES", ["a"], "TASKS_ROUTES must be a dict"),
        ("TASKS_URL_PREFIX", "tasks", "TASKS_URL_PREFIX must be a path starting with /"),
        ("TASKS_TOKEN_SCOPE", "user", "TASKS_TOKEN_SCOPE must be a callable"),
        ("TASKS_MESSAGE_MAX_BYTES", True, "TASKS_MESSAGE_MAX_BYTES must be a positive number"),
    ],
)
def test_wrong_type_names_the_key(key, value, expected):
    with pytest.raises(ImproperlyConfigured, match=expected):
        Tasks(make_app(**{key: value}))


def test_unknown_key_is_refused_with_a_suggestion():
    with pytest.raises(
        ImproperlyConfigured, match="TASKS_RESULT_EXPIRE.*did you mean TASKS_RESULT_EXPIRES"
    ):
        Tasks(make_app(TASKS_RESULT_EXPIRE=10))


def test_pickle_needs_to_be_listed():
    with pytest.raises(ImproperlyConfigured, match="TASKS_ACCEPT_CONTENT"):
        Tasks(make_app(TASKS_SERIALIZER="pickle"))
    app = make_app(TASKS_SERIALIZER="pickle", TASKS_ACCEPT_CONTENT=["json", "pickle"])
    Tasks(app)
    assert app.extensions["tasks"].codec.serializer == "pickle"


def test_unknown_serializer_in_accept_content():
    with pytest.raises(ImproperlyConfigured, match="unknown serializers"):
        Tasks(make_app(TASKS_ACCEPT_CONTENT=["json", "yaml"]))


def test_constructor_defaults_and_config_precedence():
    app = make_app(TASKS_DEFAULT_QUEUE="from-config")
    Tasks(app, default_queue="from-kwargs", result_expires=60)
    config = app.extensions["tasks"].config
    assert config.default_queue == "from-config"
    assert config.result_expires == 60


def test_unknown_constructor_option():
    with pytest.raises(ImproperlyConfigured, match="unknown option 'broker_ur'.*broker_url"):
        Tasks(make_app(), broker_ur="memory://")


def test_sign_messages_without_secret_key():
    with pytest.raises(ImproperlyConfigured, match="no SECRET_KEY"):
        Tasks(make_app(TASKS_SIGN_MESSAGES=True))


def test_signing_follows_secret_key():
    signed = make_app(SECRET_KEY="k")
    unsigned = make_app()
    Tasks(signed)
    Tasks(unsigned)
    assert signed.extensions["tasks"].codec.signs
    assert not unsigned.extensions["tasks"].codec.signs


def test_unknown_broker_scheme():
    app = make_app(TASKS_BROKER_URL="kafka://guest:pw@localhost//")
    with pytest.raises(
        ImproperlyConfigured, match=r"TASKS_BROKER_URL .*unknown scheme 'kafka'.*redis://"
    ) as info:
        Tasks(app)
    assert "pw" not in str(info.value)
    assert "tasks" not in app.extensions


def test_amqp_broker_without_result_backend_says_so_with_an_example():
    app = make_app(TASKS_BROKER_URL="amqp://guest:pw@localhost//")
    with pytest.raises(ImproperlyConfigured) as info:
        Tasks(app)
    message = str(info.value)
    assert message.startswith("TASKS_BROKER_URL 'amqp://guest:***@localhost//' is RabbitMQ")
    assert 'set TASKS_RESULT_BACKEND to a store, for example TASKS_RESULT_BACKEND = "redis://' in (
        message
    )
    assert "pw" not in message
    assert "tasks" not in app.extensions


def test_amqp_is_no_result_backend():
    app = make_app(TASKS_BROKER_URL="memory://", TASKS_RESULT_BACKEND="amqps://u:pw@rabbit/v")
    with pytest.raises(
        ImproperlyConfigured,
        match=r"TASKS_RESULT_BACKEND 'amqps://u:\*\*\*@rabbit/v' is RabbitMQ.*keeps no results; use a store",
    ):
        Tasks(app)


def test_amqp_with_a_result_backend_is_accepted_without_connecting():
    app = make_app(
        TASKS_BROKER_URL="amqp://guest:guest@127.0.0.1:1//", TASKS_RESULT_BACKEND="memory://"
    )
    Tasks(app)  # nothing listens on port 1: init_app does not connect
    assert app.extensions["tasks"].connections.broker_url.startswith("amqp://")


def test_amqp_without_pika_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pika", None)  # as if the extra were not installed
    app = make_app(TASKS_BROKER_URL="amqp://localhost//", TASKS_RESULT_BACKEND="memory://")
    with pytest.raises(ImproperlyConfigured, match=r"pip install 'Flask-Tasks\[amqp\]'"):
        Tasks(app)


def test_unknown_backend_scheme_fails_in_init_app():
    app = make_app(TASKS_BROKER_URL="memory://", TASKS_RESULT_BACKEND="rpc://")
    with pytest.raises(ImproperlyConfigured, match=r"TASKS_RESULT_BACKEND 'rpc://' has an unknown"):
        Tasks(app)


def test_second_init_app_on_the_same_app_raises():
    app = make_app(TASKS_BROKER_URL="memory://")
    tasks = Tasks(app)
    with pytest.raises(ImproperlyConfigured, match="already initialized"):
        tasks.init_app(app)
    with pytest.raises(ImproperlyConfigured, match="already initialized"):
        Tasks(app)


def test_registry_is_read_only_and_live():
    tasks = Tasks()
    assert dict(tasks.registry) == {}

    @tasks.task(name="later.declared")
    def later():
        return 1

    assert list(tasks.registry) == ["later.declared"]
    with pytest.raises(TypeError):
        tasks.registry["other"] = later  # type: ignore[index]


def test_every_key_is_known():
    assert "TASKS_BROKER_URL" in TasksConfig.keys()
    assert len(TasksConfig.keys()) == len(set(TasksConfig.keys()))


def test_one_extension_serves_several_apps():
    tasks = Tasks()

    @tasks.task
    def which():
        from flask import current_app

        return current_app.name

    first, second = Flask("first"), Flask("second")
    for app in (first, second):
        app.config["TASKS_ALWAYS_EAGER"] = True
        tasks.init_app(app)
    with first.app_context():
        assert which.delay().get() == "first"
    with second.app_context():
        assert which.delay().get() == "second"


def test_forgotten_init_app_says_so():
    tasks = Tasks()

    @tasks.task
    def noop():
        return None

    with Flask("bare").app_context(), pytest.raises(RuntimeError, match="call tasks.init_app"):
        noop.delay()


def test_outside_app_context_says_how_to_fix():
    tasks = Tasks()

    @tasks.task
    def noop():
        return None

    with pytest.raises(RuntimeError, match="app.app_context"):
        noop.delay()


def test_unknown_timezone_is_refused_at_init_app():
    app = make_app(TASKS_BROKER_URL="memory://", TASKS_TIMEZONE="Mars/Olympus_Mons")
    with pytest.raises(ImproperlyConfigured, match="TASKS_TIMEZONE.*Mars/Olympus_Mons"):
        Tasks(app)
