// Shared by the serial (console.js) and graphical (vnc.js) console pages:
// the websocket address of a VM's console, the status line, why a console
// closed, and the delay before reconnecting. A console closes when its VM
// stops or restarts (a crash, Reset Device, a failover); the pages
// reconnect so the operator sees the next boot without reloading.
"use strict";

// socketURL is the websocket of console kind ("serial" or "vnc") of VM id, on
// this server: the session cookie goes with it.
export function socketURL(id, kind) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return scheme + "//" + location.host + "/api/v1/vms/" + encodeURIComponent(id) + "/console/" + kind;
}

// setStatus shows state ("connecting", "connected", "disconnected") and a
// message; tests read data-state.
export function setStatus(state, text) {
  const p = document.getElementById("console-status");
  p.dataset.state = state;
  p.classList.toggle("status-error", state === "disconnected");
  p.textContent = text;
}

// Same rules as classToken in dashboard.go.
function token(s) {
  return String(s || "").toLowerCase().split(/[^a-z0-9]+/).filter(Boolean).join("-");
}

// whyClosed asks the API about VM id after its console closed or was
// refused: browsers hide the HTTP answer of a failed websocket handshake.
// It updates the state badge and returns {text, stop}; a session that
// expired goes to the login page.
export async function whyClosed(id) {
  let r;
  try {
    r = await fetch("/api/v1/vms/" + encodeURIComponent(id), {
      headers: { "Accept": "application/json", "X-Dyad-Console": "1" },
      cache: "no-store",
    });
  } catch (e) {
    return { text: "the unit does not answer", stop: false };
  }
  if (r.status === 401) {
    location.assign("/login");
    return { text: "not logged in", stop: true };
  }
  if (r.status === 404) {
    return { text: "the VM no longer exists", stop: true };
  }
  if (!r.ok) {
    return { text: "cannot read the VM's state (" + r.status + ")", stop: false };
  }
  const vm = await r.json();
  const badge = document.querySelector(".vm-state");
  if (badge) {
    badge.textContent = vm.state;
    badge.className = "badge vm-state state-" + token(vm.state);
  }
  return { text: "the VM is " + vm.state + (vm.activity ? ": " + vm.activity : ""), stop: false };
}

// Backoff doubles the delay before each reconnection up to maxMs; a
// connection that opened resets it.
export class Backoff {
  constructor(minMs, maxMs) {
    this.minMs = minMs;
    this.maxMs = maxMs;
    this.ms = minMs;
  }
  next() {
    const ms = this.ms;
    this.ms = Math.min(this.ms * 2, this.maxMs);
    return ms;
  }
  reset() {
    this.ms = this.minMs;
  }
}

// disconnected shows why VM id's console closed and, unless that is for
// good, calls reconnect after the backoff's next delay. reason is the
// server's close reason, when it gave one.
export async function disconnected(id, reason, backoff, reconnect) {
  const why = await whyClosed(id);
  let text = "Disconnected (" + (reason || why.text) + ")";
  if (why.stop) {
    setStatus("disconnected", text + ".");
    return;
  }
  if (reason) text += "; " + why.text;
  const ms = backoff.next();
  setStatus("disconnected", text + ". Reconnecting in " + Math.round(ms / 1000) + " s…");
  setTimeout(reconnect, ms);
}
