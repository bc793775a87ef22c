// The job list: refresh the rows of unfinished jobs every two seconds.
//
// A page can keep only about six HTTP/1.1 connections per site open, so a list does not
// hold one event stream (or long poll) per row: it asks each unfinished job for its
// status with a plain GET of the same URL, which answers at once.
import { describeOutcome } from "./describe.js";

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

async function refresh(row) {
  try {
    const response = await fetch(row.dataset.statusUrl, {
      headers: { Accept: "application/json" },
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      row.querySelector("[data-field=outcome]").textContent = body.message || "";
      return true; // expired or unknown: stop asking
    }
    const status = await response.json();
    show(row, status);
    return status.ready;
  } catch {
    return false; // the server is unreachable for now: try again later
  }
}

let pending = rows;
while (pending.length) {
  const done = await Promise.all(pending.map(refresh));
  pending = pending.filter((_row, index) => !done[index]);
  if (pending.length) await new Promise((resolve) => setTimeout(resolve, 2000));
}
