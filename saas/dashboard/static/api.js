// The node's REST API as the page uses it: every call goes to the ordinary routes, authorised by the session
// cookie (sent by the browser, HttpOnly); state-changing calls carry the session's CSRF token (saas-csrf).

export const API = "/api/v1";
export const session = { signed_in: false, node_iid: null, iid: null, name: null, csrf: null };

export class ApiError extends Error {
  constructor(status, envelope) {
    super(envelope && envelope.reason ? envelope.reason : `HTTP ${status}`);
    this.status = status;
    this.envelope = envelope;
  }
}

async function fail(response) {
  let envelope = null;
  try {
    envelope = await response.json();
  } catch (_) {
    envelope = null;
  }
  throw new ApiError(response.status, envelope);
}

// A request to `/api/v1<path>`; `body` is sent as JSON unless it is a Blob. Resolves to the parsed JSON.
export async function call(method, path, body = undefined) {
  const headers = {};
  if (method !== "GET" && method !== "HEAD") headers["saas-csrf"] = session.csrf || "none";
  let payload = undefined;
  if (body instanceof Blob) {
    headers["content-type"] = "application/octet-stream";
    payload = body;
  } else if (body !== undefined) {
    headers["content-type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(API + path, { method, headers, body: payload, credentials: "same-origin" });
  if (!response.ok) await fail(response);
  return response.json();
}

export const get = (path) => call("GET", path);

export async function loadSession() {
  Object.assign(session, await get("/dashboard/session"));
  return session;
}

// Exchange a login token (from `saas-cli dashboard`) for the session cookie.
export async function signIn(token) {
  const response = await fetch(API + "/dashboard/login", {
    method: "POST",
    headers: { "content-type": "application/json", "saas-csrf": "login" },
    body: JSON.stringify({ token }),
    credentials: "same-origin",
  });
  if (!response.ok) await fail(response);
  Object.assign(session, await response.json());
  return session;
}

export async function signOut() {
  Object.assign(session, await call("POST", "/dashboard/logout"), { iid: null, name: null, csrf: null });
}

// Server-sent events of a job: `onStatus(JobStatus)` at once and at every change, until the job is final.
export function followJob(jobId, onStatus, onError) {
  const source = new EventSource(`${API}/rti/job/${encodeURIComponent(jobId)}/events`);
  source.addEventListener("status", (event) => {
    const status = JSON.parse(event.data);
    onStatus(status);
    if (["successful", "failed", "cancelled"].includes(status.state)) source.close();
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED && onError) onError();
  };
  return source;
}

// Stream a job's log lines (stdout and stderr as written) into `onText` until the job ends or `signal` aborts.
export async function followLog(jobId, onText, signal) {
  const response = await fetch(`${API}/rti/job/${encodeURIComponent(jobId)}/logs?follow=true`, {
    credentials: "same-origin",
    signal,
  });
  if (!response.ok) await fail(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onText(value);
  }
}
