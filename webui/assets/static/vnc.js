// Graphical console of a VM: noVNC's RFB client on the websocket
// /api/v1/vms/ID/console/vnc, which relays the RFB stream of the VM's VNC
// display (subprotocol "binary").
"use strict";

import RFB from "/static/vendor/novnc/core/rfb.js";
import { socketURL, setStatus, Backoff, disconnected } from "/static/consolews.js";

const screen = document.getElementById("screen");
const id = screen.dataset.vm;
const url = socketURL(id, "vnc");
const cad = document.getElementById("ctrl-alt-del");
const backoff = new Backoff(1000, 10000);
let rfb = null;

cad.addEventListener("click", () => {
  if (rfb) rfb.sendCtrlAltDel();
});

function connect() {
  setStatus("connecting", "Connecting…");
  const r = new RFB(screen, url, { wsProtocols: ["binary"] });
  r.scaleViewport = true;
  r.background = "#10161c";
  rfb = r;
  // The server names its desktop during the handshake, before "connect".
  let desktop = "";
  r.addEventListener("desktopname", (ev) => {
    desktop = ev.detail.name;
  });
  r.addEventListener("connect", () => {
    backoff.reset();
    cad.disabled = false;
    setStatus("connected", desktop ? "Connected to " + desktop + "." : "Connected.");
  });
  // A refused VNC authentication comes just before "disconnect".
  let failure = "";
  r.addEventListener("securityfailure", (ev) => {
    failure = "VNC security failure: " + (ev.detail.reason || "status " + ev.detail.status);
  });
  r.addEventListener("disconnect", () => {
    if (rfb !== r) return;
    rfb = null;
    cad.disabled = true;
    disconnected(id, failure, backoff, connect);
  });
}

connect();
