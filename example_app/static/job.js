// The job page: follow one task with watchTask() and show its progress and outcome.
import { revokeTask, TaskFailedError, TaskStatusError, watchTask } from "flask-tasks";
import { describeOutcome } from "./describe.js";

const job = document.getElementById("job");
const statusUrl = job.dataset.statusUrl;
const kind = job.dataset.kind;
const byId = (id) => document.getElementById(id);
const startsAt = Date.now() + Number(job.dataset.startsIn || 0) * 1000;
let state = byId("state").textContent.trim();

function setProgress(percent, message) {
  const rounded = Math.round(percent);
  byId("progress").querySelector(".bar").style.width = `${percent}%`;
  byId("progress").setAttribute("aria-valuenow", String(rounded));
  byId("percent").textContent = `${rounded} %`;
  byId("message").textContent = message;
}

function waitingMessage() {
  const seconds = Math.ceil((startsAt - Date.now()) / 1000);
  return seconds > 0 ? `Starts in ${seconds} s` : "Waiting for a worker\u2026";
}

function render(status) {
  state = status.state;
  job.dataset.state = status.state; // the stylesheet colours the bar of a failed job
  const badge = byId("state");
  badge.textContent = status.state;
  badge.className = `badge state-${status.state.toLowerCase()}`;
  const progress = status.progress;
  if (progress && typeof progress.percent === "number") {
    setProgress(progress.percent, progress.message || "");
  } else if (status.state === "SUCCESS") {
    setProgress(100, "Finished");
  } else if (status.state === "PENDING") {
    setProgress(0, waitingMessage());
  }
  if (status.ready) byId("cancel").hidden = true;
}

function showError(title, type, message) {
  byId("error-title").textContent = title;
  byId("error-type").textContent = type ? `${type}:` : "";
  byId("error-message").textContent = message;
  byId("error").hidden = false;
  byId("cancel").hidden = true;
  byId("message").textContent = "";
}

// The countdown of a job sent with countdown=: tick until it leaves PENDING.
const ticker = setInterval(() => {
  if (state === "PENDING") byId("message").textContent = waitingMessage();
  if (state !== "PENDING" || Date.now() > startsAt) clearInterval(ticker);
}, 250);

const stop = new AbortController();
window.addEventListener("pagehide", () => stop.abort());
const transport = new URLSearchParams(location.search).get("transport") || "auto";

watchTask(statusUrl, { onUpdate: render, signal: stop.signal, transport })
  .then((status) => {
    byId("result-text").textContent = describeOutcome(kind, status);
    byId("result").hidden = false;
  })
  .catch((error) => {
    if (error instanceof TaskFailedError && error.state === "REVOKED") {
      showError("This job was cancelled", "", "It was revoked before it finished.");
    } else if (error instanceof TaskFailedError) {
      showError("This job failed", error.error.type, error.error.message);
    } else if (error instanceof TaskStatusError) {
      showError("This job cannot be followed", "", error.message);
    } else if (error.name !== "AbortError") {
      showError("Lost track of this job", "", String(error));
    }
  })
  .finally(() => {
    clearInterval(ticker);
    job.dataset.finished = "true";
  });

byId("cancel").addEventListener("click", async (event) => {
  event.target.disabled = true;
  try {
    render(await revokeTask(statusUrl, { terminate: true }));
  } catch (error) {
    event.target.disabled = false;
    showError("Could not cancel this job", "", error.message);
  }
});
