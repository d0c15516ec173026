// Operations: GetFleetStatus polled live (a live/down badge; after a failure it tries again with
// exponential backoff), queues, replicas, dead letters, jobs/s and queue depth charts; the
// dead-letter list with replay for admin keys.
import { get, post, session } from "./api.js";
import { duration, errorBox, h, mount, seconds, when } from "./ui.js";

const EVERY_MS = 1000;
const MAX_BACKOFF_MS = 30000;
const HISTORY = 300; // points kept: 5 minutes at one a second
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

// A line chart of several series over the same timestamps, in plain SVG.
function chart(title, series, unit) {
  const W = 600, H = 140, P = 28;
  const all = series.flatMap((s) => s.points.map((p) => p[1]));
  const max = Math.max(1, ...all);
  const t0 = Math.min(...series.flatMap((s) => s.points.map((p) => p[0])), Date.now() - 60000);
  const t1 = Date.now();
  const x = (t) => P + ((t - t0) / Math.max(1, t1 - t0)) * (W - P - 8);
  const y = (v) => H - 18 - (v / max) * (H - 30);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}: ${series.map((s) => `${s.name} ${s.points.at(-1)?.[1] ?? 0}${unit}`).join(", ")}` });
  root.append(svg("line", { x1: P, y1: y(0), x2: W - 8, y2: y(0), class: "axis" }));
  const top = svg("text", { x: 2, y: 14, class: "tick" });
  top.textContent = `${Number(max.toFixed(2))}${unit}`;
  root.append(top);
  series.forEach((s, i) => {
    if (!s.points.length) return;
    root.append(svg("polyline", { points: s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "), class: `series c${i % 6}` }));
  });
  const legend = h("ul", { class: "legend" }, series.map((s, i) => h("li", { class: `c${i % 6}` }, `${s.name}: ${Number((s.points.at(-1)?.[1] ?? 0).toFixed(2))}${unit}`)));
  return h("figure", { class: "chart card" }, h("figcaption", {}, title), root, legend);
}

function queueRow(svc, q) {
  return h("tr", { dataset: { queue: q.consumer } },
    h("th", { scope: "row" }, svc.service), h("td", {}, String(svc.replicas || 0)),
    h("td", {}, q.consumer || "–"),
    h("td", { dataset: { testid: `pending-${q.consumer}` } }, String(q.pending ?? 0)),
    h("td", {}, String(q.ack_pending ?? 0)),
    h("td", {}, q.oldest_age ? seconds(duration(q.oldest_age)) : "–"),
    h("td", {}, String(q.redelivered ?? 0)),
    h("td", {}, String(svc.dead_letters ?? 0)));
}

function fleetTable(status) {
  const rows = (status.services || []).flatMap((svc) =>
    (svc.queues || []).length ? svc.queues.map((q) => queueRow(svc, q)) : [queueRow(svc, {})]);
  return h("table", { class: "fleet", dataset: { testid: "fleet" } }, h("caption", {}, "Services and queues"),
    h("thead", {}, h("tr", {}, ["Service", "Replicas", "Queue", "Pending", "In flight", "Oldest", "Redelivered", "DLQ"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows));
}

function deadLetters(box) {
  const load = async () => {
    try {
      const r = await get("/v1/deadLetters?page_size=50");
      const items = r.dead_letters || [];
      mount(box, h("h2", { id: "dlq-title" }, "Dead letters"),
        items.length ? h("table", { dataset: { testid: "dead-letters" } },
          h("thead", {}, h("tr", {}, ["#", "Service", "Job", "Reason", "Deliveries", "When", ""].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, items.map((d) => h("tr", {},
            h("td", {}, String(d.seq)), h("td", {}, d.service), h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(d.job_id)}` }, d.job_id)),
            h("td", {}, `${d.error?.reason || ""} ${d.error?.message || ""}`), h("td", {}, String(d.deliveries || 0)), h("td", {}, when(d.time)),
            h("td", {}, h("button", { type: "button", onclick: async (e) => {
              try { await post(`/v1/jobs/${encodeURIComponent(d.job_id)}:replay`, {}); e.target.replaceWith(h("span", {}, "replayed")); } catch (err) { e.target.after(errorBox(err, "Replay failed")); }
            } }, `Replay ${d.job_id}`)))))) : h("p", { class: "muted" }, "No dead letters."));
    } catch (err) {
      mount(box, h("h2", { id: "dlq-title" }, "Dead letters"), errorBox(err, "Dead letters need an admin key"));
    }
  };
  return load;
}

export function render(main) {
  const live = h("span", { class: "badge s-pending", dataset: { testid: "live" }, role: "status" }, "connecting");
  const table = h("div");
  const charts = h("div", { class: "charts" });
  const summary = h("p", {});
  const warnings = h("ul", { class: "warnings" });
  const dlq = h("section", { "aria-labelledby": "dlq-title" });
  const history = { created: [], finished: [], p50: [], p95: [], queues: new Map() };
  let timer = null;
  let backoff = EVERY_MS;
  let stopped = false;
  const admin = (session.caller?.scopes || []).includes("admin");
  const loadDlq = deadLetters(dlq);

  const push = (arr, p) => { arr.push(p); if (arr.length > HISTORY) arr.shift(); };
  const tick = async () => {
    try {
      const { status } = await get("/v1/fleet");
      const now = Date.now();
      backoff = EVERY_MS;
      live.textContent = "live";
      live.className = "badge s-succeeded";
      const jobs = status.jobs || {};
      push(history.created, [now, jobs.created_per_second || 0]);
      push(history.finished, [now, jobs.finished_per_second || 0]);
      push(history.p50, [now, duration(jobs.latency_p50) || 0]);
      push(history.p95, [now, duration(jobs.latency_p95) || 0]);
      for (const svc of status.services || []) {
        for (const q of svc.queues || []) {
          if (!history.queues.has(q.consumer)) history.queues.set(q.consumer, []);
          push(history.queues.get(q.consumer), [now, Number(q.pending || 0) + Number(q.ack_pending || 0)]);
        }
      }
      mount(table, fleetTable(status));
      mount(summary, `Jobs/s over ${seconds(duration(jobs.window))}: ${Number(jobs.created_per_second || 0).toFixed(2)} created, `,
        `${Number(jobs.finished_per_second || 0).toFixed(2)} finished (${jobs.failed || 0} failed); running ${jobs.running || 0}, pending ${jobs.pending || 0} · ${when(status.time)}`);
      mount(warnings, (status.warnings || []).map((w) => h("li", {}, w)));
      mount(charts,
        chart("Jobs per second", [{ name: "created", points: history.created }, { name: "finished", points: history.finished }], "/s"),
        chart("Job latency, created to finished (s)", [{ name: "p50", points: history.p50 }, { name: "p95", points: history.p95 }], " s"),
        chart("Queue depth (pending + in flight)", [...history.queues].map(([name, points]) => ({ name, points })), ""));
    } catch (err) {
      if (err.code === "PERMISSION_DENIED") { // retrying cannot help: the key lacks the scope
        live.textContent = "admin only";
        live.className = "badge s-failed";
        mount(table, errorBox(err, "The operations view needs a key with the admin scope"));
        return;
      }
      live.textContent = `down — retrying in ${seconds(backoff / 1000)}`;
      live.className = "badge s-failed";
      mount(table, errorBox(err, "Fleet status unavailable"));
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      if (!stopped) timer = setTimeout(tick, backoff);
      return;
    }
    if (!stopped) timer = setTimeout(tick, EVERY_MS);
  };
  mount(main, h("h1", {}, "Operations ", live), summary, warnings, table, charts,
    admin ? dlq : h("p", { class: "muted" }, "Dead letters and replay need a key with the admin scope."));
  tick();
  if (admin) loadDlq();
  return () => { stopped = true; clearTimeout(timer); };
}

