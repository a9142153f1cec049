// Dyad console: refreshes the dashboard from /api/v1/unit (and, when the
// page has those sections, /api/v1/vms, /api/v1/volumes,
// /api/v1/storage-groups and /api/v1/audit) every 2 s. The server renders
// the first state; this script keeps it current and sends the operator's
// commands (PM and unit commands, Force Quorum), asking first where a
// command stops machines or risks data.
// Every value goes through textContent, never innerHTML.
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

  // Same rules as unit.PM.StateText.
  function pmState(pm) {
    let st = String(pm.state || "");
    if (pm.maintenance && st.indexOf("Maintenance") < 0) st += " (in Maintenance)";
    return st;
  }

  // Same names as pmCommandLabel in dashboard.go.
  const pmCommandLabels = {
    "work-on": "Work On",
    "finalize": "Finalize",
    "shutdown": "Shutdown",
    "power-off": "Power Off",
    "power-on": "Power On",
    "reset-device": "Reset Device",
  };

  function pmCommandLabel(cmd) {
    return pmCommandLabels[cmd] || cmd;
  }

  // opsOn: the server runs PM and unit commands, so the PM table has a
  // column of command buttons.
  function opsOn() {
    return !!document.querySelector("#pm-table[data-ops]");
  }

  function pmColumns() {
    return opsOn() ? 9 : 8;
  }

  function pmRow(pm) {
    const tr = el("tr");
    tr.dataset.pm = pm.id;
    const name = el("td", "pm-name", pm.name + " ");
    name.appendChild(el("span", "muted", "PM " + pm.id));
    tr.appendChild(name);
    const state = el("td");
    state.appendChild(el("span", "badge state-" + token(pm.state), pmState(pm)));
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
    const failures = pm.failures || 0;
    tr.appendChild(el("td", "failures" + (failures ? " has-failures" : ""), String(failures)));
    tr.appendChild(el("td", "", pm.image_version || ""));
    if (opsOn()) {
      const cmds = el("td", "commands pm-commands");
      const allowed = pm.allowed || [];
      if (allowed.length === 0) cmds.appendChild(el("span", "muted", "none"));
      allowed.forEach(function (c) {
        const b = el("button", "command", pmCommandLabel(c));
        b.type = "button";
        b.dataset.command = c;
        cmds.appendChild(b);
      });
      tr.appendChild(cmds);
    }
    return tr;
  }

  // Same rules as quorumServers in dashboard.go and unit.Quorum's
  // VerdictText and HolderText.
  function quorumServers(q) {
    return q.servers && q.servers.length ? q.servers.join(", ") : "none configured";
  }

  function quorumVerdict(q) {
    return (q.verdict || "unknown") + (q.forced ? " (forced)" : "");
  }

  function quorumHolder(q) {
    if (!q.holder) return "none";
    let h = "PM " + q.holder;
    if (q.lease_seconds > 0) h += " (" + uptime(q.lease_seconds) + " left)";
    return h;
  }

  function showText(e, text) {
    e.textContent = text || "";
    e.hidden = !text;
  }

  function renderQuorum(q) {
    const section = document.getElementById("quorum");
    if (!section) return;
    q = q || {};
    const f = function (name) { return section.querySelector('[data-quorum="' + name + '"]'); };
    f("servers").textContent = quorumServers(q);
    const verdict = f("verdict");
    verdict.textContent = quorumVerdict(q);
    verdict.className = "badge quorum-" + token(q.verdict);
    f("holder").textContent = quorumHolder(q);
    showText(f("reason"), q.reason);
    showText(f("error"), q.error);
    const force = document.getElementById("force-quorum");
    // Only while this PM waits: forcing a PM that runs, or one that lost
    // to a live peer, is what the lease is there to prevent.
    if (force) force.hidden = q.verdict !== "wait";
  }

  // post sends a command with its JSON body and returns the answer's
  // status and JSON body (null when it has none). A 401 goes to the login
  // page.
  async function post(path, body) {
    const resp = await fetch(path, {
      method: "POST",
      headers: { "Accept": "application/json", "Content-Type": "application/json", "X-Dyad-Console": "1" },
      credentials: "same-origin",
      cache: "no-store",
      body: JSON.stringify(body),
    });
    if (resp.status === 401) {
      window.location.assign("/login");
      throw notLoggedIn;
    }
    let data = null;
    try { data = await resp.json(); } catch (e) { /* keep the status */ }
    return { ok: resp.ok, status: resp.status, body: data, text: resp.status + " " + resp.statusText };
  }

  function failure(r) {
    return new Error((r.body && r.body.error) || r.text);
  }

  // setOpsStatus shows how a command went in the status line id of its
  // section.
  function setOpsStatus(id, text, bad) {
    const s = document.getElementById(id);
    if (!s) return;
    showText(s, text);
    s.classList.toggle("status-error", bad);
  }

  // forceQuorum asks the operator to accept the risk the server describes,
  // then sends the confirmation the API requires.
  async function forceQuorum(button) {
    if (!window.confirm(button.dataset.risk + "\n\nForce quorum on this PM?")) return;
    button.disabled = true;
    setOpsStatus("quorum-status", "Forcing quorum…", false);
    try {
      const r = await post("/api/v1/unit/actions/force-quorum", { confirm: true });
      if (!r.ok) throw failure(r);
      render(r.body);
      setOpsStatus("quorum-status", "Quorum forced: this PM runs the unit's VMs alone.", false);
    } catch (e) {
      if (e !== notLoggedIn) setOpsStatus("quorum-status", "Force Quorum failed: " + e.message, true);
    } finally {
      button.disabled = false;
    }
  }

  // pmQuestions are asked before the PM commands that stop a PM.
  const pmQuestions = {
    "shutdown": "Shut down PM %? It stays off until powered on.",
    "power-off": "Power off PM % at once, as pulling its power cord?",
  };

  // pmCommand sends a PM command. A Work On that would shut down VMs is
  // refused with 409 while Work On is still allowed: the page shows the
  // VMs named and sends it again with the confirmation only if the
  // operator accepts.
  async function pmCommand(button) {
    const row = button.closest("tr");
    const id = row.dataset.pm, cmd = button.dataset.command, label = pmCommandLabel(cmd);
    const question = pmQuestions[cmd];
    if (question && !window.confirm(question.replace("%", id))) return;
    const path = "/api/v1/pms/" + encodeURIComponent(id) + "/actions/" + encodeURIComponent(cmd);
    button.disabled = true;
    setOpsStatus("pm-ops-status", label + " PM " + id + "…", false);
    try {
      let r = await post(path, {});
      if (r.status === 409 && cmd === "work-on" && r.body && (r.body.allowed || []).indexOf("work-on") >= 0) {
        if (!window.confirm(r.body.error + "\n\nWork On PM " + id + " anyway, shutting those VMs down?")) {
          setOpsStatus("pm-ops-status", "Work On PM " + id + " cancelled: nothing was changed.", false);
          return;
        }
        r = await post(path, { confirm: true });
      }
      if (!r.ok) throw failure(r);
      setOpsStatus("pm-ops-status", label + " PM " + id + ": done; the PM is " + pmState(r.body) + ".", false);
      // The command is done: a failed refresh is the periodic refresh's
      // to report, not the command's.
      update().catch(function () {});
    } catch (e) {
      if (e !== notLoggedIn) setOpsStatus("pm-ops-status", label + " PM " + id + " failed: " + e.message, true);
    } finally {
      button.disabled = false;
    }
  }

  // unitCommand asks the question of its button, then sends the command.
  async function unitCommand(button) {
    const cmd = button.dataset.unitCommand, label = button.textContent;
    if (!window.confirm(button.dataset.question)) return;
    button.disabled = true;
    setOpsStatus("unit-ops-status", label + " of the unit…", false);
    try {
      const r = await post("/api/v1/unit/actions/" + encodeURIComponent(cmd), {});
      if (!r.ok) throw failure(r);
      setOpsStatus("unit-ops-status", label + " of the unit started.", false);
      render(r.body);
      update().catch(function () {});
    } catch (e) {
      if (e !== notLoggedIn) setOpsStatus("unit-ops-status", label + " of the unit failed: " + e.message, true);
    } finally {
      button.disabled = false;
    }
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

  // Same rule as okStatus in dashboard.go.
  function okStatus(st) {
    return st >= 200 && st <= 399;
  }

  function auditRow(a) {
    const tr = el("tr");
    tr.dataset.seq = a.seq;
    tr.appendChild(el("td", "", formatTime(a.time)));
    tr.appendChild(el("td", "", a.user || ""));
    tr.appendChild(el("td", "", a.remote || ""));
    tr.appendChild(el("td", "action", a.action || ""));
    tr.appendChild(el("td", "", String(a.status)));
    tr.appendChild(el("td", "result " + (okStatus(a.status) ? "ok" : "failed"), a.result || ""));
    return tr;
  }

  function renderAudit(recs) {
    const rows = document.getElementById("audit-rows");
    if (recs.length === 0) rows.replaceChildren(emptyRow(6, "No operations recorded."));
    else rows.replaceChildren.apply(rows, recs.map(auditRow));
    const s = document.getElementById("audit-status");
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

  // refreshAudit updates the audit section, when the page has one; its
  // failures show in the section.
  async function refreshAudit() {
    if (!document.getElementById("audit")) return;
    try {
      renderAudit((await getJSON("/api/v1/audit?limit=20")) || []);
    } catch (e) {
      if (e === notLoggedIn) throw e;
      const s = document.getElementById("audit-status");
      s.textContent = "Cannot refresh the audit log: " + e.message;
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
      operation: u.operation || "none",
    };
    document.querySelectorAll("[data-field]").forEach(function (e) {
      const v = fields[e.dataset.field];
      if (v !== undefined) e.textContent = v;
    });
    document.title = "Dyad — " + u.name;

    const rows = document.getElementById("pm-rows");
    const pms = u.pms || [];
    if (pms.length === 0) {
      rows.replaceChildren(emptyRow(pmColumns(), "No PM reported."));
    } else {
      rows.replaceChildren.apply(rows, pms.map(pmRow));
    }

    renderQuorum(u.quorum);

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

  // update reads the unit and the page's other sections once.
  async function update() {
    render(await getJSON("/api/v1/unit"));
    await Promise.all([refreshVMs(), refreshStorage(), refreshAudit()]);
  }

  async function refresh() {
    try {
      await update();
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

  const forceButton = document.getElementById("force-quorum-button");
  if (forceButton) {
    forceButton.addEventListener("click", function () { forceQuorum(forceButton); });
  }

  // The PM rows are rendered again on every refresh: one listener on
  // their table serves the buttons of every rendering.
  const pmRows = document.getElementById("pm-rows");
  pmRows.addEventListener("click", function (ev) {
    const b = ev.target.closest("button[data-command]");
    if (b && !b.disabled) pmCommand(b);
  });
  document.querySelectorAll("button[data-unit-command]").forEach(function (b) {
    b.addEventListener("click", function () { unitCommand(b); });
  });

  window.setTimeout(refresh, refreshMs);
})();
