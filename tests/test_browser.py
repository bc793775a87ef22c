"""End to end: the example app in real headless Chromium, with a real ``flask worker``.

The web server (``flask --app example_app run``) and the worker (``flask --app example_app
worker -P threads``) run as subprocesses on loopback and share a SQLite broker in a
temporary folder, configured through ``FLASK_*`` environment variables as a user would.
Chromium and chromedriver are Debian's (``/usr/bin``); without them these tests fail, they
do not skip. Screenshots of finished pages go to ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BINARY", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,900",
]
#: Upper bound of every wait in these tests, in seconds.
WAIT = 15.0


class Service:
    """A ``flask`` subprocess with its output in a log file, stopped by signal."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "example_app", *args],
                cwd=ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(WAIT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(WAIT)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of the example app, served with a worker behind it."""
    folder = tmp_path_factory.mktemp("example")
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLASK_")}
    env.update(
        FLASK_TASKS_BROKER_URL=f"sqlite:///{folder / 'tasks.sqlite3'}",
        FLASK_SECRET_KEY="browser-test-key",
        FLASK_EXAMPLE_STEP_SECONDS="0.05",
        PYTHONUNBUFFERED="1",
    )
    port = free_port()
    worker = Service(
        ["worker", "--pool", "threads", "--concurrency", "4"], env, folder / "worker.log"
    )
    server = Service(["run", "--port", str(port)], env, folder / "server.log")
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(base_url + "/") or server.process.poll() is not None, "server")
        assert server.process.poll() is None, server.output()
        yield base_url
    finally:
        server.stop(signal.SIGINT)
        worker.stop(signal.SIGTERM)
    assert "Traceback" not in server.output(), server.output()
    assert worker.process.returncode == 0, worker.output()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Debian Chromium driven by Selenium (never a downloaded browser)."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} missing: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    with log.open("w") as log_output:
        service = DriverService(executable_path=CHROMEDRIVER, log_output=log_output)
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        try:
            yield driver
        finally:
            driver.quit()
    ARTIFACTS.mkdir(exist_ok=True)


def screenshot(driver: Any, name: str) -> Path:
    """Save the whole page (not just the viewport) as ``test-artifacts/<name>.png``."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def text_of(driver: Any, element_id: str) -> str:
    return str(driver.find_element("id", element_id).text)


def start_job(driver: Any, base_url: str, button: str, **fields: str) -> None:
    driver.get(base_url + "/")
    form = driver.find_element("id", button).find_element("xpath", "./ancestor::form")
    for name, value in fields.items():
        field = form.find_element("name", name)
        field.clear()
        field.send_keys(value)
    driver.find_element("id", button).click()
    wait_for(lambda: "/jobs/" in driver.current_url, "the job page")


def wait_until_finished(driver: Any) -> None:
    wait_for(
        lambda: driver.find_element("id", "job").get_attribute("data-finished") == "true",
        "the page to stop watching the job",
    )


def test_progress_bar_reaches_100_and_shows_the_result(example: str, browser: Any) -> None:
    start_job(browser, example, "start-crunch", steps="20")
    seen: set[int] = set()

    def finished() -> bool:
        bar = browser.find_element("id", "progress")
        seen.add(int(bar.get_attribute("aria-valuenow")))
        return browser.find_element("id", "job").get_attribute("data-finished") == "true"

    wait_for(finished, "the job to finish")
    assert text_of(browser, "state") == "SUCCESS"
    assert browser.find_element("id", "progress").get_attribute("aria-valuenow") == "100"
    assert text_of(browser, "percent") == "100 %"
    assert any(0 < value < 100 for value in seen), seen  # the bar moved step by step
    assert text_of(browser, "result-text") == "The squares of 1 to 20 add up to 2,870."
    assert not browser.find_element("id", "error").is_displayed()
    assert not browser.find_element("id", "cancel").is_displayed()
    screenshot(browser, "example-job-success")


def test_failing_job_shows_its_error(example: str, browser: Any) -> None:
    start_job(browser, example, "start-import")
    wait_until_finished(browser)
    assert text_of(browser, "state") == "FAILURE"
    error = browser.find_element("id", "error")
    assert error.is_displayed()
    assert text_of(browser, "error-title") == "This job failed"
    assert text_of(browser, "error-type") == "ValueError:"
    assert text_of(browser, "error-message") == (
        "Row 3 has no e-mail address, so nothing was imported."
    )
    assert "Traceback" not in browser.page_source
    assert not browser.find_element("id", "result").is_displayed()
    screenshot(browser, "example-job-failure")


def test_cancelled_countdown_job_shows_revoked(example: str, browser: Any) -> None:
    start_job(browser, example, "start-reminder", name="Grace", seconds="60")
    wait_for(lambda: text_of(browser, "message").startswith("Starts in "), "the countdown")
    first = int(text_of(browser, "message").split()[2])
    assert 55 <= first <= 60
    wait_for(lambda: int(text_of(browser, "message").split()[2]) < first, "the countdown to tick")
    browser.find_element("id", "cancel").click()
    wait_until_finished(browser)
    assert text_of(browser, "state") == "REVOKED"
    assert text_of(browser, "error-title") == "This job was cancelled"
    screenshot(browser, "example-job-revoked")


def test_polling_fallback_follows_the_job_too(example: str, browser: Any) -> None:
    start_job(browser, example, "start-crunch", steps="5")
    browser.get(browser.current_url + "?transport=poll")
    wait_until_finished(browser)
    assert text_of(browser, "state") == "SUCCESS"
    assert text_of(browser, "result-text") == "The squares of 1 to 5 add up to 55."


def test_job_list_shows_results(example: str, browser: Any) -> None:
    start_job(browser, example, "start-crunch", steps="3")
    wait_until_finished(browser)
    browser.get(example + "/")
    row = browser.find_element("css selector", "table.jobs tbody tr")
    assert row.find_element("css selector", "a").text == "Crunch numbers (3 steps)"
    wait_for(
        lambda: (
            row.find_element("css selector", "[data-field=outcome]").text
            == "The squares of 1 to 3 add up to 14."
        ),
        "the list to show the result",
    )
    assert row.find_element("css selector", "[data-field=state]").text == "SUCCESS"
    screenshot(browser, "example-job-list")


WATCH_SCRIPT = """
const [url, options, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
import(arguments[2]).then(async ({ watchTask }) => {
  const controller = new AbortController();
  const settle = (promise) => promise.then(
    (value) => ({ ok: true, state: value.state }),
    (error) => ({ ok: false, name: error.name, state: error.state, code: error.code,
                  httpStatus: error.httpStatus }));
  const timedOut = await settle(watchTask(url, { timeout: 300, ...options }));
  const pending = watchTask(url, { signal: controller.signal, ...options });
  controller.abort();
  const aborted = await settle(pending);
  const refused = await settle(watchTask(url + "x", options));
  done({ timedOut, aborted, refused });
}).catch((error) => done({ error: String(error) }));
"""


@pytest.mark.parametrize("transport", ["sse", "poll"])
def test_watch_task_timeout_abort_and_refusal(example: str, browser: Any, transport: str) -> None:
    start_job(browser, example, "start-reminder", seconds="60")
    status_url = browser.find_element("id", "job").get_attribute("data-status-url")
    script_url = example + "/tasks/static/flask-tasks.js"
    outcome = browser.execute_async_script(
        WATCH_SCRIPT, status_url, {"transport": transport}, script_url
    )
    timed_out, aborted, refused = outcome["timedOut"], outcome["aborted"], outcome["refused"]
    assert (timed_out["ok"], timed_out["name"]) == (False, "TimeoutError"), outcome
    assert (aborted["ok"], aborted["name"]) == (False, "AbortError"), outcome
    assert (refused["ok"], refused["name"], refused["code"], refused["httpStatus"]) == (
        False,
        "TaskStatusError",
        "bad_token",
        400,
    )
    browser.find_element("id", "cancel").click()  # leave no job waiting in the queue
    wait_until_finished(browser)


BACKOFF_SCRIPT = """
const done = arguments[arguments.length - 1];
import(arguments[0]).then(async ({ watchTask }) => {
  const status = (state, version, extra) =>
    Response.json({ id: "t", state, ready: state === "SUCCESS", successful: state === "SUCCESS",
                    progress: null, result: null, error: null, version, ...extra });
  const answers = [
    () => new Response("{}", { status: 503 }),
    () => { throw new TypeError("network down"); },
    () => status("PROGRESS", "v1", { progress: { percent: 50 } }),
    () => status("SUCCESS", "v2", { result: 3 }),
  ];
  const calls = [];
  const realFetch = window.fetch;
  window.fetch = async (url) => {
    calls.push({ url: String(url), at: performance.now() });
    return answers[calls.length - 1]();
  };
  const updates = [];
  try {
    const final = await watchTask("/tasks/fake", {
      transport: "poll", onUpdate: (update) => updates.push(update.state) });
    done({ final: final.result, updates, calls });
  } catch (error) {
    done({ error: String(error), calls });
  } finally {
    window.fetch = realFetch;
  }
});
"""


def test_polling_retries_with_backoff(example: str, browser: Any) -> None:
    """503 and network errors are retried after growing delays; changes are asked at once."""
    browser.get(example + "/")
    outcome = browser.execute_async_script(BACKOFF_SCRIPT, example + "/tasks/static/flask-tasks.js")
    assert outcome.get("final") == 3, outcome
    assert outcome["updates"] == ["PROGRESS", "SUCCESS"]
    calls = outcome["calls"]
    assert len(calls) == 4
    assert all("wait=25" in call["url"] for call in calls)
    assert "since=v1" in calls[3]["url"]
    gaps = [later["at"] - earlier["at"] for earlier, later in zip(calls, calls[1:])]
    assert 350 <= gaps[0] < 2000  # 500 ms with jitter
    assert 700 <= gaps[1] < 3000  # doubled
    assert gaps[2] < 300  # a change: ask again at once


def test_footer_stays_at_the_bottom_of_a_short_page(example: str, browser: Any) -> None:
    browser.set_window_size(1100, 1800)
    try:
        start_job(browser, example, "start-crunch", steps="2")
        wait_until_finished(browser)
        bottom, height = browser.execute_script(
            "return [document.querySelector('footer.site').getBoundingClientRect().bottom,"
            " window.innerHeight];"
        )
        assert abs(bottom - height) <= 1, (bottom, height)
        icon = browser.execute_script("return document.querySelector('link[rel=icon]').href;")
        assert icon.endswith("/static/favicon.svg")
        screenshot(browser, "example-short-page-footer")
    finally:
        browser.set_window_size(1100, 900)
