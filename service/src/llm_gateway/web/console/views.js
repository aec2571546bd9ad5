// The console's read-mostly pages: the live catalog, usage over time, budgets and batches. Each
// reads the same HTTP APIs any client uses and refreshes itself while it is on screen.

import { stackedBars } from "./chart.js";
import { api, ApiError, errorBox, field, h, money, page, rpc, seconds } from "./lib.js";

function table(head, rows, label) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { "aria-label": label },
      h("thead", {}, h("tr", {}, head.map(([text, cls]) => h("th", { scope: "col", class: cls }, text)))),
      h("tbody", {}, rows),
    ),
  );
}

/** Runs `refresh` now and every `seconds`; returns the function that stops it. */
function every(seconds, refresh) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    await refresh();
    if (!stopped) timer = setTimeout(tick, seconds * 1000);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// -- models ------------------------------------------------------------------------------------

page("models", "Models", (main) => {
  const body = h("div", { "aria-live": "polite" });
  main.append(h("p", { class: "muted" }, "The catalog your key may use, with prices per million tokens and each model's live state; refreshed every 5 s."), body);
  return every(5, async () => {
    try {
      const models = (await api("/v1/models")).data.filter((m) => m.type !== "group");
      const rows = models.map((m) =>
        h(
          "tr",
          { dataset: { model: m.id } },
          h("th", { scope: "row" }, m.id),
          h("td", {}, m.provider),
          h("td", { class: "num" }, m.context_window ? m.context_window.toLocaleString("en") : "—"),
          h("td", { class: "num" }, money(m.pricing?.input_per_million)),
          h("td", { class: "num" }, money(m.pricing?.output_per_million)),
          h("td", {}, (m.capabilities || []).join(", ") || "—"),
          h("td", {}, h("span", { class: `pill state-${m.state.circuit}` }, m.state.circuit)),
          h("td", { class: "num" }, m.state.latency_p50_ms === null ? "—" : `${Math.round(m.state.latency_p50_ms)} ms`),
          h("td", { class: "num", dataset: { field: "recent_calls" } }, m.state.recent_calls),
        ),
      );
      body.replaceChildren(
        table(
          [["Model"], ["Provider"], ["Context", "num"], ["Input", "num"], ["Output", "num"], ["Capabilities"], ["Circuit"], ["p50 latency", "num"], ["Recent calls", "num"]],
          rows,
          "Models",
        ),
      );
    } catch (error) {
      body.replaceChildren(errorBox(error));
    }
  });
});

// -- usage -------------------------------------------------------------------------------------

const PERIODS = { "24h": [1, "GRANULARITY_HOUR"], "7d": [7, "GRANULARITY_DAY"], "30d": [30, "GRANULARITY_DAY"] };

/** The starts (ms, UTC, as the ledger buckets) of every hour or day from `start` to `end`. */
function axisOf(request) {
  const step = request.granularity === "GRANULARITY_HOUR" ? 3_600_000 : 86_400_000;
  const first = Math.floor(Date.parse(request.filter.start_time) / step) * step;
  const last = Date.parse(request.filter.end_time);
  const starts = [];
  for (let t = first; t <= last; t += step) starts.push(t);
  return starts;
}

function usageRequest(form) {
  const [days, granularity] = PERIODS[form.period.value];
  const end = new Date(Date.now() + 60_000);
  const start = new Date(end.getTime() - days * 86_400_000);
  const filter = { start_time: start.toISOString(), end_time: end.toISOString() };
  for (const name of ["api_key", "user", "project", "tenant"]) if (form[name].value.trim()) filter[name] = form[name].value.trim();
  const tag = form.tag.value.trim();
  if (tag.includes("=")) filter.tags = { [tag.slice(0, tag.indexOf("="))]: tag.slice(tag.indexOf("=") + 1) };
  return { filter, granularity, group_by: [form.group.value], top_models: 10 };
}

function csv(summary, dimension) {
  const lines = [["start", dimension, "requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd"].join(",")];
  for (const bucket of summary.buckets || []) {
    const s = bucket.stats || {};
    const cells = [bucket.start_time, bucket.group?.[0] ?? "", s.requests ?? 0, s.errors ?? 0, s.prompt_tokens ?? 0, s.completion_tokens ?? 0, s.cost ?? "0"];
    lines.push(cells.map((cell) => (/[",\n]/.test(String(cell)) ? `"${String(cell).replaceAll('"', '""')}"` : cell)).join(","));
  }
  return `${lines.join("\n")}\n`;
}

page("usage", "Usage", (main) => {
  const input = (name, label) => field(label, h("input", { id: name, name, size: 12 }));
  const form = h(
    "form",
    { class: "card row", "aria-label": "Filters" },
    field("Period", h("select", { id: "period", name: "period" }, Object.keys(PERIODS).map((p) => h("option", { value: p }, `Last ${p}`)))),
    field("Split by", h("select", { id: "group", name: "group" }, h("option", { value: "provider" }, "Provider"), h("option", { value: "model" }, "Model"))),
    input("api_key", "Key"),
    input("user", "User"),
    input("project", "Project"),
    input("tenant", "Tenant"),
    input("tag", "Tag (k=v)"),
    h("button", { type: "submit" }, "Apply"),
  );
  const body = h("div", { "aria-live": "polite" });
  let last = null;
  const download = h("button", { type: "button", class: "quiet", disabled: true }, "Export CSV");
  download.addEventListener("click", () => {
    if (!last) return;
    const link = h("a", { href: URL.createObjectURL(new Blob([csv(last, form.group.value)], { type: "text/csv" })), download: "usage.csv" });
    document.body.append(link);
    link.click();
    link.remove();
  });
  const refresh = async () => {
    try {
      const asked = usageRequest(form);
      last = await rpc("UsageService", "GetUsageSummary", asked);
      download.disabled = false;
      const total = last.total || {};
      const requests = Number(total.requests || 0);
      const errors = Number(total.errors || 0);
      const chart = stackedBars(last.buckets || [], `Cost by ${form.group.value}`, axisOf(asked));
      const top = (last.top_models_by_cost || []).map((m) =>
        h("tr", {}, h("th", { scope: "row" }, m.model), h("td", { class: "num" }, m.requests ?? "0"), h("td", { class: "num" }, money(m.cost))),
      );
      body.replaceChildren(
        h(
          "section",
          { class: "card" },
          h("h2", {}, "Totals"),
          h(
            "dl",
            { class: "facts", "data-testid": "totals" },
            h("dt", {}, "Calls"), h("dd", { dataset: { field: "requests" } }, requests),
            h("dt", {}, "Cost"), h("dd", { dataset: { field: "cost" } }, money(total.cost || "0")),
            h("dt", {}, "Error rate"), h("dd", {}, requests ? `${((100 * errors) / requests).toFixed(1)} %` : "—"),
            h("dt", {}, "Latency p50 / p95"), h("dd", {}, `${seconds(total.latency_p50)} / ${seconds(total.latency_p95)}`),
            h("dt", {}, "First token p50 / p95"), h("dd", {}, `${seconds(total.first_token_p50)} / ${seconds(total.first_token_p95)}`),
          ),
        ),
        h("section", { class: "card" }, h("h2", {}, `Cost over time by ${form.group.value}`), chart),
        h("section", { class: "card" }, h("h2", {}, "Top models by cost"), table([["Model"], ["Calls", "num"], ["Cost", "num"]], top, "Top models by cost")),
      );
    } catch (error) {
      body.replaceChildren(errorBox(error));
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    refresh();
  });
  main.append(form, h("div", { class: "row" }, download), body);
  return every(10, refresh);
});

// -- budgets -----------------------------------------------------------------------------------

function budgetCard(budget) {
  const limit = parseFloat(budget.limit_usd || "0");
  const share = (value) => (limit > 0 ? Math.min(100, (100 * parseFloat(value || "0")) / limit) : 0);
  const spent = h("div", { class: "spent" });
  const reserved = h("div", { class: "reserved" });
  spent.style.width = `${share(budget.spent_usd)}%`;
  reserved.style.width = `${share(budget.reserved_usd)}%`;
  return h(
    "section",
    { class: "card", dataset: { budget: budget.id } },
    h("h2", {}, budget.id, " ", h("span", { class: "muted" }, `${budget.scope} · ${(budget.period || "").replace("BUDGET_PERIOD_", "").toLowerCase()}`)),
    h(
      "div",
      {
        class: "meter",
        role: "meter",
        "aria-label": `${budget.id} spent`,
        "aria-valuemin": 0,
        "aria-valuemax": budget.limit_usd,
        "aria-valuenow": budget.spent_usd || "0",
        dataset: { spent: budget.spent_usd || "0", reserved: budget.reserved_usd || "0" },
      },
      spent,
      reserved,
    ),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Spent"), h("dd", {}, `${money(budget.spent_usd || "0")} of ${money(budget.limit_usd)}`),
      h("dt", {}, "Held by calls in flight"), h("dd", {}, money(budget.reserved_usd || "0")),
      h("dt", {}, "Left"), h("dd", {}, money(budget.remaining_usd || "0")),
      h("dt", {}, "Alert thresholds"), h("dd", {}, (budget.thresholds || []).map((t) => `${t} %`).join(", ") || "—"),
      h("dt", {}, "Resets"), h("dd", {}, budget.resets_at ? new Date(budget.resets_at).toLocaleString() : "never"),
    ),
  );
}

page("budgets", "Budgets", (main) => {
  const body = h("div", { "aria-live": "polite" });
  const alerts = h("div");
  main.append(body, h("h2", {}, "Alerts"), alerts);
  return every(5, async () => {
    try {
      const found = (await rpc("BudgetService", "ListBudgets", { page_size: 100 })).budgets || [];
      body.replaceChildren(...(found.length ? found.map(budgetCard) : [h("p", { class: "muted" }, "No budget covers this key.")]));
    } catch (error) {
      body.replaceChildren(errorBox(error));
    }
    try {
      const raised = (await rpc("BudgetService", "ListBudgetAlerts", { page_size: 50 })).alerts || [];
      const rows = raised.map((a) =>
        h("tr", {}, h("td", {}, new Date(a.create_time).toLocaleString()), h("td", {}, a.budget_id || "call"), h("td", { class: "num" }, `${a.threshold_percent || "—"} %`), h("td", { class: "num" }, money(a.current_cost_usd))),
      );
      alerts.replaceChildren(rows.length ? table([["When"], ["Budget"], ["Threshold", "num"], ["Spent then", "num"]], rows, "Alerts") : h("p", { class: "muted" }, "No alert raised."));
    } catch (error) {
      // Every alert is an admin's to read; another key sees its budgets only.
      alerts.replaceChildren(h("p", { class: "muted" }, error instanceof ApiError && error.status === 403 ? "Alerts are shown to admin keys." : error.message));
    }
  });
});

// -- batches -----------------------------------------------------------------------------------

async function showResults(batch, into) {
  const found = await api(`/api/v1/batches/${encodeURIComponent(batch.id)}/results?page_size=100`);
  const rows = found.data.map((r) =>
    h(
      "tr",
      {},
      h("th", { scope: "row" }, r.custom_id),
      h("td", {}, h("span", { class: `pill state-${r.status}` }, r.status)),
      h("td", {}, r.response?.message?.content?.[0]?.text ?? (r.error ? `${r.error.reason}: ${r.error.message}` : "—")),
      h("td", { class: "num" }, money(r.cost?.total)),
    ),
  );
  into.replaceChildren(table([["Item"], ["Status"], ["Answer"], ["Cost", "num"]], rows, `Results of ${batch.id}`));
}

page("batches", "Batches", (main) => {
  const body = h("div", { "aria-live": "polite" });
  const results = h("div");
  main.append(body, results);
  return every(2, async () => {
    try {
      const batches = (await api("/api/v1/batches?page_size=50")).data;
      const rows = batches.map((b) => {
        const done = b.counts.succeeded + b.counts.failed + b.counts.cancelled;
        const actions = [h("button", { type: "button", class: "quiet", onclick: () => showResults(b, results).catch((e) => results.replaceChildren(errorBox(e))) }, "Results")];
        if (["queued", "running", "paused"].includes(b.status)) {
          actions.push(
            h("button", { type: "button", class: "danger", onclick: async () => {
              try {
                await api(`/api/v1/batches/${encodeURIComponent(b.id)}/cancel`, { method: "POST" });
              } catch (error) {
                results.replaceChildren(errorBox(error));
              }
            } }, "Cancel"),
          );
        }
        return h(
          "tr",
          { dataset: { batch: b.id } },
          h("th", { scope: "row" }, b.id),
          h("td", {}, h("span", { class: `pill state-${b.status}` }, b.status), b.paused_reason ? h("div", { class: "muted" }, b.paused_reason) : null),
          h("td", {}, h("progress", { max: b.total_requests, value: done, "aria-label": `${b.id} progress` }), ` ${done} / ${b.total_requests}`),
          h("td", { class: "num" }, money(b.total_cost)),
          h("td", {}, b.mode),
          h("td", {}, new Date(b.created_at).toLocaleString()),
          h("td", {}, actions),
        );
      });
      body.replaceChildren(
        rows.length
          ? table([["Batch"], ["Status"], ["Progress"], ["Cost", "num"], ["Mode"], ["Created"], ["Actions"]], rows, "Batches")
          : h("p", { class: "muted" }, "No batch yet: create one with BatchService or POST /api/v1/batches."),
      );
    } catch (error) {
      body.replaceChildren(errorBox(error));
    }
  });
});
