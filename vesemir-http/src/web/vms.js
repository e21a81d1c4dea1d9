// Vesemir's VM page, live parts (issue 19). Hand-written, no build step; the page works
// without it (the log is rendered by the server). It follows a running VM's event stream
// (resumed by the browser with Last-Event-ID), appends each event to the log as the server
// would have rendered it (`log_parts` in vms.rs), and, when the VM's status may have changed,
// replaces the status block (how to log in, why it failed, the orders) with a fresh copy of
// the page. It also adds Copy buttons to the values one copies. Text only goes in through
// textContent.
"use strict";

(function () {
  // Events after which the status block may read differently.
  const REFRESH = new Set(["started", "placed", "host_key_recorded", "step_failed", "cancel_requested", "finished"]);
  const UNIT_NS = { ns: 1, us: 1e3, "µs": 1e3, ms: 1e6, s: 1e9, m: 60e9, min: 60e9, h: 3600e9, d: 86400e9, day: 86400e9, days: 86400e9 };

  // humantime's "1s 249ms" as whole milliseconds (truncated, like Rust's as_millis).
  function millis(text) {
    let ns = 0;
    for (const [, amount, unit] of String(text || "").matchAll(/(\d+)\s*([a-zµ]+)/g)) ns += Number(amount) * (UNIT_NS[unit] || 0);
    return Math.floor(ns / 1e6);
  }

  function tenths(ms) {
    const t = Math.floor((ms + 50) / 100);
    return `+${Math.floor(t / 10)}.${t % 10} s`;
  }

  function str(value) { return typeof value === "string" ? value : ""; }
  function json(value) { return value === undefined ? "null" : JSON.stringify(value); }

  // The same words as log_parts in vms.rs.
  function logLine(e) {
    const kind = str(e.type) || "event";
    let detail;
    switch (kind) {
      case "started": {
        const f = e.flavor || {};
        detail = e.mode === "destroy" ? `destroy ${str(e.fqdn)}`
          : `create ${str(e.fqdn)} (${str(f.name)}: ${json(f.cores)} cores, ${json(f.memory_mib)} MiB, ${json(f.disk_gib)} GiB)`;
        break;
      }
      case "step_started": case "step_done": case "undo_done": detail = str(e.step); break;
      case "placed": detail = `on ${str((e.placement || {}).hypervisor)} at ${str((e.placement || {}).address)}`; break;
      case "host_key_recorded":
        detail = `${str(e.key)} (${e.confirmed_by_console === true ? "the console showed the same key" : "not checked against the console"})`;
        break;
      case "output": detail = `[${str(e.step)}${e.stream === "stderr" ? " stderr" : ""}] ${str(e.text)}`; break;
      case "step_failed":
        detail = `${str(e.step)}: ${str(e.reason)}${e.partial === true ? " (it may have changed something: undone too)" : ""}`;
        break;
      case "cancel_requested": detail = "the steps done are undone next"; break;
      case "undo_started": detail = `${str(e.step)} (attempt ${json(e.attempt)})`; break;
      case "undo_failed": detail = `${str(e.step)}: ${str(e.reason)} (${e.will_retry === true ? "tried again" : "left behind"})`; break;
      case "finished": {
        const o = e.outcome || {};
        detail = o.result === "failed" ? `failed at ${str(o.step)}: ${str(o.reason)}` : str(o.result);
        const left = Array.isArray(o.left_behind) ? o.left_behind.filter((s) => typeof s === "string") : [];
        if (left.length) detail += `; left behind: ${left.join(", ")}`;
        break;
      }
      default:
        detail = Object.entries(e).filter(([k]) => !["type", "seq", "elapsed"].includes(k))
          .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
    }
    const bad = kind === "step_failed" || kind === "undo_failed" || (kind === "finished" && (e.outcome || {}).result === "failed");
    return { kind, words: kind.replace(/_/g, " "), detail, bad };
  }

  function logItem(seq, e) {
    const line = logLine(e);
    const li = document.createElement("li");
    li.dataset.seq = String(seq);
    li.dataset.kind = line.kind;
    if (line.bad) li.className = "bad";
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = tenths(millis(e.elapsed));
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = line.words;
    li.append(time, " ", kind, " " + line.detail);
    return li;
  }

  function copyButtons(scope) {
    for (const input of scope.querySelectorAll("input[data-copy]")) {
      if (input.parentElement.querySelector("button.copy-button")) continue;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy-button";
      button.textContent = "Copy";
      button.setAttribute("aria-label", `Copy: ${input.labels && input.labels[0] ? input.labels[0].textContent : "the value"}`);
      button.addEventListener("click", async () => {
        input.select();
        try { await navigator.clipboard.writeText(input.value); } catch (_) { document.execCommand("copy"); }
        button.textContent = "Copied";
        setTimeout(() => { button.textContent = "Copy"; }, 1500);
      });
      input.after(button);
    }
    for (const input of scope.querySelectorAll("input[data-copy]")) input.addEventListener("focus", () => input.select());
  }

  function localTimes(scope) {
    for (const t of scope.querySelectorAll("time[datetime]")) {
      const d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) { t.textContent = d.toLocaleString(); t.title = t.getAttribute("datetime"); }
    }
  }

  function vmPage(root) {
    const name = root.dataset.vm;
    const log = root.querySelector('[data-field="events"]');
    let last = Number(root.dataset.lastEvent || 0);
    const pending = [];
    let framed = false;
    let asked = 0, settling = 0, ended = false;

    // A fresh copy of the page's status block; after the stream's end, again (bounded) until
    // the server has recorded the end.
    async function refresh() {
      const mine = ++asked;
      try {
        const reply = await fetch(location.pathname, { credentials: "same-origin", cache: "no-store" });
        if (!reply.ok || mine !== asked) return;
        const fresh = new DOMParser().parseFromString(await reply.text(), "text/html");
        const block = fresh.querySelector("[data-vm-live]");
        const current = root.querySelector("[data-vm-live]");
        if (!block || !current || mine !== asked) return;
        const node = document.importNode(block, true);
        current.replaceWith(node);
        localTimes(node);
        copyButtons(node);
        const running = block.dataset.status === "creating" || block.dataset.status === "destroying";
        root.dataset.running = String(running);
        if (ended && running && settling < 40) { settling += 1; setTimeout(refresh, 250); }
      } catch (_) { /* the next event tries again */ }
    }

    const source = new EventSource(`/vms/${encodeURIComponent(name)}/events?after=${last}`);
    source.addEventListener("provision", (message) => {
      const seq = Number(message.lastEventId);
      if (!(seq > last)) return; // a replayed event already shown
      last = seq;
      root.dataset.lastEvent = String(seq);
      let e = {};
      try { e = JSON.parse(message.data); } catch (_) { e = { type: "event" }; }
      pending.push(logItem(seq, e));
      if (!framed) {
        framed = true;
        requestAnimationFrame(() => {
          framed = false;
          log.append(...pending.splice(0));
          log.scrollTop = log.scrollHeight;
        });
      }
      if (e.type === "finished") { source.close(); ended = true; }
      if (REFRESH.has(e.type)) refresh();
    });
  }

  function start() {
    copyButtons(document);
    const root = document.querySelector("[data-vm]");
    if (root && root.dataset.running === "true") vmPage(root);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
