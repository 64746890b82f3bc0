// Handover's pages: start GOV.UK Frontend's components, and warn before the session
// times out. Everything here only improves a page that works without it.
import { initAll } from "@static(govuk/govuk-frontend.min.js)";

initAll();

/** The idle-timeout warning: a modal dialog shortly before the session ends. */
function timeoutWarning() {
  const body = document.body;
  const idle = Number(body.dataset.idleSeconds || 0);
  const warn = Number(body.dataset.warnSeconds || 120);
  const dialog = document.getElementById("timeout-dialog");
  if (!idle || !dialog || typeof dialog.showModal !== "function") return;
  const left = dialog.querySelector(".app-timeout__left");
  const stay = dialog.querySelector(".app-timeout__stay");
  const note = document.getElementById("timeout-note");
  let endsAt = Date.now() + idle * 1000;
  let warnTimer;
  let tick;
  let opener = null;

  const words = (seconds) => {
    if (seconds >= 60) {
      const minutes = Math.ceil(seconds / 60);
      return minutes === 1 ? "1 minute" : `${minutes} minutes`;
    }
    const s = Math.max(0, Math.ceil(seconds / 15) * 15);
    return `${s} seconds`;
  };

  const schedule = () => {
    clearTimeout(warnTimer);
    // Warn `warn` seconds before the end, but never in the first half of the session.
    warnTimer = setTimeout(open, Math.max(idle - warn, idle / 2) * 1000);
  };

  function update() {
    const seconds = (endsAt - Date.now()) / 1000;
    if (seconds <= 0) {
      window.location.href = "/sign-in?expired=1";
      return;
    }
    left.textContent = words(seconds);
  }

  function open() {
    opener = document.activeElement;
    update();
    dialog.showModal();
    stay.focus();
    tick = setInterval(update, 15000);
  }

  async function keepAlive() {
    clearInterval(tick);
    try {
      const response = await fetch("/session/keep-alive", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": body.dataset.csrf || "" },
      });
      if (!response.ok) {
        window.location.href = "/sign-in?expired=1";
        return;
      }
    } catch (err) {
      return;
    }
    dialog.close();
    if (opener && typeof opener.focus === "function") opener.focus();
    endsAt = Date.now() + idle * 1000;
    if (note) {
      const until = new Date(endsAt);
      const hours = until.getHours() % 12 || 12;
      const minutes = String(until.getMinutes()).padStart(2, "0");
      note.textContent = `For your security, you will be signed out at ${hours}:${minutes}` +
        `${until.getHours() < 12 ? "am" : "pm"} if you do nothing before then.`;
    }
    schedule();
  }

  stay.addEventListener("click", keepAlive);
  dialog.addEventListener("cancel", (event) => {
    event.preventDefault();
    keepAlive();
  });
  schedule();
}

timeoutWarning();
