// Pipeline builder: generated from ListOperations (operations, parameters, limits, presets),
// with renditions, a PlanJob preview and CreateJob.
import { get, post } from "./api.js";
import { errorBox, field, h, mount, nextId, recent } from "./ui.js";

const NUMBER = new Set(["double", "float", "int32", "int64", "uint32", "uint64"]);

// "1..8192" / "0..255" / ">= 1" -> {min, max}
function limits(constraint = "") {
  const range = /(-?\d+(?:\.\d+)?)\s*\.\.\s*(-?\d+(?:\.\d+)?)/.exec(constraint);
  if (range) return { min: range[1], max: range[2] };
  const ge = />=?\s*(-?\d+(?:\.\d+)?)/.exec(constraint);
  return ge ? { min: ge[1] } : {};
}

// Enum values named in the parameter's text (ListOperations names the enum type, not its values).
function enumWords(p) {
  const words = `${p.constraint || ""} ${p.description || ""}`.match(/\b[A-Z][A-Z0-9_]{1,}\b/g) || [];
  return [...new Set(words)];
}

function paramControl(p) {
  const type = p.type || "string";
  const scalar = type.replace(/^repeated /, "");
  if (type === "bool") {
    const c = h("input", { type: "checkbox", name: p.name });
    c.read = () => (c.checked ? true : undefined);
    return c;
  }
  if (NUMBER.has(type)) {
    const c = h("input", { type: "number", name: p.name, step: type.startsWith("float") || type === "double" ? "any" : "1", ...limits(p.constraint) });
    c.read = () => (c.value === "" ? undefined : Number(c.value));
    return c;
  }
  // Nested enums are named Message.Enum (pixmesh.common.v1.Resize.Mode); a Gravity is a
  // message whose anchor is one of the compass points the text lists.
  const parts = scalar.split(".");
  const isEnum = parts.length > 1 && /^[A-Z]/.test(parts.at(-2));
  const isGravity = scalar.endsWith(".Gravity");
  if ((isEnum || isGravity) && enumWords(p).length && !type.startsWith("repeated")) {
    const words = enumWords(p).filter((w) => !w.endsWith("_UNSPECIFIED") && !(isGravity && w === "FOCUS_POINT"));
    const c = h("select", { name: p.name }, h("option", { value: "" }, "(default)"),
      words.map((w) => h("option", { value: w }, w)));
    c.read = () => (c.value ? (isGravity ? { anchor: c.value } : c.value) : undefined);
    return c;
  }
  if (scalar.startsWith("pixmesh.") || type.startsWith("repeated")) {
    const c = h("input", { type: "text", name: p.name, placeholder: type.startsWith("repeated") ? "JSON list" : "JSON, e.g. {\"anchor\": \"CENTER\"}" });
    c.read = () => {
      if (!c.value.trim()) return undefined;
      try { return JSON.parse(c.value); } catch { return c.value; }
    };
    return c;
  }
  const c = h("input", { type: "text", name: p.name });
  c.read = () => c.value || undefined;
  return c;
}

// One step: an operation select and its parameters.
function stepEditor(ops, onRemove, allowed) {
  const choices = ops.filter((o) => !allowed || allowed(o));
  const select = h("select", { name: "operation" }, h("option", { value: "" }, "Choose an operation…"),
    choices.map((o) => h("option", { value: o.name, disabled: !o.available },
      `${o.name} (${o.service})${o.available ? "" : ` — ${o.unavailable_reason || "unavailable"}`}`)));
  const params = h("div", { class: "params" });
  let controls = [];
  const el = h("li", { class: "step card" });
  select.addEventListener("change", () => {
    const op = ops.find((o) => o.name === select.value);
    controls = (op?.parameters || []).map((p) => [p, paramControl(p)]);
    mount(params, op ? h("p", { class: "muted" }, op.description) : null,
      controls.map(([p, c]) => (c.type === "checkbox"
        ? h("div", { class: "field check" }, c, h("label", { for: c.id || (c.id = nextId()) }, p.name), h("small", { class: "hint" }, p.description))
        : field(p.name, c, [p.description, p.constraint && `(${p.constraint})`].filter(Boolean).join(" ")))));
  });
  mount(el, h("div", { class: "row" }, field("Operation", select),
    h("button", { type: "button", class: "link", onclick: () => { el.remove(); onRemove?.(); } }, "Remove step")), params);
  el.read = () => {
    if (!select.value) return null;
    const values = {};
    for (const [p, c] of controls) {
      const v = c.read();
      if (v !== undefined) values[p.name] = v;
    }
    return { [select.value]: values };
  };
  el.select = select;
  return el;
}

function stepList(ops, title, allowed) {
  const list = h("ol", { class: "steps" });
  const add = h("button", { type: "button", onclick: () => { const s = stepEditor(ops, null, allowed); list.append(s); s.select.focus(); } }, `Add ${title}`);
  const box = h("div", {}, list, add);
  box.read = () => [...list.children].map((s) => s.read()).filter(Boolean);
  box.add = (name, values = {}) => {
    const s = stepEditor(ops, null, allowed);
    list.append(s);
    s.select.value = name;
    s.select.dispatchEvent(new Event("change"));
    for (const [k, v] of Object.entries(values)) {
      const c = s.querySelector(`[name="${k}"]`);
      if (c) c.value = v;
    }
    return s;
  };
  return box;
}

function renditionEditor(ops, presets, index) {
  const name = h("input", { type: "text", name: "rendition-name", value: `r${index}`, pattern: "[a-z0-9_-]{1,64}", required: true });
  const preset = h("select", { name: "rendition-preset" }, h("option", { value: "" }, "(none)"),
    presets.map((p) => h("option", { value: p.name }, p.name)));
  const steps = stepList(ops, "operation to this rendition", (o) => o.service === "imaging");
  const el = h("fieldset", { class: "rendition card" },
    h("legend", {}, `Rendition ${index}`),
    h("div", { class: "row" }, field("Rendition name", name, "a-z, 0-9, _ and -"), field("Rendition preset", preset)),
    steps,
    h("button", { type: "button", class: "link", onclick: () => el.remove() }, "Remove rendition"));
  el.read = () => ({ name: name.value, preset: preset.value || undefined, operations: steps.read() });
  el.steps = steps;
  el.nameInput = name;
  return el;
}

function planView(resp) {
  const plan = resp.plan || {};
  const cost = plan.estimated_cost || {};
  const rows = (plan.renditions || []).map((r) => h("tr", {},
    h("th", { scope: "row" }, r.name), h("td", {}, `${r.plan?.output_width}×${r.plan?.output_height}`),
    h("td", {}, r.plan?.output_format), h("td", {}, r.plan?.estimated_cost?.cpu_ms ?? "–")));
  return h("section", { class: "card", "aria-labelledby": "plan-title", dataset: { testid: "plan" } },
    h("h2", { id: "plan-title" }, "Plan"),
    h("p", {}, `Input ${resp.image?.format} ${resp.image?.width}×${resp.image?.height} → `,
      h("strong", {}, `${plan.output_width}×${plan.output_height} ${plan.output_format}`),
      plan.output_frames > 1 ? ` (${plan.output_frames} frames)` : ""),
    h("ol", {}, (plan.operations || []).map((o) => h("li", {},
      `${Object.keys(o.operation || {})[0] || "?"} on ${o.service} → ${o.width}×${o.height}`))),
    rows.length ? h("table", {}, h("caption", {}, "Renditions"),
      h("thead", {}, h("tr", {}, ["Name", "Size", "Format", "CPU ms"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows)) : null,
    h("p", { class: "muted" }, `Estimated cost: ${cost.decoded_megapixels ?? 0} MP decoded, `,
      `${cost.processed_megapixels ?? 0} MP processed, ${cost.cpu_ms ?? 0} ms CPU`));
}

export async function render(main, { params }) {
  const caps = await get("/v1/operations");
  const ops = caps.operations || [];
  const presets = caps.presets || [];
  const recents = recent.list();
  const image = h("input", { type: "text", name: "image", required: true, value: params.get("image") || recents[0]?.image_id || "", list: "recent-images", placeholder: "img_…" });
  const datalist = h("datalist", { id: "recent-images" },
    recents.map((i) => h("option", { value: i.image_id }, `${i.filename || ""} ${i.format} ${i.width}×${i.height}`)));
  const preset = h("select", { name: "preset" }, h("option", { value: "" }, "(none)"),
    presets.map((p) => h("option", { value: p.name }, p.name)));
  const steps = stepList(ops, "operation");
  const renditions = h("div", { class: "renditions" });
  let count = 0;
  const addRendition = () => { const r = renditionEditor(ops, presets, ++count); renditions.append(r); r.nameInput.focus(); return r; };
  const out = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "pipeline", "aria-labelledby": "pipeline-title" },
    h("h1", { id: "pipeline-title" }, "Pipeline"),
    field("Image", image, "an image id; your recent uploads are suggested"), datalist,
    field("Preset", preset, "its operations run first"),
    h("h2", {}, "Operations"), steps,
    h("h2", {}, "Renditions"),
    h("p", { class: "muted" }, "Each rendition is one more output, made from the result of the operations above (imaging operations only)."),
    renditions,
    h("button", { type: "button", onclick: addRendition }, "Add rendition"),
    h("div", { class: "actions" },
      h("button", { type: "button", name: "plan" }, "Preview plan"),
      h("button", { type: "submit", class: "primary" }, "Create job")),
    out,
    h("details", {}, h("summary", {}, `Limits and formats`),
      h("pre", {}, JSON.stringify({ limits: caps.limits, input_formats: caps.input_formats, output_formats: caps.output_formats }, null, 1))));
  const body = () => ({
    image_id: image.value.trim(),
    preset: preset.value || undefined,
    operations: steps.read(),
    renditions: [...renditions.children].map((r) => r.read()),
  });
  form.querySelector('[name="plan"]').addEventListener("click", async () => {
    mount(out, h("p", { class: "muted" }, "Planning…"));
    try { mount(out, planView(await post("/v1/jobs:plan", body()))); } catch (err) { mount(out, errorBox(err, "The plan was refused")); }
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    mount(out, h("p", { class: "muted" }, "Creating the job…"));
    try {
      const { job } = await post("/v1/jobs", { ...body(), idempotency_key: crypto.randomUUID() });
      location.hash = `#/jobs/${encodeURIComponent(job.job_id)}`;
    } catch (err) { mount(out, errorBox(err, "The job was refused")); }
  });
  mount(main, form);
  // A sensible start: two renditions (a thumbnail and a medium size) the user edits.
  if (params.get("example") !== "0" && ops.some((o) => o.name === "resize")) {
    const a = addRendition();
    a.nameInput.value = "thumb";
    a.steps.add("resize", { width: 160, height: 160 });
    const b = addRendition();
    b.nameInput.value = "medium";
    b.steps.add("resize", { width: 640 });
    image.focus();
  }
}

