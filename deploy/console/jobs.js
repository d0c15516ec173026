// Jobs: the list (filters, live state) and one job (stages, attempts, timings, reports, source
// metadata, outputs gallery with before/after, downloads and presigned links).
import { TERMINAL, blob, get, query, watchJob } from "./api.js";
import { badge, between, bytes, errorBox, extension, field, h, mount, saveBlob, seconds, when } from "./ui.js";

const STATES = ["", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"];

export function render(main, ctx) {
  return ctx.args[0] ? detail(main, ctx.args[0]) : list(main, ctx);
}

function opNames(ops) {
  return (ops || []).map((o) => Object.keys(o)[0]).join(" → ") || "–";
}

function list(main, { params }) {
  const state = h("select", { name: "state" }, STATES.map((s) => h("option", { value: s, selected: s === (params.get("state") || "") }, s || "any")));
  const tbody = h("tbody");
  const status = h("p", { class: "muted", "aria-live": "polite" });
  let timer = null;
  let token = "";
  const refresh = async () => {
    try {
      const r = await get(`/v1/jobs${query({ page_size: 50, state: state.value })}`);
      token = r.next_page_token;
      mount(tbody, (r.jobs || []).map((j) => h("tr", { dataset: { jobId: j.job_id } },
        h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(j.job_id)}` }, j.job_id)),
        h("td", {}, badge(j.state)),
        h("td", {}, h("progress", { max: 1, value: j.progress || 0, "aria-label": `progress of ${j.job_id}` })),
        h("td", {}, opNames(j.operations)),
        h("td", {}, String((j.outputs || []).length)),
        h("td", {}, when(j.created_at)))));
      mount(status, (r.jobs || []).length ? `Live: refreshed ${new Date().toLocaleTimeString()}${token ? " (newest 50)" : ""}` : "No jobs yet.");
    } catch (err) { mount(status, errorBox(err, "Jobs could not be listed")); }
    timer = setTimeout(refresh, 3000);
  };
  state.addEventListener("change", () => { clearTimeout(timer); refresh(); });
  mount(main, h("h1", {}, "Jobs"), field("State", state),
    h("table", { class: "jobs" },
      h("thead", {}, h("tr", {}, ["Job", "State", "Progress", "Operations", "Outputs", "Created"].map((t) => h("th", { scope: "col" }, t)))),
      tbody), status);
  refresh();
  return () => clearTimeout(timer);
}

function reportView(r) {
  const d = r.denoise;
  if (!d) return h("li", {}, JSON.stringify(r));
  return h("li", {}, `denoise: model ${d.model} ${d.model_version || ""}, σ ${Number(d.sigma).toFixed(2)}`,
    ` (before ${Number(d.sigma_before).toFixed(2)}, after ${Number(d.sigma_after).toFixed(2)}), `,
    `${d.execution_provider || ""} ${d.color_mode || ""}, ${d.tiles || 0} tiles, ${seconds(d.seconds)}`,
    (d.planes || []).length ? h("ul", {}, d.planes.map((p) => h("li", {}, `${p.plane}: σ ${Number(p.sigma).toFixed(2)} (${p.model})`))) : null);
}

function stagesView(job) {
  return h("table", { class: "stages" }, h("caption", {}, "Stages"),
    h("thead", {}, h("tr", {}, ["#", "Service", "Operations", "State", "Attempts", "Started", "Took", "Reports"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, (job.stages || []).map((s) => h("tr", {},
      h("td", {}, String(s.index ?? 0)), h("td", {}, s.service),
      h("td", {}, opNames(s.operations), (s.renditions || []).length ? ` + renditions ${s.renditions.map((r) => r.name).join(", ")}` : ""),
      h("td", {}, badge(s.state), s.error?.reason ? h("div", { class: "reason" }, `${s.error.reason}: ${s.error.message}`) : null),
      h("td", {}, String(s.attempts || 0)), h("td", {}, when(s.started_at)),
      h("td", {}, seconds(between(s.started_at, s.finished_at))),
      h("td", {}, (s.reports || []).length ? h("ul", {}, s.reports.map(reportView)) : "–")))));
}

function metadataView(m) {
  if (!m) return h("p", { class: "muted" }, "No metadata yet.");
  const exif = m.exif || {};
  const rows = [["Format", `${m.format} ${m.width}×${m.height} ${m.mode || ""}`], ["Size", bytes(m.size_bytes)],
    ["Camera", [exif.make, exif.model].filter(Boolean).join(" ") || "–"], ["Taken", when(exif.date_taken)],
    ["GPS", exif.gps ? `${exif.gps.latitude}, ${exif.gps.longitude}` : "–"], ["SHA-256", m.sha256]];
  return h("dl", { class: "meta" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

// Source and output side by side under one slider (before/after).
function compare(beforeUrl, afterUrl) {
  const after = h("img", { src: afterUrl, alt: "output (after)" });
  const before = h("img", { src: beforeUrl, alt: "source (before)" });
  const clip = h("div", { class: "clip" }, before);
  const slider = h("input", { type: "range", min: 0, max: 100, value: 50, "aria-label": "Before/after split, percent of the source shown" });
  const set = () => { clip.style.width = `${slider.value}%`; };
  slider.addEventListener("input", set);
  set();
  return h("figure", { class: "compare", dataset: { testid: "compare" } }, h("div", { class: "stack" }, after, clip), slider,
    h("figcaption", {}, "Left of the split: source; right: output."));
}

async function objectUrl(path) {
  return URL.createObjectURL(await blob(path));
}

async function outputsView(job, urls) {
  const outs = job.outputs || [];
  if (!outs.length) return h("p", { class: "muted" }, job.state === "SUCCEEDED" ? "No outputs." : "Outputs appear when the job succeeds.");
  const compareBox = h("div");
  const source = objectUrl(`/v1/images/${encodeURIComponent(job.image_id)}/content`).catch(() => null);
  const cards = await Promise.all(outs.map(async (o) => {
    const path = o.download_path || `/v1/jobs/${job.job_id}/outputs/${o.index}`;
    const name = `${job.job_id}-${o.rendition || o.index}.${extension(o.format)}`;
    let signed = null;
    try { signed = await get(`${path}:url`); } catch { signed = null; }
    const src = await objectUrl(path).catch(() => signed?.url);
    urls.push(src);
    return h("figure", { class: "output card", dataset: { testid: "output", index: String(o.index) } },
      h("img", { src, alt: `output ${o.rendition || o.index}: ${o.format} ${o.width}×${o.height}`, loading: "lazy", width: o.width, height: o.height }),
      h("figcaption", {},
        h("strong", {}, o.rendition || `output ${o.index}`), ` ${o.format} ${o.width}×${o.height} · ${bytes(o.size_bytes)}`,
        o.provenance?.reused ? " · reused" : "",
        h("div", { class: "actions" },
          h("button", { type: "button", dataset: { testid: "download" }, onclick: async (e) => {
            try { saveBlob(await blob(path), name); } catch (err) { e.target.after(errorBox(err, "Download failed")); }
          } }, `Download ${o.rendition || o.index}`),
          signed ? h("a", { href: signed.url, target: "_blank", rel: "noopener", title: `expires ${when(signed.expires_at)}` }, "Presigned link") : null,
          h("button", { type: "button", onclick: async () => mount(compareBox, compare(await source || "", src)) }, "Compare with source"))));
  }));
  const first = await source;
  if (first && urls[0]) mount(compareBox, compare(first, urls[0]));
  return h("div", {}, h("div", { class: "gallery" }, cards), compareBox);
}

async function detail(main, jobId) {
  const ctrl = new AbortController();
  const urls = [];
  const head = h("div");
  const stages = h("div");
  const outputs = h("section", { "aria-labelledby": "outputs-title" });
  const meta = h("section", { "aria-labelledby": "meta-title" });
  let shownOutputs = false;
  const paint = async (job) => {
    mount(head, h("h1", {}, "Job ", h("code", {}, job.job_id)),
      h("p", {}, badge(job.state), " ", h("progress", { max: 1, value: job.progress || 0, "aria-label": "job progress" }),
        ` image ${job.image_id} · created ${when(job.created_at)}`,
        job.finished_at ? ` · took ${seconds(between(job.created_at, job.finished_at))}` : ""),
      job.error?.reason ? errorBox({ code: job.error.code, reason: job.error.reason, message: job.error.message }, "The job failed") : null);
    head.dataset.state = job.state;
    mount(stages, stagesView(job));
    if (TERMINAL.has(job.state) && !shownOutputs) {
      shownOutputs = true;
      mount(outputs, h("h2", { id: "outputs-title" }, "Outputs"), h("p", { class: "muted" }, "Loading outputs…"));
      const view = await outputsView(job, urls).catch((err) => errorBox(err, "Outputs could not load"));
      mount(outputs, h("h2", { id: "outputs-title" }, "Outputs"), view);
      outputs.dataset.ready = "true";
    }
  };
  mount(main, head, stages, outputs, meta);
  const { job } = await get(`/v1/jobs/${encodeURIComponent(jobId)}`);
  await paint(job);
  get(`/v1/images/${encodeURIComponent(job.image_id)}/metadata`)
    .then((r) => mount(meta, h("h2", { id: "meta-title" }, "Source metadata"), metadataView(r.metadata)))
    .catch((err) => mount(meta, h("h2", { id: "meta-title" }, "Source metadata"), errorBox(err, "No metadata")));
  if (!TERMINAL.has(job.state)) {
    // Live updates; on a dropped stream, poll once and try again with backoff.
    (async () => {
      let delay = 500;
      while (!ctrl.signal.aborted) {
        let last = null;
        try {
          await watchJob(jobId, (j) => { last = j; paint(j); }, ctrl.signal);
        } catch (err) { if (ctrl.signal.aborted) return; }
        if (last && TERMINAL.has(last.state)) return;
        const { job: now } = await get(`/v1/jobs/${encodeURIComponent(jobId)}`).catch(() => ({ job: null }));
        if (now) { await paint(now); if (TERMINAL.has(now.state)) return; }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10000);
      }
    })();
  }
  return () => { ctrl.abort(); urls.forEach((u) => u && u.startsWith("blob:") && URL.revokeObjectURL(u)); };
}
