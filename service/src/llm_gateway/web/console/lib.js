// What every page uses: `h`, which builds the DOM and sets text as text (nothing a provider or a
// caller wrote is ever parsed as HTML), the gateway's own HTTP APIs under the signed-in key (kept
// for this browser tab only, in sessionStorage), formatting, and the page registry.

export const KEY = "llm-gateway-key";
export const pages = {};

export function h(tag, attrs = {}, ...children) {
  const svg = tag.startsWith("svg:");
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = error?.code || "";
    this.param = error?.param || "";
  }
}

function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY);
  return { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}), ...extra };
}

/** A JSON request to the gateway's HTTP door; its parsed answer, or an ApiError. */
export async function api(path, { method = "GET", body, key } = {}) {
  const extra = key ? { authorization: `Bearer ${key}` } : {};
  const response = await fetch(path, { method, headers: headers(extra), body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  const found = text ? JSON.parse(text) : {};
  if (!response.ok) throw new ApiError(response.status, found.error);
  return found;
}

/** A unary method of the usage or budget service, as JSON. */
export function rpc(service, method, body = {}) {
  return api(`/api/llmgateway.v1.${service}/${method}`, { method: "POST", body });
}

/** POSTs a streamed chat completion; calls `onChunk` with each server-sent event's JSON. */
export async function stream(body, onChunk) {
  const response = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) {
    const found = await response.json().catch(() => ({}));
    throw new ApiError(response.status, found.error);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += decoder.decode(value, { stream: true });
    let end;
    while ((end = pending.indexOf("\n\n")) >= 0) {
      const event = pending.slice(0, end);
      pending = pending.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(response.status, chunk.error);
        onChunk(chunk);
      }
    }
  }
}

export const money = (text) => (text === null || text === undefined || text === "" ? "—" : `$${text}`);
export const ms = (value) => (value === null || value === undefined ? "—" : `${Math.round(value)} ms`);
export const seconds = (duration) => (duration ? `${Math.round(parseFloat(duration) * 1000)} ms` : "—");

/** A labelled control: the label holds its text only, so the control's name is exactly that. */
export function field(text, control, cls = "field") {
  return h("div", { class: cls }, h("label", { for: control.id }, text), control);
}

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error instanceof Error ? error.message : String(error));
}

/** Registers a page: `render(main)` fills it and may return a function that stops its timers. */
export function page(name, title, render) {
  pages[name] = { title, render };
}

