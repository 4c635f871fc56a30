// The console's only way to Tidewater: the public API, with the token the person signed
// in with. The token lives in sessionStorage (gone when the tab closes) and travels only
// in the Authorization header, never in a URL.

const TOKEN_KEY = "tidewater.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) {
  sessionStorage.setItem(TOKEN_KEY, t);
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** An error answer of the API: `{code, error, parameter}` and the HTTP status. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
    this.parameter = body && body.parameter;
  }
}

/** Calls the API: `path` under /v1, `query` an object or URLSearchParams, `body` JSON. */
export async function api(method, path, { query, body, quiet401 = false } = {}) {
  const url = new URL("/v1/" + path, location.origin);
  if (query) {
    const q = query instanceof URLSearchParams ? query : new URLSearchParams(query);
    for (const [k, v] of q) if (v !== "" && v !== undefined && v !== null) url.searchParams.append(k, v);
  }
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, { method, headers, body: payload, cache: "no-store", credentials: "omit" });
  } catch (e) {
    throw new ApiError(0, { error: "the server cannot be reached" });
  }
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (e) {
    json = null;
  }
  if (!res.ok) {
    if (res.status === 401 && !quiet401) {
      signOut();
      window.dispatchEvent(new Event("tidewater:signed-out"));
    }
    throw new ApiError(res.status, json);
  }
  return json;
}

export const getTask = (id, tenant) =>
  api("GET", "tasks/" + encodeURIComponent(id), { query: tenant ? { tenant } : {} });
export const getLogs = (id, tenant, after) =>
  api("GET", "tasks/" + encodeURIComponent(id) + "/logs", { query: { tenant: tenant || "", after: after ?? "" } });
export const getRecord = (id, tenant) =>
  api("GET", "tasks/" + encodeURIComponent(id) + "/record", { query: tenant ? { tenant } : {} });
export const stopTask = (id, tenant) =>
  api("POST", "tasks/" + encodeURIComponent(id) + "/stop", { query: tenant ? { tenant } : {} });
export const redrive = (body) => api("POST", "tasks/redrive", { body });
export const whoami = () => api("GET", "whoami", { quiet401: true });
