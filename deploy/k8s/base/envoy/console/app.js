// The console's shell: sign-in, the hash router and the header.
import { ApiError, call, session } from "./api.js";
import { clearAlerts, errorBox, field, h, mount } from "./ui.js";

const pages = {
  upload: () => import("./upload.js"),
  pipeline: () => import("./pipeline.js"),
  jobs: () => import("./jobs.js"),
  library: () => import("./library.js"),
  ops: () => import("./ops.js"),
};
const TITLES = { upload: "Upload", pipeline: "Pipeline", jobs: "Jobs", library: "Library", ops: "Operations" };

const main = document.getElementById("main");
let cleanup = null;

// Who the key belongs to: GetCaller; a key that fails it is refused with the API's reason.
async function whoami(key) {
  return call("GET", "/v1/me", undefined, key);
}

function signIn() {
  const input = h("input", { type: "password", name: "key", autocomplete: "off", required: true,
    spellcheck: "false", placeholder: "pm_…" });
  const status = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "card narrow", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in"),
    h("p", { class: "muted" }, "Use an API key (", h("code", {}, "make up"),
      " prints one and writes it to ", h("code", {}, ".pixmesh/api-key"),
      "). It is kept in this tab's session storage only."),
    field("API key", input),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    mount(status, h("p", { class: "muted" }, "Checking the key…"));
    try {
      const caller = await whoami(key);
      session.save(key, caller);
      location.hash = "#/upload";
      render();
    } catch (err) {
      mount(status, errorBox(err, "Sign-in failed"));
      input.focus();
    }
  });
  mount(main, form);
  input.focus();
}

function header() {
  const caller = session.caller;
  const signedIn = Boolean(session.key);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("who").hidden = !signedIn;
  const scopes = (caller?.scopes || []).join(", ");
  document.getElementById("tenant").textContent = caller
    ? `tenant ${caller.tenant_id}${scopes ? ` · ${scopes}` : ""}` : "";
  const route = (location.hash.slice(2).split(/[/?]/)[0]) || "upload";
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === `#/${route}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function render() {
  if (cleanup) { try { cleanup(); } catch { /* page already gone */ } cleanup = null; }
  clearAlerts();
  header();
  if (!session.key) { document.title = "Sign in · pixmesh"; return signIn(); }
  const [path, search] = location.hash.slice(2).split("?");
  const [name, ...rest] = (path || "upload").split("/");
  const load = pages[name] || pages.upload;
  document.title = `${TITLES[name] || "Upload"} · pixmesh`;
  try {
    const mod = await load();
    mount(main);
    cleanup = await mod.render(main, { args: rest.map(decodeURIComponent), params: new URLSearchParams(search || "") }) || null;
  } catch (err) {
    if (err instanceof ApiError && err.code === "UNAUTHENTICATED") { session.clear(); return render(); }
    mount(main, errorBox(err, "This page could not load"));
  }
  main.focus({ preventScroll: true });
}

document.getElementById("signout").addEventListener("click", () => {
  session.clear();
  sessionStorage.removeItem("pixmesh.recent");
  location.hash = "";
  render();
});
window.addEventListener("hashchange", render);
render();
