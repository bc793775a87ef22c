// The job list: follow each unfinished job live with watchTask (flask-tasks.js).
//
// A page can keep only about six HTTP/1.1 connections per site open, and each watch holds
// one (an event stream, or a long poll). So at most WATCHERS jobs are watched at a time,
// newest first; when one finishes, the next waiting job takes its place. Finished jobs
// are shown once and never asked again.
import { watchTask, TaskFailedError } from "flask-tasks";
import { describeOutcome } from "./describe.js";

const WATCHERS = 3;
const rows = [...document.querySelectorAll("tr[data-status-url]")];

function show(row, status) {
  const badge = row.querySelector("[data-field=state]");
  badge.textContent = status.state;
  badge.className = `badge state-${status.state.toLowerCase()}`;
  row.querySelector("[data-field=outcome]").textContent = describeOutcome(
    row.dataset.kind,
    status,
  );
}

async function follow(row) {
  try {
    show(row, await watchTask(row.dataset.statusUrl, { onUpdate: (status) => show(row, status) }));
  } catch (error) {
    if (error instanceof TaskFailedError) show(row, error.status);
    else row.querySelector("[data-field=outcome]").textContent = error.message || "";
  }
  row.dataset.finished = "true";
}

const waiting = [...rows];
async function watcher() {
  while (waiting.length) await follow(waiting.shift());
}
await Promise.all(Array.from({ length: Math.min(WATCHERS, rows.length) }, watcher));
