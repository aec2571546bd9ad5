// The playground: one prompt sent to one model, or to two side by side, through the gateway's
// Chat Completions door (streamed or not); each answer shows its text as it arrives, then its
// usage, cost breakdown, latency and routing as the gateway reported them.

import { api, ApiError, errorBox, field, h, money, ms, page, stream } from "./lib.js";

function about(model) {
  if (!model) return "";
  const price = model.pricing?.input_per_million ? `$${model.pricing.input_per_million} in / $${model.pricing.output_per_million} out per M tokens` : "price unknown";
  const context = model.context_window ? `${model.context_window.toLocaleString("en")} tokens of context` : "";
  return [price, context, (model.capabilities || []).join(", ")].filter(Boolean).join(" · ");
}

/** A model from the catalog, with its prices, context and capabilities shown under it. */
function modelPicker(id, label, models, optional) {
  const select = h(
    "select",
    { id, name: id, "aria-describedby": `${id}-about` },
    optional ? h("option", { value: "" }, "— none —") : null,
    models.map((m) => h("option", { value: m.id }, m.id)),
  );
  const described = h("p", { id: `${id}-about`, class: "muted about" });
  const show = () => {
    described.textContent = about(models.find((m) => m.id === select.value));
  };
  select.addEventListener("change", show);
  show();
  return h("div", { class: "picker" }, field(label, select), described);
}

function facts(entries) {
  return h("dl", { class: "facts" }, entries.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]));
}

function summary(answer) {
  const { usage, cost, latency, routing } = answer;
  const attempts = routing?.attempts || [];
  return facts([
    ["Model", routing?.selected_model || answer.model || "—"],
    ["Tokens", usage ? `${usage.prompt_tokens} in · ${usage.completion_tokens} out · ${usage.total_tokens} total` : "—"],
    ["Cost", cost ? `${money(cost.total_cost)} (input ${money(cost.input_cost)}, output ${money(cost.output_cost)})` : "—"],
    ["First token", ms(latency?.ttft_ms)],
    ["Total time", ms(latency?.total_time_ms)],
    ["Gateway overhead", ms(latency?.processing_time_ms)],
    ["Routing", routing ? `${routing.routing_reason}; ${attempts.length} attempt${attempts.length === 1 ? "" : "s"}${routing.fallback_used ? "; fallback used" : ""}${routing.cache_hit ? "; cache hit" : ""}` : "—"],
  ]);
}

function requestBody(form, model, history) {
  const messages = [];
  const system = form.system.value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history, { role: "user", content: form.prompt.value });
  const body = { model, messages };
  if (form.temperature.value !== "") body.temperature = Number(form.temperature.value);
  if (form.max_tokens.value !== "") body.max_tokens = Number(form.max_tokens.value);
  const tools = form.tools.value.trim();
  if (tools) body.tools = JSON.parse(tools);
  if (form.stream.checked) {
    body.stream = true;
    body.stream_options = { include_usage: true };
  }
  return body;
}

/** Sends the prompt to `model`; its answer's text, or null when it failed. */
async function run(form, model, panel, history) {
  const output = h("div", { class: "output", "aria-live": "polite", "data-testid": "output" });
  const details = h("div", { "data-testid": "details" });
  panel.replaceChildren(h("h2", {}, model), output, details);
  let body;
  try {
    body = requestBody(form, model, history);
  } catch (error) {
    details.append(errorBox(`Tools: ${error.message}`));
    return;
  }
  try {
    if (!body.stream) {
      const answer = await api("/v1/chat/completions", { method: "POST", body });
      const message = answer.choices?.[0]?.message || {};
      output.textContent = message.content || JSON.stringify(message.tool_calls || [], null, 2);
      details.append(summary(answer));
      return message.content ?? null;
    }
    const answer = { model };
    const toolCalls = [];
    await stream(body, (chunk) => {
      const delta = chunk.choices?.[0]?.delta;
      if (delta?.content) output.append(delta.content);
      for (const call of delta?.tool_calls || []) toolCalls.push(call);
      for (const name of ["usage", "cost", "latency", "routing"]) if (chunk[name]) answer[name] = chunk[name];
    });
    const text = output.textContent;
    if (!text && toolCalls.length) output.textContent = JSON.stringify(toolCalls, null, 2);
    details.append(summary(answer));
    return text || null;
  } catch (error) {
    details.append(errorBox(error instanceof ApiError && error.param ? `${error.param}: ${error.message}` : error));
    return null;
  }
}

page("playground", "Playground", async (main) => {
  const listed = (await api("/v1/models")).data.filter((m) => m.type !== "group");
  const results = h("div", { class: "columns", "data-testid": "results" });
  // The conversation so far: each exchange with the first model is kept and sent again.
  const history = [];
  const turns = h("ol", { class: "turns", "aria-label": "Conversation so far" });
  const restart = h("button", { type: "button", class: "quiet", hidden: true }, "New conversation");
  const conversation = h("section", { class: "card", hidden: true }, h("h2", {}, "Conversation so far"), turns, restart);
  restart.addEventListener("click", () => {
    history.length = 0;
    turns.replaceChildren();
    conversation.hidden = true;
    restart.hidden = true;
  });
  const form = h(
    "form",
    { class: "card", "aria-label": "Prompt" },
    h("div", { class: "row" }, modelPicker("model", "Model", listed, false), modelPicker("compare", "Compare with", listed, true)),
    field("System prompt", h("textarea", { id: "system", name: "system", rows: 2 })),
    field("Message", h("textarea", { id: "prompt", name: "prompt", rows: 4, required: true })),
    h(
      "div",
      { class: "row" },
      field("Temperature", h("input", { id: "temperature", name: "temperature", type: "number", min: 0, max: 2, step: 0.1 })),
      field("Max tokens", h("input", { id: "max_tokens", name: "max_tokens", type: "number", min: 1 })),
      h("div", { class: "inline" }, h("input", { id: "stream", name: "stream", type: "checkbox", checked: true }), h("label", { for: "stream" }, "Stream")),
    ),
    field("Tools (JSON, OpenAI's format; optional)", h("textarea", { id: "tools", name: "tools", rows: 2, spellcheck: "false" })),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Send")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = [form.model.value, form.compare.value].filter(Boolean);
    const panels = chosen.map(() => h("section", { class: "card" }));
    results.replaceChildren(...panels);
    const send = form.querySelector("button[type=submit]");
    send.disabled = true;
    const asked = form.prompt.value;
    const answers = await Promise.all(chosen.map((model, i) => run(form, model, panels[i], history)));
    if (answers[0] !== null) {
      history.push({ role: "user", content: asked }, { role: "assistant", content: answers[0] });
      turns.append(h("li", {}, h("strong", {}, "You: "), asked), h("li", {}, h("strong", {}, `${chosen[0]}: `), answers[0]));
      conversation.hidden = false;
      restart.hidden = false;
      form.prompt.value = "";
    }
    send.disabled = false;
  });
  main.append(conversation, form, results);
});
