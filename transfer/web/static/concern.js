// The log-a-concern page, improved: pupils suggested as you type (the search form's own
// results, fetched from the same page), and a click on a body outline fills in the next
// empty mark. The page works without this: the search form, and each mark's list.
const NS = "http://www.w3.org/2000/svg";

function bodyMap() {
  const form = document.querySelector(".app-concern-form");
  if (!form) return;
  const help = document.getElementById("bodymap-help");
  if (help) help.hidden = false;
  for (const svg of form.querySelectorAll(".app-bodymap__svg")) {
    svg.addEventListener("click", (event) => place(form, svg, event));
  }
}

function place(form, svg, event) {
  const side = svg.dataset.side;
  const box = svg.getBoundingClientRect();
  if (!box.width || !box.height) return;
  const x = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
  const y = Math.min(1, Math.max(0, (event.clientY - box.top) / box.height));
  const value = `${side}@${x.toFixed(3)},${y.toFixed(3)}`;
  const rows = [...form.querySelectorAll(".app-mark")];
  const row = rows.find((r) => !r.querySelector("select[id$='_where']").value);
  if (!row) {
    window.alert("Every mark is used. Select \u201cAdd another mark\u201d first.");
    return;
  }
  const select = row.querySelector("select[id$='_where']");
  const option = document.createElement("option");
  option.value = value;
  option.textContent = `Marked on the ${side} outline`;
  select.insertBefore(option, select.options[1] || null);
  select.value = value;
  const n = row.dataset.mark;
  const group = document.createElementNS(NS, "g");
  group.setAttribute("class", "app-bodymap__mark");
  const dot = document.createElementNS(NS, "circle");
  dot.setAttribute("cx", (x * 100).toFixed(2));
  dot.setAttribute("cy", (y * 220).toFixed(2));
  dot.setAttribute("r", "4.5");
  const label = document.createElementNS(NS, "text");
  label.setAttribute("x", (x * 100).toFixed(2));
  label.setAttribute("y", (y * 220 + 2.2).toFixed(2));
  label.setAttribute("text-anchor", "middle");
  label.textContent = n;
  group.append(dot, label);
  svg.querySelector(".app-bodymap__marks").append(group);
  const note = row.querySelector("input[id$='_note']");
  if (note) note.focus();
}

function suggestions() {
  const input = document.querySelector("input[data-suggest]");
  if (!input || !input.form || typeof DOMParser === "undefined") return;
  const form = input.form;
  let region = document.getElementById("pupil-results");
  if (!region) {
    region = document.createElement("div");
    region.id = "pupil-results";
    region.className = "app-pupil-results";
    form.after(region);
  }
  region.setAttribute("aria-live", "polite");
  let timer;
  let asked = input.value.trim();
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const query = input.value.trim();
      if (query.length < 2 || query === asked) return;
      asked = query;
      const params = new URLSearchParams(new FormData(form));
      let response;
      try {
        response = await fetch(`${form.action}?${params}`, { credentials: "same-origin" });
      } catch (err) {
        return;
      }
      if (!response.ok || input.value.trim() !== query) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const found = page.getElementById("pupil-results");
      if (found) region.replaceChildren(...found.childNodes);
    }, 300);
  });
}

suggestions();
bodyMap();
