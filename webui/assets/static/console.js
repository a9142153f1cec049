// Serial console of a VM: xterm.js attached to the websocket
// /api/v1/vms/ID/console/serial, which carries the raw bytes of the guest's
// first serial port as binary messages both ways.
"use strict";

import { Terminal } from "/static/vendor/xterm/xterm.mjs";
import { FitAddon } from "/static/vendor/xterm/addon-fit.mjs";
import { socketURL, setStatus, Backoff, disconnected } from "/static/consolews.js";

const box = document.getElementById("terminal");
const id = box.dataset.vm;
const url = socketURL(id, "serial");
const term = new Terminal({
  cursorBlink: true,
  scrollback: 10000,
  fontFamily: "ui-monospace, \"DejaVu Sans Mono\", Menlo, Consolas, monospace",
  fontSize: 14,
  // The box around the terminal has the same colour.
  theme: { background: "#10161c" },
});
const fit = new FitAddon();
term.loadAddon(fit);
term.open(box);
fit.fit();
window.addEventListener("resize", () => fit.fit());

const encoder = new TextEncoder();
const backoff = new Backoff(1000, 10000);
let ws = null;

function send(bytes) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(bytes);
}

// Typed keys and pastes come as text; send them as UTF-8.
term.onData((data) => send(encoder.encode(data)));
// Some mouse reports come as a binary string: one byte a character.
term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));

function connect() {
  setStatus("connecting", "Connecting…");
  const sock = new WebSocket(url);
  sock.binaryType = "arraybuffer";
  ws = sock;
  sock.onopen = () => {
    backoff.reset();
    setStatus("connected", "Connected. Keys go to the guest.");
    term.focus();
  };
  sock.onmessage = (ev) => {
    if (ev.data instanceof ArrayBuffer) term.write(new Uint8Array(ev.data));
  };
  sock.onclose = (ev) => {
    if (ws !== sock) return;
    ws = null;
    disconnected(id, ev.reason, backoff, connect);
  };
}

connect();
