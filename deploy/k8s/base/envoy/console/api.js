// The REST API (same origin, through Envoy's gRPC-JSON transcoder) and the session's API key.
// Errors come back as google.rpc.Status JSON; ApiError keeps its code, reason and field violations.

const KEY = "pixmesh.key";
const CALLER = "pixmesh.caller";
// Files above this go straight to object storage with a presigned PUT (CreateUploadUrl).
export const PRESIGN_BYTES = 4 * 1024 * 1024;

export const session = {
  get key() { return sessionStorage.getItem(KEY) || ""; },
  get caller() {
    try { return JSON.parse(sessionStorage.getItem(CALLER) || "null"); } catch { return null; }
  },
  save(key, caller) {
    sessionStorage.setItem(KEY, key);
    sessionStorage.setItem(CALLER, JSON.stringify(caller));
  },
  clear() { sessionStorage.removeItem(KEY); sessionStorage.removeItem(CALLER); },
};

const CODES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
  "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"];

export class ApiError extends Error {
  constructor(status, body, fallback) {
    const b = body && typeof body === "object" ? body : {};
    super(b.message || fallback || `HTTP ${status}`);
    this.status = status;
    this.code = typeof b.code === "number" ? CODES[b.code] || String(b.code) : `HTTP ${status}`;
    this.reason = "";
    this.fields = [];
    for (const d of b.details || []) {
      if (d.reason) this.reason = d.reason;
      for (const v of d.field_violations || d.fieldViolations || []) {
        this.fields.push({ field: v.field, description: v.description });
      }
    }
  }
}

async function parse(resp) {
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : {}; } catch { body = null; }
  if (!resp.ok) throw new ApiError(resp.status, body, text.slice(0, 200) || resp.statusText);
  return body;
}

function headers(extra = {}) {
  return { authorization: `Bearer ${session.key}`, ...extra };
}

export async function call(method, path, body, key) {
  const init = { method, headers: headers(body === undefined ? {} : { "content-type": "application/json" }) };
  if (key !== undefined) init.headers.authorization = `Bearer ${key}`;
  if (body !== undefined) init.body = JSON.stringify(body);
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { message: `network error: ${e.message}` });
  }
  return parse(resp);
}

export const get = (path) => call("GET", path);
export const post = (path, body = {}) => call("POST", path, body);

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

// XMLHttpRequest: fetch has no upload progress.
function xhr(method, url, body, hdrs, onProgress) {
  return new Promise((resolve, reject) => {
    const r = new XMLHttpRequest();
    r.open(method, url);
    for (const [k, v] of Object.entries(hdrs)) r.setRequestHeader(k, v);
    r.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    r.onerror = () => reject(new ApiError(0, { message: `network error uploading to ${new URL(url, location.href).host}` }));
    r.onload = () => {
      let parsed = null;
      try { parsed = r.responseText ? JSON.parse(r.responseText) : {}; } catch { parsed = null; }
      if (r.status >= 200 && r.status < 300) resolve(parsed);
      else reject(new ApiError(r.status, parsed, r.responseText.slice(0, 200) || r.statusText));
    };
    r.send(body);
  });
}

// One file: through the gateway (UploadImageRaw), or presigned PUT + RegisterUpload when big.
export async function upload(file, onProgress, { presignAbove = PRESIGN_BYTES } = {}) {
  if (file.size > presignAbove) {
    const u = await post("/v1/images:uploadUrl", { filename: file.name, size_bytes: String(file.size) });
    // Content-Length is signed; the browser sets it from the body (it may not be set by hand).
    const signed = Object.fromEntries(
      Object.entries(u.headers || {}).filter(([k]) => k.toLowerCase() !== "content-length"));
    await xhr("PUT", u.url, file, signed, onProgress);
    const r = await post("/v1/images:register", { upload_id: u.upload_id });
    return { image: r.image, presigned: true };
  }
  const type = file.type || "application/octet-stream";
  const r = await xhr("POST", `/v1/images${query({ filename: file.name })}`, file,
    headers({ "content-type": type }), onProgress);
  return { image: r.image, presigned: false };
}

// WatchJob as NDJSON: calls onJob for every change until the job is terminal or `signal` aborts.
export async function watchJob(jobId, onJob, signal) {
  const resp = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}:watch`, { headers: headers(), signal });
  if (!resp.ok) return parse(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line) continue;
      const msg = JSON.parse(line);
      const job = (msg.result || msg).job;
      if (job) onJob(job);
      else if (msg.error || msg.code) throw new ApiError(500, msg.error || msg);
    }
  }
  return null;
}

// Authenticated bytes (an output, a source image) as a Blob.
export async function blob(path) {
  const resp = await fetch(path, { headers: headers() });
  if (!resp.ok) return parse(resp);
  return resp.blob();
}

export const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
