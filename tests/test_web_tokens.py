"""Status tokens: signing, tampering, expiry, scope binding, key rotation, raw ids."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, session
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from flask_tasks import Tasks
from flask_tasks.exceptions import ImproperlyConfigured
from flask_tasks.web.tokens import SALT

tasks = Tasks()


@tasks.task
def noop() -> None:
    """Never run here: only sent, so that a PENDING record exists."""


def make_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update({"SECRET_KEY": "current-key", "TASKS_BROKER_URL": "memory://", **config})
    tasks.init_app(app)
    return app


@pytest.fixture
def app() -> Iterator[Flask]:
    app = make_app()
    yield app
    app.extensions["tasks"].close()


def send_and_url(app: Flask, **request: Any) -> str:
    with app.test_request_context(**request):
        return tasks.status_url(noop.delay())


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_status_url_carries_a_signed_token(app: Flask) -> None:
    with app.test_request_context():
        result = noop.delay()
        url = tasks.status_url(result)
        assert url.startswith("/tasks/")
        assert result.id not in url  # the id travels only inside the signed token
        assert tasks.status_url(result.id).startswith("/tasks/")
    payload = URLSafeTimedSerializer("current-key", salt=SALT).loads(token_of(url))
    assert payload == [result.id]
    assert app.test_client().get(url).json["id"] == result.id


def test_external_url_and_jinja_global(app: Flask) -> None:
    with app.test_request_context(base_url="https://example.test/"):
        result = noop.delay()
        assert tasks.status_url(result, _external=True).startswith("https://example.test/tasks/")
        rendered = app.jinja_env.from_string("{{ tasks_status_url(r) }}").render(r=result)
    assert rendered.startswith("/tasks/")
    assert app.test_client().get(rendered).status_code == 200


def test_missing_secret_key_is_a_clear_error() -> None:
    app = make_app(SECRET_KEY=None)
    with app.test_request_context(), pytest.raises(ImproperlyConfigured, match="SECRET_KEY"):
        tasks.status_url(noop.delay())


@pytest.mark.parametrize(
    "mangle",
    [
        lambda token: token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # signature
        lambda token: "W" + token[1:] if token[0] != "W" else "X" + token[1:],  # payload
        lambda token: token.split(".")[0],  # no signature at all
        lambda token: "not-a-token",
    ],
    ids=["signature", "payload", "unsigned", "garbage"],
)
def test_tampered_token_is_400(app: Flask, mangle: Any) -> None:
    url = send_and_url(app)
    response = app.test_client().get("/tasks/" + mangle(token_of(url)))
    assert response.status_code == 400
    assert response.json == {"error": "bad_token", "message": "This status link is not valid."}
    assert response.headers["Cache-Control"] == "no-store"


def test_token_for_other_salt_or_shape_is_400(app: Flask) -> None:
    client = app.test_client()
    other_salt = URLSafeTimedSerializer("current-key", salt="itsdangerous").dumps(["x"])
    assert client.get(f"/tasks/{other_salt}").status_code == 400
    wrong_shape = URLSafeTimedSerializer("current-key", salt=SALT).dumps({"id": "x"})
    assert client.get(f"/tasks/{wrong_shape}").status_code == 400


def test_expired_token_is_410(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    original = TimestampSigner.get_timestamp
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) - 86401)
    url = send_and_url(app)
    monkeypatch.setattr(TimestampSigner, "get_timestamp", original)
    response = app.test_client().get(url)
    assert response.status_code == 410
    assert response.json["error"] == "expired"


def test_token_max_age_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(TASKS_TOKEN_MAX_AGE=60)
    original = TimestampSigner.get_timestamp
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) - 61)
    url = send_and_url(app)
    monkeypatch.setattr(TimestampSigner, "get_timestamp", original)
    assert app.test_client().get(url).status_code == 410


def test_key_rotation_with_fallbacks(tmp_path: Path) -> None:
    shared = f"sqlite:///{tmp_path / 'tasks.sqlite3'}"  # one store, several app configs
    old_app = make_app(SECRET_KEY="old-key", TASKS_BROKER_URL=shared)
    url = send_and_url(old_app)
    # Same store, new key; the old key is a fallback: old links keep working.
    rotated = make_app(
        SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"], TASKS_BROKER_URL=shared
    )
    assert rotated.test_client().get(url).status_code == 200
    new_url = send_and_url(rotated)
    assert URLSafeTimedSerializer("new-key", salt=SALT).loads(token_of(new_url))
    # Once the old key is dropped, its links are refused.
    dropped = make_app(SECRET_KEY="new-key", TASKS_BROKER_URL=shared)
    assert dropped.test_client().get(url).status_code == 400
    assert dropped.test_client().get(new_url).status_code == 200
    for app in (old_app, rotated, dropped):
        app.extensions["tasks"].close()


def scoped_app() -> Flask:
    app = make_app(TASKS_TOKEN_SCOPE=lambda: session.get("user"))

    @app.post("/login/<user>")
    def login(user: str) -> str:
        session["user"] = user
        return "ok"

    return app


def test_scope_binds_token_to_its_user() -> None:
    app = scoped_app()
    alice, bob, anonymous = app.test_client(), app.test_client(), app.test_client()
    alice.post("/login/alice")
    bob.post("/login/bob")
    with alice:  # make the URL inside alice's request, so the scope is hers
        alice.get("/tasks/none")
        url = tasks.status_url(noop.delay())
    assert alice.get(url).status_code == 200
    for other in (bob, anonymous):
        response = other.get(url)
        assert response.status_code == 403
        assert response.json["error"] == "forbidden"
        assert response.headers["Cache-Control"] == "no-store"
        assert other.get(url + "/events").status_code == 403


def test_scope_value_is_not_readable_from_the_token() -> None:
    app = scoped_app()
    client = app.test_client()
    client.post("/login/alice@example.test")
    with client:
        client.get("/tasks/none")
        url = tasks.status_url(noop.delay())
    payload = URLSafeTimedSerializer("current-key", salt=SALT).loads(token_of(url))
    assert len(payload) == 2
    assert "alice" not in payload[1]


def test_token_made_without_scope_is_refused_once_scope_is_on(app: Flask) -> None:
    url = send_and_url(app)
    scoped = make_app(TASKS_TOKEN_SCOPE=lambda: None)
    scoped.extensions["tasks"]._broker = app.extensions["tasks"].transport
    assert scoped.test_client().get(url).status_code == 403


def test_raw_ids_refused_by_default(app: Flask) -> None:
    with app.app_context():
        result = noop.delay()
    response = app.test_client().get(f"/tasks/{result.id}")
    assert response.status_code == 400


def test_raw_ids_accepted_when_allowed() -> None:
    app = make_app(TASKS_ALLOW_RAW_IDS=True)
    with app.app_context():
        result = noop.delay()
    client = app.test_client()
    assert client.get(f"/tasks/{result.id}").json["id"] == result.id
    assert client.get("/tasks/never-sent").status_code == 404
    # Signed tokens still work too.
    assert client.get(send_and_url(app)).status_code == 200


def test_raw_ids_work_without_secret_key() -> None:
    app = make_app(SECRET_KEY=None, TASKS_ALLOW_RAW_IDS=True)
    with app.app_context():
        result = noop.delay()
    assert app.test_client().get(f"/tasks/{result.id}").status_code == 200


def test_without_secret_key_every_token_is_refused() -> None:
    app = make_app(SECRET_KEY=None)
    token = URLSafeTimedSerializer("guess", salt=SALT).dumps(["x"])
    assert app.test_client().get(f"/tasks/{token}").status_code == 400
