// llmos operator console: a page of the gateway, no build step, no third-party code.
// Every call goes to this gateway's own API with the key or token the user typed (kept in
// sessionStorage: this tab only). Text from the API is put in the page with textContent only.
"use strict";

const KEY = "llmos.console.key";
const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

async function api(path, { raw = false, relogin = true } = {}) {
  const key = sessionStorage.getItem(KEY);
  const response = await fetch(path, { headers: { authorization: `Bearer ${key}` }, cache: "no-store" });
  if (!response.ok) {
    let message = `${response.status}`;
    try {
      const body = await response.json();
      message = `${response.status} ${body.error.code}: ${body.error.message}`;
    } catch (_) { /* not the error envelope */ }
    if (response.status === 401 && relogin) { // the key was revoked or expired: log in again
      sessionStorage.removeItem(KEY);
      setTimeout(() => location.reload(), 0);
    }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return raw ? response.text() : response.json();
}

// -- views ------------------------------------------------------------------------------------

function show(templateId) {
  const main = $("#main");
  main.replaceChildren($(templateId).content.cloneNode(true));
  return main;
}

function showLogin(message) {
  $("#nav").hidden = true;
  const main = $("#main");
  if (!$("#login-view")) location.reload();
  $("#login-error", main).textContent = message || "";
}

async function login(event) {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("#login-key").value.trim());
  try {
    await api("/v1/audit/checkpoint?format=json", { relogin: false }).catch((e) => {
      if (e.status === 404) return null; // an empty log: the credential itself was accepted
      throw e;
    });
  } catch (e) {
    sessionStorage.removeItem(KEY);
    $("#login-error").textContent = `Not accepted (${e.message}). The console needs the auditor or admin role.`;
    return;
  }
  location.hash = "#audit";
  route();
}

let nextBefore = null;
let searches = 0; // only the latest search may fill the table

function auditView() {
  const main = show("#audit-template");
  const form = $("#search-form", main);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search(form, false);
  });
  $("#more", main).addEventListener("click", () => search(form, true));
  search(form, false);
}

async function search(form, more) {
  const params = new URLSearchParams();
  for (const [name, value] of new FormData(form)) if (value) params.set(name, value);
  if (more && nextBefore) params.set("before", nextBefore);
  params.set("limit", "50");
  const body = $("#results tbody");
  $("#search-error").textContent = "";
  const mine = ++searches;
  try {
    const found = await api(`/v1/audit/search?${params}`);
    if (mine !== searches) return; // a newer search was started meanwhile
    if (!more) body.replaceChildren();
    for (const e of found.entries) {
      const row = el("tr");
      row.dataset.requestId = e.request_id;
      for (const value of [e.seq, e.time, e.request_id, e.endpoint, e.tenant, e.principal_id, e.model, e.decision, e.status]) {
        row.append(el("td", value));
      }
      row.children[7].className = `decision-${e.decision}`;
      row.addEventListener("click", () => { location.hash = `#entry/${encodeURIComponent(e.request_id)}`; });
      body.append(row);
    }
    nextBefore = found.next_before;
    $("#more").hidden = !nextBefore;
    if (!body.children.length) $("#search-error").textContent = "No request matches.";
  } catch (e) {
    $("#search-error").textContent = e.message;
  }
}

async function entryView(requestId) {
  const main = show("#entry-template");
  $("#entry-id", main).textContent = requestId;
  $("#explain-link", main).href = `#explain/${encodeURIComponent(requestId)}`;
  const proofBox = $("#proof", main);
  try {
    const got = await api(`/v1/audit/entries/${encodeURIComponent(requestId)}`);
    const entry = JSON.parse(got.entry);
    // Sealed fields (audit.sealed_fields) are commitments in the hashed entry; their values come
    // from the openings kept beside it (checked against the commitments by `llmos audit verify`).
    const openings = got.openings ? JSON.parse(got.openings) : {};
    for (const [name, opening] of Object.entries(openings)) {
      if (!(name in entry)) entry[name] = opening.value;
    }
    const fields = $("#entry-fields", main);
    const shown = ["seq", "time", "endpoint", "tenant", "principal_id", "auth_method", "model", "decision",
      "status", "reasons", "policy_digest", "model_digest", "trace_id", "latency_ms", "phase"];
    for (const name of shown) {
      if (!(name in entry)) continue;
      fields.append(el("dt", name), el("dd", Array.isArray(entry[name]) ? entry[name].join(", ") : entry[name]));
    }
    if (entry.sealed) fields.append(el("dt", "sealed"), el("dd", Object.keys(entry.sealed).join(", ")));
    fields.append(el("dt", "entry hash"), el("dd", got.entry_hash));
    $("#entry-body", main).textContent = got.entry;
    const verdict = await verifyInclusion(got);
    proofBox.className = `proof ${verdict.ok ? "ok" : "bad"}`;
    proofBox.textContent = verdict.text;
    proofBox.dataset.verified = String(verdict.ok);
  } catch (e) {
    proofBox.className = "proof bad";
    proofBox.textContent = e.message;
  }
}

async function explainView(requestId) {
  const main = show("#explain-template");
  $("#explain-id", main).textContent = requestId;
  $("#entry-link", main).href = `#entry/${encodeURIComponent(requestId)}`;
  try {
    const got = await api(`/v1/explanations/${encodeURIComponent(requestId)}`);
    const record = got.record;
    const d = record.decision;
    $("#explain-summary", main).textContent =
      `${d.decision} (${d.status}) · model ${record.model ?? "none"} · record committed by audit entry ` +
      `${got.audit.seq ?? "(none yet)"}: ${got.audit.committed ? "yes" : "no"}`;
    renderHeatmap(record.model_attribution, $("#heatmap", main), $("#attribution-note", main));
    const rules = $("#rules", main);
    for (const r of d.rules) rules.append(el("li", `${r.rule}${r.detail ? ` (${r.detail})` : ""}`));
    for (const r of d.reasons) rules.append(el("li", `reason ${r.code}: ${r.message}`));
    if (!rules.children.length) rules.append(el("li", "none", "muted"));
    const counts = new Map();
    for (const f of record.pii_findings) {
      const key = `${f.entity_type}\u0000${f.location}`;
      counts.set(key, (counts.get(key) || 0) + 1);
    }
    const table = $("#findings tbody", main);
    for (const [key, count] of counts) {
      const [type, where] = key.split("\u0000");
      const row = el("tr");
      row.append(el("td", type), el("td", where), el("td", count));
      table.append(row);
    }
    if (!counts.size) {
      const row = el("tr");
      row.append(el("td", "none", "muted"), el("td"), el("td"));
      table.append(row);
    }
  } catch (e) {
    $("#explain-summary", main).textContent = e.message;
  }
}

function renderHeatmap(attribution, box, note) {
  if (!attribution || attribution.status !== "ok" || !attribution.attribution) {
    note.textContent = `No token attribution: ${attribution ? attribution.status : "none"}` +
      `${attribution && attribution.reason ? ` (${attribution.reason})` : ""}.`;
    return;
  }
  const a = attribution.attribution;
  let scores = a.scores;
  if (Array.isArray(scores[0])) { // full scope: one row per output token; show their sum
    scores = scores[0].map((_, i) => scores.reduce((sum, row) => sum + row[i], 0));
  }
  const largest = Math.max(1e-12, ...scores.map((s) => Math.abs(s)));
  note.textContent = `${a.method}, ${a.scope}: red pushed the answer up, blue pushed it down` +
    `${a.truncated.prompt ? `; the first ${a.prompt.start} prompt tokens were not scored` : ""}.`;
  a.prompt.texts.forEach((text, i) => {
    const s = scores[i] / largest;
    const span = el("span", text);
    span.title = scores[i].toFixed(4);
    span.dataset.score = String(scores[i]);
    const alpha = Math.min(1, Math.abs(s)).toFixed(3);
    span.style.background = s >= 0 ? `rgba(220, 38, 38, ${alpha})` : `rgba(37, 99, 235, ${alpha})`;
    box.append(span);
  });
}

let rateTimer = null;

async function statusView() {
  const main = show("#status-template");
  clearInterval(rateTimer);
  let last = null;
  const poll = async () => {
    try {
      const text = await api("/metrics", { raw: true });
      const total = text.split("\n").filter((l) => l.startsWith("llmos_requests_total{"))
        .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
      const now = Date.now();
      if (last) $("#rate").textContent = ((total - last.total) / ((now - last.time) / 1000)).toFixed(2);
      last = { total, time: now };
    } catch (e) {
      $("#rate").textContent = e.message;
    }
  };
  poll();
  rateTimer = setInterval(poll, 5000);
  try {
    const pool = await api("/admin/models");
    const workers = (await api("/admin/workers")).workers;
    const devices = $("#devices tbody", main);
    for (const d of pool.devices) {
      const row = el("tr");
      row.append(el("td", `${d.device} (${d.kind})`), el("td", mib(d.budget_bytes)), el("td", mib(d.used_bytes)),
        el("td", d.models.join(", ")));
      devices.append(row);
    }
    const table = $("#workers tbody", main);
    for (const [name, w] of Object.entries(workers)) {
      const row = el("tr");
      const inFlight = pool.models[name] ? pool.models[name].outstanding : "";
      row.append(el("td", name), el("td", w.state), el("td", w.restarts), el("td", inFlight), el("td", w.last_error || ""));
      table.append(row);
    }
  } catch (e) {
    $("#status-error", main).textContent = e.status === 403
      ? "Models and workers need the admin role; this credential has the auditor role."
      : e.message;
  }
}

function mib(bytes) {
  return `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}

// -- inclusion proofs, checked in this browser (RFC 9162, section 2.1.3.2) ---------------------

const enc = new TextEncoder();
const b64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

async function sha256(...parts) {
  const joined = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { joined.set(p, at); at += p.length; }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", joined));
}

async function verifyInclusion(got) {
  // Size and root come from the signed checkpoint, the position from the hashed entry itself:
  // nothing the proof is checked against is taken from the response's unsigned fields.
  const [origin, sizeLine, rootLine] = got.checkpoint.split("\n");
  const root = b64(rootLine);
  const size = Number(sizeLine);
  const seq = JSON.parse(got.entry).seq;
  if (!Number.isSafeInteger(size) || !Number.isSafeInteger(seq) || seq < 1 || seq > size ||
      got.seq !== seq || got.leaf_index !== seq - 1) {
    return { ok: false, text: "NOT verified: the entry's position does not fit the signed checkpoint." };
  }
  let fn = seq - 1;
  let sn = size - 1;
  let r = await sha256(new Uint8Array([0]), enc.encode(got.entry));
  if (hex(await sha256(enc.encode(got.entry))) !== got.entry_hash) {
    return { ok: false, text: "The entry's bytes do not hash to its stored entry hash." };
  }
  for (const node of got.inclusion_proof.map(b64)) {
    if (sn === 0) return { ok: false, text: "The inclusion proof is longer than the tree allows." };
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(new Uint8Array([1]), node, r);
      if (fn % 2 === 0) while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = await sha256(new Uint8Array([1]), r, node);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  const ok = sn === 0 && hex(r) === hex(root);
  const signature = await checkSignature(got.checkpoint, origin);
  if (!ok) return { ok: false, text: "NOT verified: the inclusion proof does not lead to the checkpoint's root." };
  return {
    ok: signature.ok === true, // a signature not checked is not a verification
    text: `${signature.ok === true ? "Verified in this browser" : "Proof checked, signature NOT verified"}: entry` +
      ` ${seq} is leaf ${seq - 1} of the ${size}-entry tree of ${origin}, whose root the checkpoint names.` +
      ` ${signature.text}`,
  };
}

async function checkSignature(note, origin) {
  // The checkpoint's Ed25519 signature, with the key the gateway names (compare its fingerprint
  // with the one you trust: `llmos audit verify` prints it).
  try {
    const info = await api("/v1/audit/checkpoint?format=json");
    const [name, keyId, ...rest] = info.verifier_key.split("+"); // base64 may hold "+" too
    const keyB64 = rest.join("+");
    if (name !== origin) return { ok: false, text: "The checkpoint is for another log than this key's." };
    const raw = b64(keyB64);
    if (raw[0] !== 1) return { ok: null, text: "Checkpoint signature: unknown key type." };
    const cut = note.lastIndexOf("\n\n");
    const text = note.slice(0, cut + 1);
    const line = note.slice(cut + 2).split("\n").find((l) => l.startsWith(`\u2014 ${name} `));
    if (!line) return { ok: false, text: "The checkpoint is not signed by the log's key." };
    const sig = b64(line.split(" ")[2]);
    if (hex(sig.slice(0, 4)) !== keyId) return { ok: false, text: "The checkpoint's signature names another key." };
    const key = await crypto.subtle.importKey("raw", raw.slice(1), { name: "Ed25519" }, false, ["verify"]);
    const good = await crypto.subtle.verify({ name: "Ed25519" }, key, sig.slice(4), enc.encode(text));
    const fingerprint = hex(await sha256(raw.slice(1))).slice(0, 16);
    return good
      ? { ok: true, text: `Checkpoint signature verified (Ed25519 key ${keyId}, sha256 ${fingerprint}…).` }
      : { ok: false, text: "The checkpoint's signature does NOT verify." };
  } catch (e) {
    return { ok: null, text: `Checkpoint signature not checked here (${e.message}).` };
  }
}

// -- sign-in at the OpenID provider (authorization code with PKCE, RFC 7636) --------------------

const PKCE = "llmos.console.pkce";
const b64url = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

async function offerSignIn() {
  let config;
  try {
    config = await (await fetch("/console/config.json", { cache: "no-store" })).json();
  } catch (_) {
    return;
  }
  const button = $("#oidc-login");
  if (!config.oidc || !button) return; // (logged in meanwhile: the login view is gone)
  button.textContent = `Sign in with ${new URL(config.oidc.issuer).host}`;
  $("#oidc-box").hidden = false;
  button.addEventListener("click", async () => {
    const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
    const state = b64url(crypto.getRandomValues(new Uint8Array(16)));
    const challenge = b64url(await sha256(enc.encode(verifier)));
    sessionStorage.setItem(PKCE, JSON.stringify({ verifier, state, token_endpoint: config.oidc.token_endpoint,
      client_id: config.oidc.client_id }));
    const target = new URL(config.oidc.authorization_endpoint);
    for (const [k, v] of Object.entries({ response_type: "code", client_id: config.oidc.client_id,
      redirect_uri: `${location.origin}/console`, scope: config.oidc.scope, state, code_challenge: challenge,
      code_challenge_method: "S256" })) target.searchParams.set(k, v);
    location.assign(target.toString());
  });
}

async function finishSignIn() {
  const params = new URLSearchParams(location.search);
  if (!params.has("code") && !params.has("error")) return;
  const pending = JSON.parse(sessionStorage.getItem(PKCE) || "null");
  sessionStorage.removeItem(PKCE);
  history.replaceState(null, "", "/console"); // the code is single use: not in the address bar
  if (params.has("error") || !pending || params.get("state") !== pending.state) {
    $("#login-error").textContent = `Sign-in failed: ${params.get("error") || "the reply does not match this tab's request"}.`;
    return;
  }
  const form = new URLSearchParams({ grant_type: "authorization_code", code: params.get("code"),
    redirect_uri: `${location.origin}/console`, client_id: pending.client_id, code_verifier: pending.verifier });
  try {
    const response = await fetch(pending.token_endpoint, { method: "POST", body: form });
    const token = await response.json();
    if (!response.ok || !token.access_token) throw new Error(token.error || `${response.status}`);
    $("#login-key").value = token.access_token;
    await login(new Event("submit"));
  } catch (e) {
    $("#login-error").textContent = `Sign-in failed: ${e.message}.`;
  }
}

// -- routing ------------------------------------------------------------------------------------

function route() {
  clearInterval(rateTimer);
  if (!sessionStorage.getItem(KEY)) return showLogin();
  $("#nav").hidden = false;
  const [view, arg] = location.hash.slice(1).split("/");
  let id = "";
  try {
    id = arg ? decodeURIComponent(arg) : "";
  } catch (_) { /* a malformed link: the explorer */ }
  if (view === "entry" && id) return entryView(id);
  if (view === "explain" && id) return explainView(id);
  if (view === "status") return statusView();
  return auditView();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    location.hash = "";
    location.reload();
  });
  window.addEventListener("hashchange", route);
  if (sessionStorage.getItem(KEY)) route();
  else finishSignIn().then(offerSignIn);
});
