// Vesemir's web page, live parts. Hand-written, no build step. The pages work without it:
// it shows times in the viewer's zone, moves running rows of the list, and follows a
// deployment's event stream (resumed by the browser with Last-Event-ID) to update its hosts,
// summary and event log. Text only ever goes in through textContent.
"use strict";

(function () {
  const KINDS = ["deployment_started", "batch_started", "host_phase", "host_output", "host_finished",
    "batch_finished", "waiting", "step_retry", "warning", "paused", "resumed", "stopping", "deployment_finished"];

  function localTimes(root) {
    for (const t of root.querySelectorAll("time[datetime]")) {
      const d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) { t.textContent = d.toLocaleString(); t.title = t.getAttribute("datetime"); }
    }
  }

  function words(value) { return value == null ? "" : String(value).replace(/_/g, " "); }

  function statusText(view) {
    let text = view.status;
    if (view.paused) text += " (paused)";
    if (view.cancel_requested && (view.status === "queued" || view.status === "running")) text += " (cancelling)";
    return text;
  }

  function totalsText(view) {
    const t = view.totals;
    if (t) return `${t.succeeded} succeeded, ${t.failed} failed, ${t.unreachable} unreachable, ${t.skipped} skipped, ${t.cancelled} cancelled`;
    return view.host_count != null ? `${view.host_count} hosts` : "";
  }

  function setField(scope, name, text) {
    const el = scope.querySelector(`[data-field="${name}"]`);
    if (el && el.textContent !== text) el.textContent = text;
  }

  // A time the view has (RFC 3339), shown in the viewer's zone; "not yet" stays until then.
  function setTime(scope, name, iso) {
    const el = scope.querySelector(`[data-field="${name}"]`);
    if (!el || !iso) return;
    const shown = el.querySelector("time");
    if (shown && shown.getAttribute("datetime") === iso) return;
    const t = document.createElement("time");
    t.setAttribute("datetime", iso);
    t.textContent = iso;
    el.replaceChildren(t);
    localTimes(el);
  }

  // Fetches the view at most every 150 ms while events arrive, and once after the last.
  function refresher(id, apply) {
    let pending = false, again = false;
    async function run() {
      if (pending) { again = true; return; }
      pending = true;
      try {
        const reply = await fetch(`/deployments/${id}/view.json`, { credentials: "same-origin", cache: "no-store" });
        if (reply.ok) apply(await reply.json());
      } catch (_) { /* the next event retries */ }
      setTimeout(() => { pending = false; if (again) { again = false; run(); } }, 150);
    }
    return run;
  }

  function follow(id, after, onEvent, onEnd) {
    const source = new EventSource(`/deployments/${id}/events?after=${after}`);
    for (const kind of KINDS) {
      source.addEventListener(kind, (e) => {
        onEvent(kind, e);
        if (kind === "deployment_finished") { source.close(); onEnd(); }
      });
    }
    return source;
  }

  function listPage() {
    const rows = Array.from(document.querySelectorAll("tr[data-live]")).slice(0, 20);
    for (const row of rows) {
      const id = row.dataset.live;
    const refresh = refresher(id, (view) => {
        setField(row, "status", statusText(view));
        setField(row, "totals", totalsText(view));
      });
      follow(id, 0, () => refresh(), () => refresh());
    }
  }

  // A row for a host the page did not list yet (the plan was made after the page was).
  function newRow(name) {
    const body = document.querySelector("table.hosts tbody");
    if (!body) return null;
    const row = document.createElement("tr");
    row.dataset.host = name;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = name;
    row.append(th);
    for (const field of ["phase", "rotation", "outcome", "out", "why"]) {
      const td = document.createElement("td");
      td.dataset.field = field;
      row.append(td);
    }
    body.append(row);
    return row;
  }

  function deploymentPage(root) {
    const id = root.dataset.deployment;
    let last = Number(root.dataset.lastEvent || 0);
    const log = root.querySelector('[data-field="events"]');
    const pendingLines = [];
    let framed = false;
    // The orders that apply change with the deployment: take them from a fresh copy of the page.
    let streamEnded = false, settling = 0, ordersFor = null;
    // Only the newest copy asked for counts: an older one may arrive after it.
    let ordersAsked = 0;
    async function orders() {
      const asked = ++ordersAsked;
      try {
        const reply = await fetch(location.pathname, { credentials: "same-origin", cache: "no-store" });
        if (!reply.ok) return;
        const text = await reply.text();
        if (asked !== ordersAsked) return;
        const fresh = new DOMParser().parseFromString(text, "text/html").querySelector(".orders");
        const current = root.querySelector(".orders");
        if (fresh && current) current.replaceWith(document.importNode(fresh, true));
      } catch (_) { /* the buttons stay as they were */ }
    }
    const refresh = refresher(id, (view) => {
      setField(root, "status", statusText(view));
      setField(root, "totals", totalsText(view));
      setField(root, "error", view.error || "");
      setTime(root, "started", view.timings && view.timings.started_at);
      setTime(root, "finished", view.timings && view.timings.finished_at);
      for (const host of view.hosts) {
        const row = root.querySelector(`tr[data-host="${CSS.escape(host.name)}"]`) || newRow(host.name);
        if (!row) continue;
        setField(row, "phase", host.phase);
        setField(row, "rotation", words(host.rotation));
        setField(row, "outcome", words(host.outcome));
        const why = row.querySelector('[data-field="why"]');
        if (why && host.error && !why.firstChild) why.textContent = host.error;
      }
      const failed = root.querySelector('[data-field="failed"]');
      if (failed) {
        failed.replaceChildren(...view.hosts.filter((h) => h.error).map((h) => {
          const li = document.createElement("li");
          const name = document.createElement("strong");
          name.textContent = h.name;
          li.append(name, `: ${h.error}`);
          return li;
        }));
      }
      const finished = view.status !== "queued" && view.status !== "running";
      if (finished) root.dataset.finished = "true";
      // The stream's end can arrive before the server has recorded it, and a retry or a
      // rollback puts back the servers its parent left out after its end, with no event: look
      // again (a bounded number of times) until the view has settled.
      const out = view.hosts.some((h) => h.rotation === "out_of_rotation");
      if (streamEnded && (!finished || out) && settling < 40) {
        settling += 1;
        setTimeout(refresh, finished ? 1000 : 200);
      }
      // The orders that apply follow the deployment's state: fresh ones when it changes (once
      // it has ended, with whether servers are still out: "restore" applies to those).
      const state = finished ? `${view.status} ${out}` : `${view.status} ${view.paused}`;
      if (state !== ordersFor && (ordersFor !== null || finished)) orders();
      ordersFor = state;
    });
    follow(id, last, (kind, e) => {
      const seq = Number(e.lastEventId);
      if (!(seq > last)) return; // a replayed event already shown
      last = seq;
      let data = {};
      try { data = JSON.parse(e.data); } catch (_) { /* shown as its kind */ }
      if (log) {
        const li = document.createElement("li");
        pendingLines.push(li);
        li.dataset.seq = String(seq);
        const k = document.createElement("span");
        k.className = "kind";
        k.textContent = words(kind);
        const rest = Object.entries(data).filter(([key]) => !["type", "seq", "elapsed"].includes(key))
          .map(([key, v]) => `${key}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
        li.append(k, " " + rest);
        if (!framed) {
          framed = true;
          requestAnimationFrame(() => {
            framed = false;
            log.append(...pendingLines.splice(0));
            log.scrollTop = log.scrollHeight;
          });
        }
      }
      if (kind === "host_finished" && data.host) {
        const row = root.querySelector(`tr[data-host="${CSS.escape(data.host)}"]`);
        if (row && data.out_of_rotation_ms != null) setField(row, "out", `${(data.out_of_rotation_ms / 1000).toFixed(1)} s`);
        if (row) { setField(row, "rotation", words(data.rotation)); setField(row, "outcome", words(data.outcome)); }
      }
      refresh();
    }, () => { streamEnded = true; refresh(); });
  }

  function start() {
    localTimes(document);
    const root = document.querySelector("[data-deployment]");
    if (root && root.dataset.finished !== "true") deploymentPage(root);
    if (document.querySelector("tr[data-live]")) listPage();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
