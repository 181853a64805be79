// The REST client the pages share: /api/v1 as any other client sees it, plus the bearer token.

export const API = "/api/v1";
const TOKEN_KEY = "alphasearch.token";

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return ""; // storage disabled: the token lives for this page only
  }
}

export function setToken(value) {
  try {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage disabled */
  }
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(describeDetail(status, detail));
    this.status = status;
    this.detail = detail;
  }
}

// FastAPI errors are {"detail": "text"} or {"detail": [{index?, field, message} | pydantic error]}.
export function describeDetail(status, detail) {
  if (Array.isArray(detail)) {
    return detail
      .map((d) => {
        const where = d.index !== undefined && d.index !== null ? `studies[${d.index}] ` : "";
        const field = d.field || (Array.isArray(d.loc) ? d.loc.filter((x) => x !== "body").join(".") : "");
        return `${where}${field ? field + ": " : ""}${d.message || d.msg || JSON.stringify(d)}`;
      })
      .join("\n");
  }
  if (typeof detail === "string" && detail) return detail;
  return `HTTP ${status}`;
}

// fetch + JSON + token. `path` is relative to /api/v1 unless it starts with "/".
export async function api(path, { method = "GET", json, body, headers = {} } = {}) {
  const h = { Accept: "application/json", ...headers };
  const token = getToken();
  if (token) h.Authorization = `Bearer ${token}`;
  let payload = body;
  if (json !== undefined) {
    h["Content-Type"] = "application/json";
    payload = JSON.stringify(json);
  }
  const url = path.startsWith("/") ? path : `${API}/${path}`;
  let res;
  try {
    res = await fetch(url, { method, headers: h, body: payload });
  } catch {
    throw new ApiError(0, "the server is unreachable; is `alphasearch serve` running?");
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data && data.detail !== undefined ? data.detail : data);
    if (res.status === 401 || res.status === 403) {
      window.dispatchEvent(new CustomEvent("alphasearch:auth", { detail: err.message }));
    }
    throw err;
  }
  return data;
}
