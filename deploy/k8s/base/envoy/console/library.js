// Library: the tenant's images (SearchImages) with ThumbHash placeholders while the preview
// loads; search by camera, date, size, format and GPS box; "find similar" (FindSimilar).
import { blob, get, post } from "./api.js";
import { bytes, errorBox, field, h, mount, when } from "./ui.js";
import { thumbHashToDataURL } from "./thumbhash.js";

const FORMATS = ["JPEG", "PNG", "WEBP", "AVIF", "GIF", "TIFF", "HEIF", "BMP"];

function placeholder(m) {
  const th = m?.placeholders?.thumbhash;
  if (!th) return "";
  try {
    return thumbHashToDataURL(Uint8Array.from(atob(th), (c) => c.charCodeAt(0)));
  } catch { return ""; }
}

// Load previews only when their card scrolls into view.
const seen = new IntersectionObserver((entries) => {
  for (const e of entries) {
    if (!e.isIntersecting) continue;
    seen.unobserve(e.target);
    const img = e.target;
    blob(img.dataset.preview).then((b) => {
      img.src = URL.createObjectURL(b);
      img.classList.add("loaded");
    }).catch(() => img.classList.add("failed"));
  }
}, { rootMargin: "200px" });

function card(rec, onSimilar, distance) {
  const m = rec.metadata || {};
  const exif = m.exif || {};
  const img = h("img", {
    src: placeholder(m) || "data:,", alt: `${m.format || "image"} ${m.width}×${m.height}${exif.model ? `, ${exif.model}` : ""}`,
    width: 200, height: Math.round(200 * (m.height || 1) / (m.width || 1)), dataset: { preview: `/v1/images/${encodeURIComponent(rec.image_id)}/preview` },
  });
  seen.observe(img);
  return h("figure", { class: "thumb card", dataset: { testid: "library-item", imageId: rec.image_id } }, img,
    h("figcaption", {},
      h("code", {}, rec.image_id), h("br"),
      `${m.format || ""} ${m.width}×${m.height} · ${bytes(m.size_bytes)}`,
      distance !== undefined ? ` · distance ${distance}` : "",
      exif.make || exif.model ? h("div", {}, [exif.make, exif.model].filter(Boolean).join(" ")) : null,
      exif.date_taken ? h("div", {}, when(exif.date_taken)) : null,
      h("div", { class: "actions" },
        h("button", { type: "button", onclick: () => onSimilar(rec.image_id) }, "Find similar"),
        h("a", { href: `#/pipeline?image=${encodeURIComponent(rec.image_id)}` }, "Process"))));
}

export async function render(main) {
  const inputs = {
    camera_make: h("input", { type: "text", name: "camera_make" }),
    camera_model: h("input", { type: "text", name: "camera_model" }),
    taken_after: h("input", { type: "date", name: "taken_after" }),
    taken_before: h("input", { type: "date", name: "taken_before" }),
    min_width: h("input", { type: "number", min: 0, name: "min_width" }),
    max_width: h("input", { type: "number", min: 0, name: "max_width" }),
    min_height: h("input", { type: "number", min: 0, name: "min_height" }),
    max_height: h("input", { type: "number", min: 0, name: "max_height" }),
    min_latitude: h("input", { type: "number", step: "any", min: -90, max: 90, name: "min_latitude" }),
    max_latitude: h("input", { type: "number", step: "any", min: -90, max: 90, name: "max_latitude" }),
    min_longitude: h("input", { type: "number", step: "any", min: -180, max: 180, name: "min_longitude" }),
    max_longitude: h("input", { type: "number", step: "any", min: -180, max: 180, name: "max_longitude" }),
  };
  const formats = h("select", { name: "formats", multiple: true, size: 4 }, FORMATS.map((f) => h("option", { value: f }, f)));
  const grid = h("div", { class: "gallery", "aria-live": "polite", dataset: { testid: "library" } });
  const title = h("h2", { id: "results-title" }, "Images");
  let next = "";
  const more = h("button", { type: "button", hidden: true }, "More");

  const request = () => {
    const b = {};
    for (const [k, el] of Object.entries(inputs)) {
      if (el.value === "") continue;
      if (el.type === "date") b[k] = new Date(`${el.value}T${k === "taken_before" ? "23:59:59" : "00:00:00"}Z`).toISOString();
      else b[k] = el.type === "number" ? Number(el.value) : el.value;
    }
    const f = [...formats.selectedOptions].map((o) => o.value);
    if (f.length) b.formats = f;
    return b;
  };
  const search = async (append = false) => {
    try {
      const r = await post("/v1/images:search", { ...request(), page_size: 48, page_token: append ? next : undefined });
      next = r.next_page_token || "";
      more.hidden = !next;
      const cards = (r.images || []).map((rec) => card(rec, similar));
      if (append) grid.append(...cards);
      else mount(grid, cards.length ? cards : h("p", { class: "muted" }, "No image matches."));
      title.textContent = "Images";
    } catch (err) { mount(grid, errorBox(err, "Search failed")); }
  };
  const similar = async (id) => {
    try {
      const r = await get(`/v1/images/${encodeURIComponent(id)}:similar`);
      title.textContent = `Similar to ${id}`;
      more.hidden = true;
      mount(grid, (r.images || []).length ? r.images.map((rec) => card(rec, similar, rec.distance)) : h("p", { class: "muted" }, "Nothing similar."));
      title.focus?.();
    } catch (err) { mount(grid, errorBox(err, "Find similar failed")); }
  };
  more.addEventListener("click", () => search(true));
  const form = h("form", { class: "search card", "aria-labelledby": "search-title" },
    h("h2", { id: "search-title" }, "Search"),
    h("div", { class: "grid-fields" },
      field("Camera make", inputs.camera_make), field("Camera model", inputs.camera_model),
      field("Taken after", inputs.taken_after), field("Taken before", inputs.taken_before),
      field("Min width", inputs.min_width), field("Max width", inputs.max_width),
      field("Min height", inputs.min_height), field("Max height", inputs.max_height),
      field("Min latitude", inputs.min_latitude), field("Max latitude", inputs.max_latitude),
      field("Min longitude", inputs.min_longitude), field("Max longitude", inputs.max_longitude),
      field("Formats", formats, "none selected: any")),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Search"), h("button", { type: "reset" }, "Clear")));
  form.addEventListener("submit", (e) => { e.preventDefault(); search(); });
  form.addEventListener("reset", () => setTimeout(search));
  mount(main, h("h1", {}, "Library"), form, h("section", { "aria-labelledby": "results-title" }, title, grid, more));
  await search();
}
