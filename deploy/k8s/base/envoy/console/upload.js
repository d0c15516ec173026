// Upload: drag and drop or pick several files; one progress bar each; big files presigned.
import { PRESIGN_BYTES, upload } from "./api.js";
import { bytes, errorBox, h, mount, recent } from "./ui.js";

export function render(main) {
  const input = h("input", { type: "file", id: "files", multiple: true, accept: "image/*,video/*", class: "visually-hidden" });
  const list = h("ul", { class: "uploads", "aria-live": "polite", dataset: { testid: "uploads" } });
  const zone = h("label", { for: "files", class: "dropzone", tabindex: "-1" },
    h("strong", {}, "Drop images here"), " or ", h("span", { class: "link" }, "choose files"),
    h("small", { class: "hint" }, `Files over ${bytes(PRESIGN_BYTES)} go straight to object storage with a presigned URL.`));

  const start = (files) => { for (const f of files) one(f, list); };
  input.addEventListener("change", () => { start(input.files); input.value = ""; });
  for (const ev of ["dragenter", "dragover"]) {
    zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.add("over"); });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    start(e.dataTransfer.files);
  });
  mount(main,
    h("h1", {}, "Upload"),
    h("div", { class: "field" }, input, zone),
    list);
}

async function one(file, list) {
  const bar = h("progress", { max: 1, value: 0, "aria-label": `Upload progress of ${file.name}` });
  const status = h("span", { class: "muted" }, file.size > PRESIGN_BYTES ? "presigned…" : "uploading…");
  const item = h("li", { class: "card upload", dataset: { testid: "upload-item" } },
    h("div", {}, h("strong", {}, file.name), " ", h("span", { class: "muted" }, bytes(file.size))), bar, status);
  list.prepend(item);
  try {
    const { image, presigned } = await upload(file, (p) => { bar.value = p; });
    bar.value = 1;
    recent.add({ ...image, filename: image.filename || file.name });
    mount(status,
      h("span", { dataset: { testid: "image-id" } }, image.image_id), " · ",
      `${image.format} ${image.width}×${image.height}${presigned ? " · presigned" : ""} · `,
      h("a", { href: `#/pipeline?image=${encodeURIComponent(image.image_id)}` }, "Build a pipeline"));
    item.dataset.imageId = image.image_id;
    item.classList.add("done");
  } catch (err) {
    item.classList.add("failed");
    mount(status, errorBox(err, `${file.name} was not uploaded`));
  }
}
