/**
 * flask-tasks.js: watch a Flask-Tasks task from the browser. No dependencies.
 *
 *   import { watchTask } from "/tasks/static/flask-tasks.js";
 *   const final = await watchTask(statusUrl, { onUpdate: (status) => render(status) });
 *
 * Uses Server-Sent Events (`<statusUrl>/events`) where the browser has them, and falls
 * back to long polling (`<statusUrl>?wait=25&since=<version>`) with exponential backoff
 * when the stream cannot be opened or keeps failing. See docs/browser.rst.
 */

const LONG_POLL_SECONDS = 25;
const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 10000;
/** An answer faster than this that brings no change means the server did not wait. */
const QUICK_ANSWER_MS = 1000;

/** The task ended in FAILURE or REVOKED. Carries every field of the final status. */
export class TaskFailedError extends Error {
  constructor(status) {
    const error = status.error || {};
    super(error.message || `Task ${status.state.toLowerCase()}`);
    this.name = "TaskFailedError";
    Object.assign(this, status); // id, state, ready, error: {type, message}, ...
    this.status = status;
  }
}

/** The status endpoint refused (400 bad token, 403, 404, 410...): HTTP status and code. */
export class TaskStatusError extends Error {
  constructor(httpStatus, body) {
    super((body && body.message) || `Status request failed with HTTP ${httpStatus}`);
    this.name = "TaskStatusError";
    this.httpStatus = httpStatus;
    this.code = (body && body.error) || "http_error";
  }
}

/**
 * Watch the task behind `url` (from `tasks.status_url(result)`) until it is ready.
 *
 * @param {string} url  the status URL
 * @param {object} [options]
 * @param {(status: object) => void} [options.onUpdate]  called with each new status
 * @param {AbortSignal} [options.signal]  stops watching; the promise rejects with its reason
 * @param {number} [options.timeout]  milliseconds before rejecting with a TimeoutError
 * @param {"auto"|"sse"|"poll"} [options.transport]  "auto": SSE, else polling
 * @returns {Promise<object>} the final status on SUCCESS; rejects with TaskFailedError on
 *   FAILURE/REVOKED, TaskStatusError when refused, or the abort/timeout reason.
 */
export function watchTask(url, options = {}) {
  const { onUpdate, signal, timeout, transport = "auto" } = options;
  const statusUrl = new URL(url, globalThis.location ? globalThis.location.href : undefined);
  const stopper = new AbortController(); // cancels our fetches, timers and stream
  let version = null;
  let source = null;
  let timer = null;

  return new Promise((resolve, reject) => {
    const finish = (settle, value) => {
      if (stopper.signal.aborted) return;
      stopper.abort();
      if (source) source.close();
      clearTimeout(timer);
      if (signal) signal.removeEventListener("abort", onAbort);
      settle(value);
    };
    const fail = (error) => finish(reject, error);
    const onAbort = () => fail(abortReason(signal));

    const update = (status) => {
      if (stopper.signal.aborted || status.version === version) return;
      version = status.version;
      try {
        if (onUpdate) onUpdate(status);
      } catch (error) {
        fail(error);
        return;
      }
      if (status.ready) {
        if (status.successful) finish(resolve, status);
        else fail(new TaskFailedError(status));
      }
    };

    const poll = async () => {
      let delay = MIN_DELAY_MS;
      while (!stopper.signal.aborted) {
        const query = new URL(statusUrl);
        query.searchParams.set("wait", String(LONG_POLL_SECONDS));
        if (version) query.searchParams.set("since", version);
        const started = Date.now();
        let response;
        let body = null;
        try {
          response = await fetch(query, {
            headers: { Accept: "application/json" },
            cache: "no-store",
            credentials: "same-origin",
            signal: stopper.signal,
          });
          body = await response.json().catch(() => null);
        } catch (error) {
          response = null; // network error (or our own abort, checked by the loop)
        }
        if (stopper.signal.aborted) return;
        const retryable = !response || response.status === 429 || response.status >= 500;
        if (!retryable && (!response.ok || !body)) {
          fail(new TaskStatusError(response.status, body));
          return;
        }
        const changed = !retryable && body.version !== version;
        if (!retryable) update(body);
        if (changed || (!retryable && Date.now() - started >= QUICK_ANSWER_MS)) {
          delay = MIN_DELAY_MS; // a real long poll: ask again at once
        } else {
          await sleep(delay * (0.75 + Math.random() / 2), stopper.signal);
          delay = Math.min(delay * 2, MAX_DELAY_MS);
        }
      }
    };

    const stream = () => {
      const eventsUrl = new URL(statusUrl);
      eventsUrl.pathname = eventsUrl.pathname.replace(/\/?$/, "/events");
      source = new EventSource(eventsUrl, { withCredentials: false });
      let opened = false;
      source.onopen = () => {
        opened = true;
      };
      source.onmessage = (event) => {
        let status;
        try {
          status = JSON.parse(event.data);
        } catch (error) {
          fail(error);
          return;
        }
        update(status);
      };
      source.onerror = () => {
        if (stopper.signal.aborted) return;
        // The stream ending after its maximum duration is normal: the browser reconnects
        // (with Last-Event-ID). A stream that fails before opening, or is closed for good
        // (HTTP error, wrong type), hands over to polling, which reports refusals.
        if (source.readyState === EventSource.CLOSED || !opened) {
          source.close();
          source = null;
          poll();
        }
        opened = false;
      };
    };

    if (signal && signal.aborted) {
      reject(abortReason(signal));
      return;
    }
    if (signal) signal.addEventListener("abort", onAbort);
    if (timeout) {
      timer = setTimeout(
        () => fail(new DOMException(`Task still running after ${timeout} ms`, "TimeoutError")),
        timeout,
      );
    }
    const useStream = transport !== "poll" && typeof EventSource !== "undefined";
    if (useStream) stream();
    else poll();
  });
}

/**
 * Ask the server to revoke the task (needs TASKS_ALLOW_REVOKE). `terminate: true` also
 * stops it if it is running. Resolves with the status after revoking.
 */
export async function revokeTask(url, { terminate = false, signal } = {}) {
  const revokeUrl = new URL(url, globalThis.location ? globalThis.location.href : undefined);
  revokeUrl.pathname = revokeUrl.pathname.replace(/\/?$/, "/revoke");
  const response = await fetch(revokeUrl, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Accept: "application/json",
      "X-Requested-With": "flask-tasks.js",
    },
    body: JSON.stringify({ terminate }),
    credentials: "same-origin",
    signal,
  });
  const body = await response.json().catch(() => null);
  if (!response.ok || !body) throw new TaskStatusError(response.status, body);
  return body;
}

function abortReason(signal) {
  return signal.reason !== undefined
    ? signal.reason
    : new DOMException("Watching the task was aborted", "AbortError");
}

function sleep(milliseconds, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(done, milliseconds);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done);
  });
}
