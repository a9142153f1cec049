// Dyad console: refreshes the dashboard from /api/v1/unit every 2 s. The
// server renders the first state; this script only keeps it current. Every
// value goes through textContent, never innerHTML.
"use strict";

(function () {
  const refreshMs = 2000;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // Same rules as classToken in dashboard.go.
  function token(s) {
    return String(s || "").toLowerCase().split(/[^a-z0-9]+/).filter(Boolean).join("-");
  }

  // Same rules as unit.FormatUptime, which renders the first page.
  function uptime(sec) {
    if (typeof sec !== "number" || !isFinite(sec) || sec < 0) return "-";
    let s = Math.floor(sec);
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    s %= 60;
    if (d > 0) return d + "d " + h + "h";
    if (h > 0) return h + "h " + m + "m";
    if (m > 0) return m + "m " + s + "s";
    return s + "s";
  }

  // Same rules as formatTime in dashboard.go.
  function formatTime(t) {
    if (!t || t.startsWith("0001-")) return "-";
    const d = new Date(t);
    if (isNaN(d)) return "-";
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC").replace(/Z$/, " UTC");
  }

  function primaryName(u) {
    if (!u.primary) return "none";
    const pm = (u.pms || []).find(function (p) { return p.id === u.primary; });
    return pm && pm.name ? pm.name + " (PM " + pm.id + ")" : "PM " + u.primary;
  }

  // Same rules as displayPaths in dashboard.go.
  function displayPaths(paths) {
    const out = [{ name: "priv0", up: false }, { name: "ibiz0", up: false }];
    (paths || []).forEach(function (p) {
      if (p.name === "priv0") out[0] = p;
      else if (p.name === "ibiz0") out[1] = p;
      else out.push(p);
    });
    return out;
  }

  function pmRow(pm) {
    const tr = el("tr");
    tr.dataset.pm = pm.id;
    const name = el("td", "pm-name", pm.name + " ");
    name.appendChild(el("span", "muted", "PM " + pm.id));
    tr.appendChild(name);
    const state = el("td");
    state.appendChild(el("span", "badge state-" + token(pm.state), pm.state));
    tr.appendChild(state);
    tr.appendChild(el("td", "", pm.activity || ""));
    tr.appendChild(el("td", "role role-" + token(pm.role), pm.role));
    const paths = el("td", "paths");
    displayPaths(pm.paths).forEach(function (p) {
      const word = p.up ? "up" : "down";
      const span = el("span", "path " + word, p.name + " " + word);
      span.title = p.name + " " + word;
      paths.appendChild(span);
    });
    tr.appendChild(paths);
    tr.appendChild(el("td", "", uptime(pm.uptime_seconds)));
    tr.appendChild(el("td", "", pm.image_version || ""));
    return tr;
  }

  function alertItem(a) {
    const li = el("li", "alert sev-" + token(a.severity));
    li.appendChild(el("span", "sev", a.severity));
    li.appendChild(el("span", "src", a.source));
    li.appendChild(el("span", "msg", a.message));
    li.appendChild(el("span", "since", "since " + formatTime(a.since)));
    return li;
  }

  function render(u) {
    const fields = {
      name: u.name,
      management_ip: u.management_ip,
      primary: primaryName(u),
      epoch: String(u.epoch),
      image_version: u.image_version,
    };
    document.querySelectorAll("[data-field]").forEach(function (e) {
      const v = fields[e.dataset.field];
      if (v !== undefined) e.textContent = v;
    });
    document.title = "Dyad — " + u.name;

    const rows = document.getElementById("pm-rows");
    const pms = u.pms || [];
    if (pms.length === 0) {
      const tr = el("tr");
      const td = el("td", "muted", "No PM reported.");
      td.colSpan = 7;
      tr.appendChild(td);
      rows.replaceChildren(tr);
    } else {
      rows.replaceChildren.apply(rows, pms.map(pmRow));
    }

    const list = document.getElementById("alerts");
    const alerts = u.alerts || [];
    if (alerts.length === 0) {
      list.replaceChildren(el("li", "none", "No active alerts."));
    } else {
      list.replaceChildren.apply(list, alerts.map(alertItem));
    }
    setStatus("State as of " + formatTime(u.time), false);
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
  }

  function setStatus(text, bad) {
    const s = document.getElementById("status");
    s.textContent = text;
    s.classList.toggle("status-error", bad);
  }

  async function refresh() {
    try {
      const resp = await fetch("/api/v1/unit", {
        headers: { "Accept": "application/json", "X-Dyad-Console": "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (resp.status === 401) {
        window.location.assign("/login");
        return;
      }
      if (!resp.ok) {
        let msg = resp.status + " " + resp.statusText;
        try { msg = (await resp.json()).error || msg; } catch (e) { /* keep status text */ }
        setStatus("Cannot refresh: " + msg, true);
        return;
      }
      render(await resp.json());
    } catch (e) {
      // During a failover the management IP moves to the other PM: keep
      // retrying; the session cookie is valid there too.
      setStatus("Connection lost, retrying… (" + e.message + ")", true);
    } finally {
      window.setTimeout(refresh, refreshMs);
    }
  }

  window.setTimeout(refresh, refreshMs);
})();
