// The console's script: submit jobs with a trace that starts in the
// browser, follow them live, and refresh the live parts of pages.
"use strict";

// The theme: the system's (auto), or dark or light as chosen with the
// header's toggle, remembered in this browser.
const THEMES = ["auto", "dark", "light"];
function applyTheme(theme) {
  if (theme === "auto") {
    delete document.documentElement.dataset.theme;
  } else {
    document.documentElement.dataset.theme = theme;
  }
  const toggle = document.getElementById("theme");
  if (toggle) {
    toggle.textContent = `Theme: ${theme}`;
  }
}
let theme = "auto";
try {
  theme = localStorage.getItem("theme") || "auto";
} catch (_) {
  // Storage refused: the system's theme.
}
if (!THEMES.includes(theme)) {
  theme = "auto";
}
applyTheme(theme);
document.addEventListener("DOMContentLoaded", () => {
  const toggle = document.getElementById("theme");
  if (!toggle) {
    return;
  }
  toggle.hidden = false;
  applyTheme(theme);
  toggle.addEventListener("click", () => {
    theme = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
    try {
      localStorage.setItem("theme", theme);
    } catch (_) {
      // Not remembered: this page only.
    }
    applyTheme(theme);
  });
});

// A span's "Copy tags" button: its tags as JSON, to the clipboard. The
// waterfall is redrawn as spans arrive, so the click is caught above it.
document.addEventListener("click", (e) => {
  const button = e.target.closest("button.copy");
  if (!button || !navigator.clipboard) {
    return;
  }
  navigator.clipboard.writeText(button.dataset.copy).then(
    () => { button.textContent = "Copied"; },
    () => { button.textContent = "Copy failed"; },
  );
});
// Shown only where the script runs and may copy (the stylesheet hides
// them otherwise): a class on the root, outside every refreshed part.
if (navigator.clipboard) {
  document.documentElement.classList.add("can-copy");
}

// Random ids for the browser's own span (W3C trace context).
function hex(bytes) {
  const a = new Uint8Array(bytes);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

function nowMicros() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

// "52.52, 13.41" is a coordinate pair; anything else a place name.
function job(line, options) {
  const m = line.match(/^\s*(-?\d+(?:\.\d+)?)\s*[, ]\s*(-?\d+(?:\.\d+)?)\s*$/);
  const place = m
    ? { latitude: Number(m[1]), longitude: Number(m[2]) }
    : { city: line.trim() };
  return Object.assign(place, options);
}

function cell(row, name) {
  return row.querySelector(`[data-label="${name}"]`);
}

function follow(row, id) {
  const events = new EventSource(`/ui/jobs/${encodeURIComponent(id)}/events`);
  events.addEventListener("status", (e) => {
    const s = JSON.parse(e.data);
    const status = cell(row, "Status");
    status.textContent = s.status;
    status.className = `status status-${s.status}`;
    cell(row, "Attempts").textContent = `${s.attempts} of ${s.max_attempts}`;
    if (s.error) {
      status.title = s.error;
    }
    if (s.status === "succeeded" || s.status === "failed") {
      events.close();
    }
  });
  events.onerror = () => events.close();
}

// The session's CSRF token (the page carries it when a user logged in).
function csrfHeader() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? { "x-csrf-token": meta.content } : {};
}

async function submitOne(tbody, line, options) {
  const row = tbody.insertRow(0);
  for (const name of ["Place", "Job", "Status", "Attempts", "Trace"]) {
    const td = row.insertCell();
    td.dataset.label = name;
  }
  cell(row, "Place").textContent = line.trim();
  cell(row, "Status").textContent = "sending";
  const traceId = hex(16);
  const spanId = hex(8);
  const start = nowMicros();
  let res;
  let body;
  try {
    res = await fetch("/ui/jobs", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        traceparent: `00-${traceId}-${spanId}-01`,
        ...csrfHeader(),
      },
      body: JSON.stringify(job(line, options)),
    });
    body = await res.json().catch(() => ({}));
  } catch (err) {
    cell(row, "Status").textContent = `not sent: ${err}`;
    return;
  }
  // The browser's span: the root of the job's trace.
  const span = {
    traceId, id: spanId, kind: "CLIENT", name: "submit job",
    timestamp: start, duration: Math.max(1, nowMicros() - start),
    localEndpoint: { serviceName: "browser" },
    remoteEndpoint: { serviceName: "api" },
    tags: {
      "http.request.method": "POST", "url.path": "/v1/jobs",
      "http.response.status_code": String(res.status),
    },
  };
  if (!res.ok) {
    span.tags.error = body.detail || `HTTP ${res.status}`;
  }
  fetch("/ui/spans", {
    method: "POST",
    headers: { "content-type": "application/json", ...csrfHeader() },
    body: JSON.stringify([span]),
  });
  if (!res.ok) {
    const status = cell(row, "Status");
    status.textContent = `refused: ${body.detail || res.status}`;
    status.className = "err";
    return;
  }
  const link = document.createElement("a");
  link.href = `/jobs/${encodeURIComponent(body.id)}`;
  link.textContent = body.id;
  cell(row, "Job").append(link);
  const trace = document.createElement("a");
  trace.href = `/jobs/${encodeURIComponent(body.id)}#trace-h`;
  trace.textContent = body.trace_id;
  cell(row, "Trace").append(trace);
  cell(row, "Status").textContent = body.status;
  follow(row, body.id);
}

function setupSubmit() {
  const form = document.getElementById("submit");
  if (!form) return;
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const options = { units: document.getElementById("units").value };
    const priority = document.getElementById("priority").value;
    if (priority !== "normal") options.priority = priority;
    const tbody = document.querySelector("#jobs tbody");
    const lines = document.getElementById("places").value.split("\n").filter((l) => l.trim());
    for (const line of lines) {
      submitOne(tbody, line, options);
    }
  });
}

// Parts of a page that follow the data: "live" and "poll" refresh for as
// long as the page is open (a job's trace until it stops changing once the
// job is done); "settle" only until it stops changing.
function setupRefresh() {
  for (const el of document.querySelectorAll("[data-refresh]")) {
    let same = 0;
    let polls = 0;
    const every = el.dataset.live === "poll" ? 3000 : 1000;
    const timer = setInterval(async () => {
      polls += 1;
      const res = await fetch(el.dataset.refresh).catch(() => null);
      if (!res || !res.ok) return;
      const html = await res.text();
      const finished = res.headers.get("x-job-finished") === "true";
      if (html === el.innerHTML) {
        same += 1;
      } else {
        same = 0;
        el.innerHTML = html;
      }
      const settled = el.dataset.live !== "poll" && (finished || el.dataset.live === "settle") && same >= 3;
      if (settled || (el.dataset.live !== "poll" && polls > 120)) {
        clearInterval(timer);
      }
    }, every);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setupSubmit();
  setupRefresh();
});
