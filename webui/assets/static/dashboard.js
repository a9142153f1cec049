// Dyad console: refreshes the dashboard from /api/v1/unit (and, when the
// page has those sections, /api/v1/vms, /api/v1/volumes and
// /api/v1/storage-groups) every 2 s. The server renders the first state; this script only keeps it
// current. Every value goes through textContent, never innerHTML.
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

  // Same rules as unit.FormatBytes: "64 MiB", "1.5 GiB", "512 B".
  function formatBytes(n) {
    if (typeof n !== "number" || !isFinite(n)) return "-";
    if (n < 1024 && n > -1024) return n + " B";
    const units = "KMGTPE";
    let f = n / 1024, i = 0;
    while ((f >= 1024 || f <= -1024) && i < units.length - 1) { f /= 1024; i++; }
    return f.toFixed(1).replace(/\.0$/, "") + " " + units[i] + "iB";
  }

  // Same rules as volumeState in dashboard.go: "Syncing 42% (ETA 12s)".
  function volumeState(v) {
    let st = v.state || "unknown";
    if (v.state !== "Syncing" || !v.sync) return st;
    let p = Math.floor(Number(v.sync.percent) || 0);
    p = Math.min(Math.max(p, 0), 99);
    st += " " + p + "%";
    if (v.sync.eta_seconds > 0) st += " (ETA " + uptime(v.sync.eta_seconds) + ")";
    return st;
  }

  function emptyRow(cols, text) {
    const tr = el("tr");
    const td = el("td", "muted", text);
    td.colSpan = cols;
    tr.appendChild(td);
    return tr;
  }

  function volumeRow(v) {
    const tr = el("tr");
    tr.dataset.volume = v.id;
    const name = el("td", "pm-name", v.name + " ");
    name.appendChild(el("span", "muted", "volume " + v.id));
    tr.appendChild(name);
    tr.appendChild(el("td", "", formatBytes(v.size_bytes)));
    const state = el("td");
    const badge = el("span", "badge sync-" + token(v.state), volumeState(v));
    if (v.detail) badge.title = v.detail;
    state.appendChild(badge);
    tr.appendChild(state);
    tr.appendChild(el("td", "", v.primary ? "PM " + v.primary : "none"));
    const legs = el("td", "legs");
    (v.legs || []).forEach(function (l) {
      const span = el("span", "leg " + (l.failed ? "failed" : "disk-" + token(l.disk)), "PM " + l.pm + " " + (l.failed ? "failed" : l.disk));
      span.title = l.role + ", " + l.connection + (l.detail ? ": " + l.detail : "");
      legs.appendChild(span);
    });
    tr.appendChild(legs);
    tr.appendChild(el("td", "", String(v.group)));
    return tr;
  }

  function groupRow(g) {
    const tr = el("tr");
    tr.dataset.group = g.id;
    const name = el("td", "pm-name", g.name + " ");
    name.appendChild(el("span", "muted", "group " + g.id));
    tr.appendChild(name);
    tr.appendChild(el("td", "", formatBytes(g.capacity_bytes)));
    tr.appendChild(el("td", "", formatBytes(g.free_bytes)));
    tr.appendChild(el("td", "", String(g.volumes)));
    tr.appendChild(el("td", "", (g.disks || []).map(function (d) { return "PM " + d.pm + " " + d.name; }).join(", ")));
    return tr;
  }

  function renderStorage(vols, groups) {
    const vrows = document.getElementById("volume-rows");
    if (vols.length === 0) vrows.replaceChildren(emptyRow(6, "No volumes."));
    else vrows.replaceChildren.apply(vrows, vols.map(volumeRow));
    const grows = document.getElementById("group-rows");
    if (groups.length === 0) grows.replaceChildren(emptyRow(5, "No storage groups."));
    else grows.replaceChildren.apply(grows, groups.map(groupRow));
    const s = document.getElementById("storage-status");
    s.textContent = "";
    s.hidden = true;
    s.classList.remove("status-error");
  }

  function vmRow(v) {
    const tr = el("tr");
    tr.dataset.vm = v.id;
    const name = el("td", "pm-name", v.name + " ");
    name.appendChild(el("span", "muted", "VM " + v.id));
    tr.appendChild(name);
    const state = el("td");
    state.appendChild(el("span", "badge vm-" + token(v.state), v.state));
    tr.appendChild(state);
    tr.appendChild(el("td", "", v.activity || ""));
    tr.appendChild(el("td", "", v.node ? "PM " + v.node : "none"));
    tr.appendChild(el("td", "", String(v.vcpus)));
    tr.appendChild(el("td", "", formatBytes(v.memory_bytes)));
    const consoles = el("td", "consoles");
    const id = encodeURIComponent(String(v.id));
    const serial = el("a", "", "Serial");
    serial.href = "/vms/" + id + "/console";
    const vnc = el("a", "", "VNC");
    vnc.href = "/vms/" + id + "/vnc";
    consoles.append(serial, " ", vnc);
    tr.appendChild(consoles);
    return tr;
  }

  function renderVMs(vms) {
    const rows = document.getElementById("vm-rows");
    if (vms.length === 0) rows.replaceChildren(emptyRow(7, "No virtual machines."));
    else rows.replaceChildren.apply(rows, vms.map(vmRow));
    const s = document.getElementById("vm-status");
    s.textContent = "";
    s.hidden = true;
    s.classList.remove("status-error");
  }

  // notLoggedIn is thrown by getJSON on a 401: the caller goes to the login page.
  const notLoggedIn = new Error("not logged in");

  async function getJSON(path) {
    const resp = await fetch(path, {
      headers: { "Accept": "application/json", "X-Dyad-Console": "1" },
      credentials: "same-origin",
      cache: "no-store",
    });
    if (resp.status === 401) throw notLoggedIn;
    if (!resp.ok) {
      let msg = resp.status + " " + resp.statusText;
      try { msg = (await resp.json()).error || msg; } catch (e) { /* keep status text */ }
      throw new Error(msg);
    }
    return resp.json();
  }

  // refreshStorage updates the storage section, when the page has one. Its
  // failures show in the section, like the server-rendered page does.
  async function refreshStorage() {
    if (!document.getElementById("storage")) return;
    try {
      const both = await Promise.all([getJSON("/api/v1/volumes"), getJSON("/api/v1/storage-groups")]);
      renderStorage(both[0] || [], both[1] || []);
    } catch (e) {
      if (e === notLoggedIn) throw e;
      const s = document.getElementById("storage-status");
      s.textContent = "Cannot refresh storage: " + e.message;
      s.hidden = false;
      s.classList.add("status-error");
    }
  }

  // refreshVMs updates the VM section, when the page has one; its failures
  // show in the section.
  async function refreshVMs() {
    if (!document.getElementById("vms")) return;
    try {
      renderVMs((await getJSON("/api/v1/vms")) || []);
    } catch (e) {
      if (e === notLoggedIn) throw e;
      const s = document.getElementById("vm-status");
      s.textContent = "Cannot refresh VMs: " + e.message;
      s.hidden = false;
      s.classList.add("status-error");
    }
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
      render(await getJSON("/api/v1/unit"));
      await Promise.all([refreshVMs(), refreshStorage()]);
    } catch (e) {
      if (e === notLoggedIn) {
        window.location.assign("/login");
      } else if (e instanceof TypeError) {
        // fetch failed. During a failover the management IP moves to the
        // other PM: keep retrying; the session cookie is valid there too.
        setStatus("Connection lost, retrying… (" + e.message + ")", true);
      } else {
        setStatus("Cannot refresh: " + e.message, true);
      }
    } finally {
      window.setTimeout(refresh, refreshMs);
    }
  }

  window.setTimeout(refresh, refreshMs);
})();
