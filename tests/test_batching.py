"""``tasks.batch()`` and ``TASKS_BATCH_PER_REQUEST``: messages held in an app context and
published together, on a redis-server of this module's own (round trips counted by it)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from redis_server import free_port, redis_server

from flask_tasks import EncodeError, ImproperlyConfigured, OperationalError, Tasks, states
from flask_tasks.runtime import Runtime
from flask_tasks.worker.consumer import Consumer


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def client(server_url: str) -> Iterator[redis.Redis]:
    made = redis.Redis.from_url(server_url)
    made.flushall()
    yield made
    made.close()


def make_app(url: str, **config: Any) -> tuple[Flask, Tasks]:
    app = Flask(__name__)
    app.config.update(TASKS_BROKER_URL=url, SECRET_KEY="batching", **config)
    tasks = Tasks(app)

    @tasks.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    return app, tasks


@pytest.fixture
def made(server_url: str, client: redis.Redis) -> Iterator[tuple[Flask, Tasks]]:
    app, tasks = make_app(server_url)
    yield app, tasks
    app.extensions["tasks"].close()


def queued(app: Flask) -> int:
    runtime: Runtime = app.extensions["tasks"]
    return runtime.transport.queue_length("default")


def round_trips(client: redis.Redis, action: Any) -> int:
    """Requests the server read while ``action`` ran (its own INFO calls excluded)."""
    client.config_resetstat()
    before = int(client.info("stats")["total_reads_processed"])
    action()
    return int(client.info("stats")["total_reads_processed"]) - before - 1


def test_a_batch_publishes_everything_at_its_end_in_one_request(
    made: tuple[Flask, Tasks], client: redis.Redis
) -> None:
    app, tasks = made
    add = tasks.registry["add"]
    with app.app_context():
        add.delay(0, 0)  # connects and loads the scripts: not counted below
        results = []
        with tasks.batch():
            results.append(add.delay(1, 1))
            assert queued(app) == 1  # nothing of the block's sent yet

            def send_ten() -> None:
                results.extend(add.delay(n, 1) for n in range(10))

            assert round_trips(client, send_ten) == 0
        assert queued(app) == 12

        def send_ten_in_a_batch() -> None:
            with tasks.batch():
                results.extend(add.delay(n, 1) for n in range(10))

        assert round_trips(client, send_ten_in_a_batch) == 1
        assert queued(app) == 22
        assert len({result.id for result in results}) == 21
        records = app.extensions["tasks"].store.get_results([r.id for r in results])
        assert all(record is not None for record in records)  # PENDING written too


def test_reading_a_held_result_publishes_the_batch_first(made: tuple[Flask, Tasks]) -> None:
    app, tasks = made
    add = tasks.registry["add"]
    with app.app_context():
        with tasks.batch():
            first, second = add.delay(1, 1), add.delay(2, 2)
            assert queued(app) == 0
            assert first.state == states.PENDING  # read: the batch goes out
            assert queued(app) == 2
            third = add.delay(3, 3)
            assert queued(app) == 2
        assert queued(app) == 3
        assert second.state == third.state == states.PENDING


def test_get_on_a_held_result_publishes_and_waits(made: tuple[Flask, Tasks]) -> None:
    app, tasks = made
    add = tasks.registry["add"]
    runtime: Runtime = app.extensions["tasks"]
    consumer = Consumer(runtime, ["default"], announce_ready=False)
    with app.app_context():
        with tasks.batch():
            result = add.delay(20, 22)
            outcome: list[Any] = []
            waiter = threading.Thread(target=lambda: outcome.append(result.get(timeout=10)))
            waiter.start()
            assert consumer._fetch(), "get() did not publish the held message"
            delivery, revoked, reserved_at = consumer._pending.popleft()
            consumer._execute(delivery, revoked, reserved_at)
            consumer._flush_acks(force=True)
            waiter.join(10)
        assert outcome == [42]


def test_a_block_that_raises_still_publishes_and_its_error_goes_on(
    made: tuple[Flask, Tasks],
) -> None:
    app, tasks = made
    add = tasks.registry["add"]
    with app.app_context():
        with pytest.raises(ZeroDivisionError), tasks.batch():
            add.delay(1, 2)
            1 / 0
        assert queued(app) == 1


def test_nested_blocks_publish_at_the_end_of_the_outermost(made: tuple[Flask, Tasks]) -> None:
    app, tasks = made
    add = tasks.registry["add"]
    with app.app_context():
        with tasks.batch():
            with tasks.batch():
                add.delay(1, 2)
            assert queued(app) == 0
            add.delay(3, 4)
        assert queued(app) == 2
        add.delay(5, 6)  # after the block: sent at once
        assert queued(app) == 3


def test_encode_errors_are_raised_at_the_call(made: tuple[Flask, Tasks]) -> None:
    app, tasks = made
    add = tasks.registry["add"]
    with app.app_context():
        with tasks.batch():
            add.delay(1, 2)
            with pytest.raises(EncodeError):
                add.delay(object(), 1)
        assert queued(app) == 1


def test_a_failed_publish_at_the_end_raises_naming_every_task() -> None:
    app, tasks = make_app(f"redis://127.0.0.1:{free_port()}/0", TASKS_PUBLISH_TIMEOUT=0.3)
    add = tasks.registry["add"]
    with app.app_context():
        with pytest.raises(OperationalError) as caught, tasks.batch():
            ids = [add.delay(n, n).id for n in range(3)]
        assert "The batch ended, but sending what it held failed" in str(caught.value)
        assert all(f"add[{task_id}]" in str(caught.value) for task_id in ids)
        # Not held any more: a later block does not send them again.
        with tasks.batch():
            pass
    app.extensions["tasks"].close()


def test_a_failed_publish_after_a_raising_block_keeps_the_block_error_as_context() -> None:
    app, tasks = make_app(f"redis://127.0.0.1:{free_port()}/0", TASKS_PUBLISH_TIMEOUT=0.3)
    add = tasks.registry["add"]
    with app.app_context():
        with pytest.raises(OperationalError) as caught, tasks.batch():
            add.delay(1, 1)
            raise KeyError("the block's own")
        assert isinstance(caught.value.__context__, KeyError)
    app.extensions["tasks"].close()


def test_batch_outside_an_app_context_is_refused(made: tuple[Flask, Tasks]) -> None:
    _app, tasks = made
    with pytest.raises(RuntimeError, match="outside of application context"), tasks.batch():
        pass


def test_eager_mode_runs_at_the_call_inside_a_batch(server_url: str) -> None:
    app, tasks = make_app(server_url, TASKS_ALWAYS_EAGER=True)
    with app.app_context(), tasks.batch():
        assert tasks.registry["add"].delay(2, 3).get() == 5
    app.extensions["tasks"].close()


# -- TASKS_BATCH_PER_REQUEST ---------------------------------------------------------------


def request_app(url: str) -> tuple[Flask, Tasks]:
    app, tasks = make_app(url, TASKS_BATCH_PER_REQUEST=True, TASKS_PUBLISH_TIMEOUT=0.3)
    add = tasks.registry["add"]

    @app.post("/send/<int:count>")
    def send(count: int) -> dict[str, Any]:
        ids = [add.delay(n, 1).id for n in range(count)]
        return {"ids": ids, "queued_during_view": queued(app)}

    @app.post("/send-and-fail")
    def send_and_fail() -> str:
        add.delay(1, 1)
        raise LookupError("the view failed")

    return app, tasks


def test_a_request_publishes_its_tasks_together_before_responding(
    server_url: str, client: redis.Redis
) -> None:
    app, _tasks = request_app(server_url)
    web = app.test_client()
    # Connects and loads the scripts; twice, for a script call keeps its connection and
    # the view's read then opens one more (RedisScripts.call).
    web.post("/send/1")
    web.post("/send/1")
    client.flushall()
    answers = []
    # The view's own read of the queue length, then one publish for the 20 tasks.
    assert round_trips(client, lambda: answers.append(web.post("/send/20"))) == 2
    assert answers[0].status_code == 200
    assert answers[0].json["queued_during_view"] == 0
    assert queued(app) == 20
    with app.app_context():  # outside a request: sent at once
        app.extensions["tasks"].owner.registry["add"].delay(1, 1)
        assert queued(app) == 21
    app.extensions["tasks"].close()


def test_a_view_that_raises_still_publishes_what_it_sent(
    server_url: str, client: redis.Redis
) -> None:
    app, _tasks = request_app(server_url)
    assert app.test_client().post("/send-and-fail").status_code == 500
    assert queued(app) == 1
    app.extensions["tasks"].close()


def test_a_request_whose_publish_fails_answers_500() -> None:
    app, _tasks = request_app(f"redis://127.0.0.1:{free_port()}/0")
    answer = app.test_client().post("/send/2")
    assert answer.status_code == 500
    app.extensions["tasks"].close()


def test_the_config_key_must_be_a_flag() -> None:
    app = Flask(__name__)
    app.config.update(TASKS_BROKER_URL="memory://", TASKS_BATCH_PER_REQUEST="yes")
    with pytest.raises(ImproperlyConfigured, match="TASKS_BATCH_PER_REQUEST must be True or False"):
        Tasks(app)
