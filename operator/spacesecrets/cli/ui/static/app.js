// The Secrets tab. Every text goes through textContent, never parsed as HTML; values typed here go to
// the local server once, are sealed there, and are never read back.
//
// The session: `/login?token=...` redirects to `/#session=<session>`. The fragment reaches no server;
// this script moves it to sessionStorage (this tab and this origin, port included, only), takes it
// out of the address bar, and sends it as a bearer token on every API call. No cookie is used, so
// nothing the browser would hand to another server on 127.0.0.1 signs anyone in.
"use strict";

const KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const KEY_MAX = 128;
const JSON_MAX_DEPTH = 32;
const POLL_PENDING_MS = 1000;
const POLL_IDLE_MS = 10000;
const SESSION_KEY = "spacesecrets-session";
const SESSION_RE = /^#session=([A-Za-z0-9_-]{16,})$/;

const $ = (id) => document.getElementById(id);
// when the user last gave input, and the page last called the API (see "signing out", below)
const idle = { seconds: null, last: Date.now(), called: 0, timer: null };
const state = { view: null, ns: null, tab: "secrets", data: null, json: "", timer: null, edit: null, confirm: null };

// -- the API ------------------------------------------------------------------------------------

const session = {
  memory: null, // when sessionStorage is not available: this page only
  get() {
    try {
      return sessionStorage.getItem(SESSION_KEY);
    } catch (err) {
      return this.memory;
    }
  },
  set(value) {
    this.memory = value;
    try {
      if (value) sessionStorage.setItem(SESSION_KEY, value);
      else sessionStorage.removeItem(SESSION_KEY);
    } catch (err) {
      // kept in memory only
    }
  },
};

// A session just handed over in the fragment: keep it, and take it out of the address bar and the
// tab's history entry at once. Returns whether there was one.
function takeSession() {
  const match = SESSION_RE.exec(location.hash);
  if (!match) return false;
  session.set(match[1]);
  history.replaceState(null, "", "#/");
  return true;
}

class ApiError extends Error {}
class SignInError extends ApiError {
  constructor(message, ended) {
    super(message);
    this.ended = Boolean(ended); // a session of ours that ended (signed out, or unused too long)
  }
}

async function call(method, path, body) {
  const token = session.get();
  if (!token) throw new SignInError("Not signed in.");
  // credentials "omit": no cookie is sent, whatever the browser holds for 127.0.0.1
  const init = { method, credentials: "omit", headers: { Accept: "application/json", Authorization: `Bearer ${token}` } };
  if (method !== "GET") {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body || {});
  }
  let response;
  idle.called = Date.now();
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError("The local server is not answering: is spacesecrets ui still running?");
  }
  const doc = await response.json().catch(() => ({}));
  if (response.status === 401) {
    session.set(null); // another process's, one that ended with its process, or signed out
    throw new SignInError(doc.error || "Not signed in.", doc.ended);
  }
  if (!response.ok) throw new ApiError(doc.error || `HTTP ${response.status}`);
  return doc;
}

const enc = encodeURIComponent;

// -- small DOM helpers --------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

const DATE = new Intl.DateTimeFormat("en-GB", {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  second: "2-digit", timeZone: "UTC",
});

function when(iso) {
  if (!iso) return el("span", { class: "muted", text: "—" });
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return document.createTextNode(iso);
  return el("time", { datetime: iso, title: iso, text: `${DATE.format(d)} UTC` });
}

// A status never by colour alone: an icon and its words.
function badge(kind, text, icon) {
  return el("span", { class: `badge ${kind}` }, el("span", { "aria-hidden": "true", text: icon }), text);
}

function conditionBadge(cond, okText) {
  if (!cond) return badge("neutral", "Unknown", "?");
  if (cond.status === "True") return badge("ok", okText, "✓");
  return el("span", {}, badge("bad", cond.reason || "Not ready", "✕"), el("span", { class: "reason", text: cond.message }));
}

function rows(tbody, items) {
  tbody.replaceChildren(...items);
}

// -- toasts -------------------------------------------------------------------------------------

function toast(text, bad) {
  const node = el("div", { class: `toast${bad ? " bad" : ""}`, role: bad ? "alert" : null },
    el("span", { "aria-hidden": "true", text: bad ? "✕" : "✓" }), el("span", { text }));
  const shelf = $("toasts");
  shelf.append(node);
  while (shelf.children.length > 3) shelf.firstElementChild.remove();
  setTimeout(() => node.remove(), bad ? 12000 : 5000);
}

// -- views --------------------------------------------------------------------------------------

function show(view) {
  for (const id of ["view-spaces", "view-space", "view-error", "view-signin"]) $(id).hidden = id !== view;
  state.view = view;
}

// No session in this tab (opened by hand, or the process was restarted): what to do, and no data.
function signIn(reason) {
  clearTimeout(state.timer);
  clearTimeout(idle.timer);
  idle.timer = null;
  $("signin-reason").textContent = reason || "";
  $("signin-reason").hidden = !reason;
  state.ns = null;
  $("crumbs").replaceChildren();
  who("");
  document.title = "Sign in · spacesecrets";
  show("view-signin");
}

function crumbs(ns) {
  const items = [el("li", {}, el("a", { href: "#/", text: "Spaces" }))];
  if (ns) items.push(el("li", {}, el("span", { "aria-current": "page", text: ns })));
  $("crumbs").replaceChildren(...items);
}

function who(user) {
  $("who").textContent = user ? `Signed in to Kubernetes as ${user}` : "";
}

async function showSpaces() {
  clearTimeout(state.timer);
  state.ns = null;
  crumbs(null);
  show("view-spaces");
  document.title = "Spaces · spacesecrets";
  try {
    const doc = await call("GET", "/api/spaces");
    who(doc.user);
    const note = $("spaces-note");
    note.hidden = doc.scope === "cluster" && !doc.note;
    note.textContent = doc.note
      ? `You may not list spaces here: ${doc.note}`
      : `You may not list spaces in every namespace; showing namespace ${doc.namespace}.`;
    rows($("spaces-rows"), doc.spaces.map((s) => el("tr", {},
      el("th", { scope: "row" }, el("a", { href: `#/space/${enc(s.namespace)}`, text: s.namespace })),
      el("td", { text: s.version ?? "—" }),
      el("td", { text: String(s.keyCount) }),
      el("td", {}, when(s.updatedAt)),
      el("td", {}, conditionBadge(s.ready, "Ready")),
    )));
    $("spaces-empty").hidden = doc.spaces.length > 0;
  } catch (err) {
    failed(err);
  }
}

function failed(err) {
  if (err instanceof SignInError) {
    signIn(err.ended ? endedReason(err.message) : "");
    return;
  }
  show("view-error");
  $("error-text").textContent = err.message;
}

async function showSpace(ns, tab) {
  if (state.ns !== ns) {
    state.json = "";
    state.data = null;
  }
  state.ns = ns;
  crumbs(ns);
  selectTab(tab || "secrets", false);
  await refresh();
}

async function refresh() {
  clearTimeout(state.timer);
  const ns = state.ns;
  if (!ns) return;
  let doc;
  try {
    doc = await call("GET", `/api/spaces/${enc(ns)}`);
  } catch (err) {
    if (state.ns === ns) failed(err);
    return;
  }
  if (state.ns !== ns) return;
  show("view-space");
  const json = JSON.stringify(doc);
  if (json !== state.json) {
    state.json = json;
    state.data = doc;
    render(doc);
  }
  const pending = doc.pending || doc.rollbackRequested || doc.flows.some((f) => f.syncPending);
  state.timer = setTimeout(refresh, pending ? POLL_PENDING_MS : POLL_IDLE_MS);
}

function render(doc) {
  const focused = document.activeElement && document.activeElement.dataset.fk;
  document.title = `${doc.namespace} · Secrets · spacesecrets`;
  who(doc.access.user);
  $("space-title").textContent = doc.namespace;
  $("space-version").textContent = doc.version ?? "—";
  $("space-created").replaceChildren(when(doc.createdAt));
  $("space-updated").replaceChildren(when(doc.updatedAt));
  $("space-ready").replaceChildren(conditionBadge(doc.ready, "Ready"));
  const ro = $("readonly");
  ro.hidden = doc.access.canEdit;
  ro.replaceChildren(el("span", { class: "icon", "aria-hidden": "true", text: "⚠" }), el("span", { text: doc.access.reason }));
  $("pending").hidden = !doc.pending;
  const edit = doc.access.canEdit;
  $("add-key").hidden = !edit;
  $("sync-all").hidden = !edit || doc.flows.length === 0;
  renderKeys(doc, edit);
  renderFlows(doc, edit);
  renderHistory(doc, edit);
  if (focused) {
    const again = document.querySelector(`[data-fk="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
}

function renderKeys(doc, edit) {
  rows($("key-rows"), doc.keys.map((k) => el("tr", {},
    el("th", { scope: "row" }, el("span", { class: "key", text: k.name })),
    el("td", {}, el("span", { class: "fmt", text: k.format })),
    el("td", { text: `v${k.version}` }),
    el("td", {}, when(k.updatedAt)),
    el("td", { class: "actions" }, edit ? el("span", {},
      el("button", { type: "button", class: "btn small", "data-fk": `edit:${k.name}`, "aria-label": `Edit ${k.name}`, text: "Edit", onclick: () => openKey(k) }),
      el("button", { type: "button", class: "btn small", "data-fk": `remove:${k.name}`, "aria-label": `Remove ${k.name}`, text: "Remove", onclick: () => askRemove(k.name) }),
    ) : null),
  )));
  $("keys-empty").hidden = doc.keys.length > 0;
}

function behindBadge(f) {
  if (f.behind === null) return badge("neutral", "—", "?");
  if (f.behind <= 0) return badge("ok", "Up to date", "✓");
  return badge("warn", `${f.behind} behind`, "⏱");
}

function renderFlows(doc, edit) {
  $("flows-error").hidden = !doc.flowsError;
  $("flows-error").textContent = doc.flowsError ? `Cannot list the flows: ${doc.flowsError}` : "";
  rows($("flow-rows"), doc.flows.map((f) => el("tr", { "data-flow": f.name },
    el("th", { scope: "row", text: f.name }),
    el("td", {}, el("span", { class: "key", text: f.target.name }), el("span", { class: "reason", text: f.target.kind })),
    el("td", { text: f.autosync || "—" }),
    el("td", { "data-testid": `flow-version-${f.name}`, text: f.syncedVersion === null ? "—" : `v${f.syncedVersion}` }),
    el("td", {}, behindBadge(f)),
    el("td", {}, when(f.issuedAt), f.syncNow && f.syncNow.at ? el("span", { class: "reason" }, "Sync now handled ", when(f.syncNow.at)) : null),
    el("td", {}, f.syncPending ? badge("neutral", "Syncing…", "↻") : conditionBadge(f.synced, "Synced")),
    el("td", { class: "actions" }, edit ? el("button", {
      type: "button", class: "btn small", "data-fk": `sync:${f.name}`, "aria-label": `Sync ${f.name} now`,
      disabled: f.syncPending, text: "Sync now", onclick: () => syncNow(f.name),
    }) : null),
  )));
  $("flows-empty").hidden = doc.flows.length > 0 || !!doc.flowsError;
}

function names(list) {
  return list && list.length ? el("span", { class: "key", text: list.join(", ") }) : el("span", { text: "—" });
}

function renderHistory(doc, edit) {
  rows($("history-rows"), doc.history.map((h) => el("tr", {},
    el("th", { scope: "row", text: `v${h.version}` }),
    el("td", {}, when(h.at)),
    el("td", {}, names(h.added)),
    el("td", {}, names(h.changed)),
    el("td", {}, names(h.removed)),
    el("td", { text: h.rollbackOf ? `Rollback of v${h.rollbackOf}` : (h.version === doc.version ? "Current" : "") }),
    el("td", { class: "actions" }, edit && h.version !== doc.version ? el("button", {
      type: "button", class: "btn small", "data-fk": `rollback:${h.version}`, "aria-label": `Roll back to version ${h.version}`,
      disabled: !!doc.rollbackRequested, text: "Roll back", onclick: () => askRollback(h.version),
    }) : null),
  )));
}

// -- tabs (WAI-ARIA tabs: arrows move, Home/End jump) -------------------------------------------

const TABS = ["secrets", "flows", "history"];

function selectTab(tab, focus) {
  state.tab = tab;
  for (const name of TABS) {
    const button = $(`tab-${name}`);
    const on = name === tab;
    button.setAttribute("aria-selected", String(on));
    button.tabIndex = on ? 0 : -1;
    $(`panel-${name}`).hidden = !on;
    if (on && focus) button.focus();
  }
}

for (const name of TABS) {
  $(`tab-${name}`).addEventListener("click", () => {
    history.replaceState(null, "", `#/space/${enc(state.ns)}/${name}`);
    selectTab(name, false);
  });
  $(`tab-${name}`).addEventListener("keydown", (event) => {
    const i = TABS.indexOf(name);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: TABS.length - 1 }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    const tab = TABS[(next + TABS.length) % TABS.length];
    history.replaceState(null, "", `#/space/${enc(state.ns)}/${tab}`);
    selectTab(tab, true);
  });
}

// -- checks as the user types (the server checks again) -----------------------------------------

function keyProblem(key) {
  if (!key) return "Enter a KEY.";
  if (key.length > KEY_MAX) return `A KEY has at most ${KEY_MAX} characters.`;
  if (!KEY_RE.test(key)) return "Use letters, digits and underscores, not starting with a digit.";
  return "";
}

function depth(doc) {
  if (doc === null || typeof doc !== "object") return 0;
  let deepest = 0;
  for (const v of Object.values(doc)) deepest = Math.max(deepest, depth(v));
  return deepest + 1;
}

function valueProblem(value, format) {
  if (!value) return "Enter a VALUE.";
  if (format !== "json") return "";
  let doc;
  try {
    doc = JSON.parse(value);
  } catch (err) {
    return "Not valid JSON.";
  }
  if (depth(doc) > JSON_MAX_DEPTH) return `JSON may nest at most ${JSON_MAX_DEPTH} levels.`;
  return "";
}

function format() {
  return $("format-json").checked ? "json" : "text";
}

function check(touched) {
  const keyText = state.edit ? "" : keyProblem($("key-input").value);
  const valueText = valueProblem($("value-input").value, format());
  for (const [input, error, text, shown] of [
    ["key-input", "key-error", keyText, touched.key],
    ["value-input", "value-error", valueText, touched.value],
  ]) {
    $(input).setAttribute("aria-invalid", String(!!(text && shown)));
    $(error).textContent = shown ? text : "";
  }
  return { keyText, valueText };
}

const touched = { key: false, value: false };
$("key-input").addEventListener("input", () => { touched.key = true; check(touched); });
$("value-input").addEventListener("input", () => { touched.value = true; check(touched); });
for (const id of ["format-text", "format-json"]) $(id).addEventListener("change", () => check(touched));

// -- add and edit -------------------------------------------------------------------------------

function openKey(existing) {
  state.edit = existing ? existing.name : null;
  touched.key = touched.value = false;
  $("key-form").reset();
  $("key-dialog-title").textContent = existing ? `Edit ${existing.name}` : "Add a secret";
  $("key-input").value = existing ? existing.name : "";
  $("key-input").readOnly = !!existing;
  $("format-json").checked = !!existing && existing.format === "json";
  $("format-text").checked = !$("format-json").checked;
  $("value-input").placeholder = existing ? "A new value (the current one cannot be shown)" : "";
  $("key-server-error").hidden = true;
  check(touched);
  $("key-dialog").showModal();
  (existing ? $("value-input") : $("key-input")).focus();
}

$("add-key").addEventListener("click", () => openKey(null));
$("key-cancel").addEventListener("click", () => $("key-dialog").close());

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  touched.key = touched.value = true;
  const problems = check(touched);
  if (problems.keyText || problems.valueText) {
    (problems.keyText ? $("key-input") : $("value-input")).focus();
    return; // nothing is sent
  }
  const key = $("key-input").value;
  const body = { format: format(), value: $("value-input").value };
  const confirm = $("key-confirm");
  confirm.disabled = true;
  try {
    const done = state.edit
      ? await call("PUT", `/api/spaces/${enc(state.ns)}/keys/${enc(key)}`, body)
      : await call("POST", `/api/spaces/${enc(state.ns)}/keys`, { ...body, key });
    $("value-input").value = "";
    $("key-dialog").close();
    toast(done.message);
    refresh();
  } catch (err) {
    $("key-server-error").hidden = false;
    $("key-server-error").textContent = err.message;
  } finally {
    confirm.disabled = false;
  }
});

// the value leaves the form when the dialog closes, whichever way
$("key-dialog").addEventListener("close", () => { $("value-input").value = ""; });

// -- confirmations: remove, rollback ------------------------------------------------------------

function ask(title, text, ok, action) {
  state.confirm = action;
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = ok;
  $("confirm-error").hidden = true;
  $("confirm-dialog").showModal();
  $("confirm-cancel").focus();
}

function askRemove(key) {
  ask(`Remove ${key}?`, `${key} and its value are removed from the space in a new version; flows lose it at their next sync. An earlier version can be restored from the history.`,
    "Remove", () => call("DELETE", `/api/spaces/${enc(state.ns)}/keys/${enc(key)}`));
}

function askRollback(version) {
  ask(`Roll back to version ${version}?`, `The values of version ${version} become a new version; flows get them at their next sync.`,
    "Roll back", () => call("POST", `/api/spaces/${enc(state.ns)}/rollback`, { version }));
}

$("confirm-cancel").addEventListener("click", () => $("confirm-dialog").close());
$("confirm-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const ok = $("confirm-ok");
  ok.disabled = true;
  try {
    const done = await state.confirm();
    $("confirm-dialog").close();
    toast(done.message);
    refresh();
  } catch (err) {
    $("confirm-error").hidden = false;
    $("confirm-error").textContent = err.message;
  } finally {
    ok.disabled = false;
  }
});

// -- Sync now -----------------------------------------------------------------------------------

async function syncNow(flow) {
  try {
    const path = flow ? `/api/spaces/${enc(state.ns)}/flows/${enc(flow)}/sync` : `/api/spaces/${enc(state.ns)}/sync`;
    const done = await call("POST", path);
    toast(done.message);
  } catch (err) {
    toast(err.message, true);
  }
  refresh();
}

$("sync-all").addEventListener("click", () => syncNow(null));

// -- routes: #/ and #/space/<namespace>[/<tab>] -------------------------------------------------

$("open-space").addEventListener("submit", (event) => {
  event.preventDefault();
  const ns = $("open-ns").value.trim();
  if (ns) location.hash = `#/space/${enc(ns)}`;
});

// -- signing out when left alone ----------------------------------------------------------------
// The server says how long a session may go without the user's input; past that, this tab signs
// itself out, so a tab left open on an unattended desk stops acting as the user. The page's own
// polls are not input. The server also ends a session no request names for that long (plus a
// grace longer than a poll, so this tab's own timer comes first), so input that made no request
// (reading the list of spaces, typing) keeps it alive with one.

for (const type of ["pointerdown", "keydown", "wheel", "touchstart"]) {
  document.addEventListener(type, () => { idle.last = Date.now(); }, { capture: true, passive: true });
}

// a session that ended while this tab went without input ended for that reason, whichever of
// the tab and the server noticed first
function endedReason(message) {
  const unattended = idle.seconds !== null && Date.now() - idle.last >= idle.seconds * 1000;
  return unattended ? `Signed out after ${minutes(idle.seconds)} without input.` : message;
}

function minutes(seconds) {
  return seconds % 60 === 0 ? `${seconds / 60} min` : `${seconds} s`;
}

async function watchIdle() {
  clearTimeout(idle.timer);
  idle.timer = null;
  if (!session.get()) return;
  if (idle.seconds === null) {
    try {
      idle.seconds = Number((await call("GET", "/api/session")).idleSeconds);
    } catch (err) {
      failed(err);
      return;
    }
  }
  const limit = idle.seconds * 1000;
  const left = idle.last + limit - Date.now();
  if (left <= 0) {
    signOut(`Signed out after ${minutes(idle.seconds)} without input.`);
    return;
  }
  if (idle.last > idle.called && Date.now() - idle.called > limit / 2) {
    try {
      await call("GET", "/api/session"); // the user is here: the server must not end it
    } catch (err) {
      failed(err);
      return;
    }
  }
  idle.timer = setTimeout(watchIdle, Math.min(left, limit / 4, 60000) + 50);
}

async function signOut(reason) {
  try {
    await call("POST", "/api/session/sign-out");
  } catch (err) {
    // ended already: nothing to sign out
  }
  session.set(null);
  signIn(reason);
}

function route() {
  if (takeSession()) idle.last = Date.now();
  if (!session.get()) {
    signIn();
    return;
  }
  if (idle.timer === null) watchIdle();
  const match = /^#\/space\/([^/]+)(?:\/(secrets|flows|history))?$/.exec(location.hash);
  if (match) showSpace(decodeURIComponent(match[1]), match[2]);
  else showSpaces();
}

document.addEventListener("visibilitychange", () => { if (!document.hidden && state.view === "view-space") refresh(); });
window.addEventListener("hashchange", route);
route();
