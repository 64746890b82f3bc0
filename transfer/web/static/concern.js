// The log-a-concern page, improved: a click on a body outline fills in the next empty
// mark (the form works without this, choosing body regions from each mark's list).
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

bodyMap();
