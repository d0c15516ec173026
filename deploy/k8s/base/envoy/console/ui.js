// Small DOM helpers: no framework, no build step.

// h("button", {type: "button", onclick}, "text", child...) -> an element.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
export const nextId = (p = "f") => `${p}${++uid}`;

// A labelled control: <label for=id>text</label><input id=id ...>.
export function field(label, control, hint) {
  control.id ||= nextId();
  const hintEl = hint ? h("small", { id: `${control.id}-hint`, class: "hint" }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintEl);
}

// An API error with its code, reason and every field violation: never a blank page.
export function errorBox(err, title = "Request failed") {
  const fields = err.fields || [];
  return h("div", { class: "error", role: "alert", dataset: { testid: "error" } },
    h("strong", {}, title, ": "),
    h("span", { class: "code" }, err.code || "ERROR"),
    err.reason ? h("span", { class: "reason", dataset: { testid: "error-reason" } }, ` ${err.reason}`) : null,
    h("p", {}, err.message || String(err)),
    fields.length ? h("ul", {}, fields.map((f) => h("li", {}, h("code", {}, f.field), ": ", f.description))) : null);
}

export function alertError(err, title) {
  const box = mount(document.getElementById("alerts"), errorBox(err, title));
  box.querySelector(".error").append(
    h("button", { type: "button", class: "link", onclick: () => box.replaceChildren() }, "Dismiss"));
}

export function clearAlerts() { document.getElementById("alerts").replaceChildren(); }

export function bytes(n) {
  n = Number(n || 0);
  if (n < 1024) return `${n} B`;
  const u = ["KB", "MB", "GB", "TB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
  return `${n.toFixed(n < 10 ? 1 : 0)} ${u[i]}`;
}

export function seconds(s) {
  if (s === undefined || s === null || Number.isNaN(s)) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m}m${String(Math.round(s % 60)).padStart(2, "0")}s`;
}

// google.protobuf.Duration JSON ("1.5s") -> seconds.
export const duration = (d) => (d ? parseFloat(String(d)) : undefined);

export function when(ts) {
  if (!ts) return "–";
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? ts : d.toLocaleString();
}

export function between(a, b) {
  if (!a || !b) return undefined;
  return (new Date(b) - new Date(a)) / 1000;
}

export function badge(state) {
  return h("span", { class: `badge s-${String(state || "").toLowerCase()}` }, state || "–");
}

// Recent uploads of this browser session (the pipeline builder offers them).
export const recent = {
  list() {
    try { return JSON.parse(sessionStorage.getItem("pixmesh.recent") || "[]"); } catch { return []; }
  },
  add(image) {
    const all = [image, ...recent.list().filter((i) => i.image_id !== image.image_id)].slice(0, 50);
    sessionStorage.setItem("pixmesh.recent", JSON.stringify(all));
  },
};

// Download a Blob under a file name.
export function saveBlob(data, name) {
  const url = URL.createObjectURL(data);
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export function extension(format) {
  return { JPEG: "jpg", PNG: "png", WEBP: "webp", AVIF: "avif", GIF: "gif", TIFF: "tiff", HEIF: "heic", BMP: "bmp" }[format] || "bin";
}
