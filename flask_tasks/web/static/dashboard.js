// The Flask-Tasks dashboard: refreshes the server-rendered page every few seconds and
// sends the dead-letter actions. No build step: an ES module served as is.

const main = () => document.getElementById("dashboard");
const message = (text, failed = false) => {
  const element = document.getElementById("message");
  element.textContent = text;
  element.className = failed ? "failed" : "";
};

async function refresh() {
  if (document.hidden) return;
  try {
    const response = await fetch(window.location.href, { headers: { Accept: "text/html" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById("dashboard");
    if (fresh) main().replaceWith(fresh);
    document.getElementById("refreshed").textContent =
      `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    document.getElementById("refreshed").textContent = `not updated: ${error.message}`;
  }
}

async function act(button) {
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  button.disabled = true;
  try {
    const response = await fetch(button.dataset.action, {
      method: "POST",
      // A JSON body and a custom header: what no cross-site form can send.
      headers: { "Content-Type": "application/json", "X-Requested-With": "flask-tasks" },
      body: JSON.stringify({ id: button.dataset.id }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
    message(body.retried ? `Retried ${body.id}` : `Deleted ${body.id}`);
  } catch (error) {
    message(error.message, true);
  } finally {
    await refresh();
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (button) act(button);
});

const seconds = Number(main()?.dataset.refreshSeconds || 5);
setInterval(refresh, seconds * 1000);
document.addEventListener("visibilitychange", refresh);
