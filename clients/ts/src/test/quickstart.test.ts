/**
 * Tests against a live gateway at `LLM_GATEWAY_ADDR` (with `LLM_GATEWAY_API_KEY` when it needs a
 * key). Run them with `make test-ts` from the repository root, which starts a gateway.
 *
 * @module
 */

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  BudgetPeriod,
  BudgetSource,
  Code,
  ConnectError,
  FinishReason,
  Granularity,
  PricingStatus,
  Role,
  badRequest,
  createBudgetClient,
  createGatewayClient,
  createUsageClient,
  errorInfo,
} from "../index.js";
import type {
  Budget,
  BudgetClient,
  ChatRequestSchema,
  Cost,
  GatewayClient,
  GetUsageSummaryRequestSchema,
  Model,
  UsageClient,
  UsageStats,
} from "../index.js";
import { run, textOf } from "../examples/quickstart.js";
import type { QuickstartResult } from "../examples/quickstart.js";

const ADDR = process.env["LLM_GATEWAY_ADDR"] ?? "";
const API_KEY = process.env["LLM_GATEWAY_API_KEY"] ?? "";
/**
 * A key that may create budgets, when the one in `LLM_GATEWAY_API_KEY` may not; empty: that key
 * (or none, on a gateway with authentication off, where every caller is an admin).
 */
const ADMIN_KEY = process.env["LLM_GATEWAY_ADMIN_KEY"] ?? "";

/** Timeout of every gateway call, so that nothing hangs. */
const TIMEOUT_MS = 15_000;
/** Timeout of every test. */
const TEST = { timeout: 60_000 } as const;

const USER_TEXT = "Hello from TypeScript, gateway!";
const MOCK_MODELS = ["mock:echo", "mock:echo-large", "mock:echo-free"];
/** A non-negative decimal string in plain notation. */
const DECIMAL = /^\d+(\.\d+)?$/;

/** The gateway address; fails the calling test when `LLM_GATEWAY_ADDR` is unset. */
function gatewayAddress(): string {
  if (ADDR === "") {
    assert.fail(
      "LLM_GATEWAY_ADDR is not set. These tests run against a live gateway: " +
        "run them with `make test-ts` from the repository root, which starts one and sets " +
        "LLM_GATEWAY_ADDR and LLM_GATEWAY_API_KEY.",
    );
  }
  return ADDR;
}

/** A client with the configured key, or with `apiKey` when given ("" for none). */
function client(apiKey: string = API_KEY): GatewayClient {
  return createGatewayClient({ address: gatewayAddress(), apiKey });
}

/** A usage client with the configured key. */
function usageClient(): UsageClient {
  return createUsageClient({ address: gatewayAddress(), apiKey: API_KEY });
}

/** A budget client with the admin key when there is one, else the configured key. */
function budgetClient(): BudgetClient {
  return createBudgetClient({ address: gatewayAddress(), apiKey: ADMIN_KEY || API_KEY });
}

const DAY_MS = 86_400_000;

/** Today 00:00 UTC in Unix milliseconds (Unix days are exactly 86 400 s). */
function todayStartMs(): number {
  return Math.floor(Date.now() / DAY_MS) * DAY_MS;
}

/** The day's summary request, built here independently of the quickstart's. */
function todaysUsage(): MessageInitShape<typeof GetUsageSummaryRequestSchema> {
  const start = todayStartMs();
  return {
    filter: { startTime: timestampFromMs(start), endTime: timestampFromMs(start + DAY_MS) },
    granularity: Granularity.DAY,
  };
}

/** Exact decimal strings as bigints at one common scale, for sums and comparisons. */
function scaled(...amounts: string[]): bigint[] {
  for (const a of amounts) {
    assert.match(a, DECIMAL, `"${a}" is not a plain decimal string`);
  }
  const scale = Math.max(...amounts.map((a) => a.split(".")[1]?.length ?? 0));
  return amounts.map((a) => {
    const [whole = "", fraction = ""] = a.split(".");
    return BigInt(whole + fraction.padEnd(scale, "0"));
  });
}

/** A request for `Chat`, as a plain object. */
type ChatRequestInit = MessageInitShape<typeof ChatRequestSchema>;

/** The chat request of the quickstart, with `overrides` applied. */
function chatRequest(overrides: ChatRequestInit = {}): ChatRequestInit {
  return {
    model: "mock:echo",
    messages: [
      { role: Role.SYSTEM, content: [{ kind: { case: "text" as const, value: "Be brief." } }] },
      { role: Role.USER, content: [{ kind: { case: "text" as const, value: USER_TEXT } }] },
    ],
    ...overrides,
  };
}

/** Asserts that `value` is a decimal string in plain notation, and above zero when `positive`. */
function assertDecimal(value: string | undefined, what: string, positive: boolean): void {
  assert.equal(typeof value, "string", `${what} is unset`);
  assert.match(value ?? "", DECIMAL, `${what} must be a plain decimal string, got "${value}"`);
  if (positive) {
    assert.match(value ?? "", /[1-9]/, `${what} must be above zero, got "${value}"`);
  }
}

/** Asserts a priced USD cost with a total above zero. */
function assertPricedCost(cost: Cost | undefined, what: string): void {
  assert.ok(cost, `${what} is unset`);
  assert.equal(cost.status, PricingStatus.PRICED, `${what}.status`);
  assert.equal(cost.currency, "USD", `${what}.currency`);
  assertDecimal(cost.total, `${what}.total`, true);
}

/** The error a call rejected with; fails when it did not reject or not with a ConnectError. */
async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    assert.ok(err instanceof ConnectError, `expected a ConnectError, got ${String(err)}`);
    return err;
  }
  assert.fail("expected the call to fail, but it succeeded");
}

interface QuickstartRun {
  result: QuickstartResult;
  printed: string;
  /** The day's usage of this key just before the quickstart ran, read by the test itself. */
  baseline: UsageStats | undefined;
}

let quickstartResult: Promise<QuickstartRun> | undefined;

/** Runs the quickstart once (on first use) and returns what it got and printed. */
function quickstart(): Promise<QuickstartRun> {
  const address = gatewayAddress();
  quickstartResult ??= (async () => {
    const baseline = (await usageClient().getUsageSummary(todaysUsage(), { timeoutMs: TIMEOUT_MS }))
      .total;
    let printed = "";
    const result = await run(
      { address, apiKey: API_KEY, model: "mock:echo", timeoutMs: TIMEOUT_MS },
      { line: (text) => (printed += `${text}\n`), write: (text) => (printed += text) },
    );
    return { result, printed, baseline };
  })();
  return quickstartResult;
}

describe("quickstart against a live gateway", () => {
  it("chat returns the echoed reply with usage, cost, latency and request id", TEST, async () => {
    const { chat, chatRequestIdTrailer } = (await quickstart()).result;
    assert.equal(chat.message?.role, Role.ASSISTANT);
    assert.equal(textOf(chat.message), USER_TEXT);
    assert.equal(chat.finishReason, FinishReason.STOP);
    assert.ok(chat.usage, "usage is unset");
    assert.ok(chat.usage.promptTokens > 0, "usage.promptTokens > 0");
    assert.ok(chat.usage.completionTokens > 0, "usage.completionTokens > 0");
    assert.equal(chat.usage.totalTokens, chat.usage.promptTokens + chat.usage.completionTokens);
    assertPricedCost(chat.cost, "cost");
    assert.ok(chat.latency?.total, "latency.total is unset");
    assert.equal(chat.model, "mock:echo");
    assert.equal(chat.provider, "mock");
    assert.notEqual(chat.requestId, "", "requestId is empty");
    assert.equal(chatRequestIdTrailer, chat.requestId, "x-request-id trailer differs from requestId");
  });

  it("chatStream sends start, text deltas that add up to the reply, then one finish", TEST, async () => {
    const { streamEvents: events, streamText } = (await quickstart()).result;
    assert.ok(events.length >= 4, `expected start, >= 2 deltas and finish; got ${events.length} events`);

    const first = events[0]?.event;
    assert.equal(first?.case, "start", "the first event must be start");
    assert.equal(first.value.model, "mock:echo");
    assert.equal(first.value.provider, "mock");
    assert.notEqual(first.value.requestId, "", "start.requestId is empty");

    const deltas = events.flatMap((e) => (e.event.case === "textDelta" ? [e.event.value.text] : []));
    assert.ok(deltas.length >= 2, `expected at least 2 textDelta events, got ${deltas.length}`);
    assert.equal(deltas.join(""), USER_TEXT);
    assert.equal(streamText, USER_TEXT);

    const finishes = events.filter((e) => e.event.case === "finish");
    assert.equal(finishes.length, 1, "expected exactly one finish event");
    const last = events[events.length - 1]?.event;
    assert.equal(last?.case, "finish", "the last event must be finish");
    assert.equal(last.value.finishReason, FinishReason.STOP);
    assert.ok((last.value.usage?.completionTokens ?? 0) > 0, "finish.usage.completionTokens > 0");
    assertPricedCost(last.value.cost, "finish.cost");
  });

  it("estimateCost ranks the candidates cheapest first", TEST, async () => {
    const { estimates } = (await quickstart()).result.estimate;
    assert.deepEqual(
      estimates.map((e) => e.model),
      ["mock:echo", "mock:echo-large"],
    );
    for (const e of estimates) {
      assert.ok(e.promptTokens > 0, `${e.model}: promptTokens > 0`);
      assertDecimal(e.expectedCost?.total, `${e.model}: expectedCost.total`, false);
      assertDecimal(e.worstCaseCost?.total, `${e.model}: worstCaseCost.total`, false);
    }
  });

  it("listModels lists the mock models", TEST, async () => {
    const ids = (await quickstart()).result.models.map((m) => m.id);
    for (const id of MOCK_MODELS) {
      assert.ok(ids.includes(id), `${id} missing from ${ids.join(", ")}`);
    }
  });

  it("getUsageSummary reads today's summary, which counts the quickstart's calls", TEST, async () => {
    const { result, printed, baseline } = await quickstart();
    const { startTime, endTime } = result.usageRequest.filter ?? {};
    assert.ok(startTime && endTime, "the period is unset");
    assert.equal(timestampMs(startTime), todayStartMs(), "the period must start today, 00:00 UTC");
    assert.equal(timestampMs(endTime), todayStartMs() + DAY_MS, "and end tomorrow, 00:00 UTC");
    assert.equal(result.usageRequest.granularity, Granularity.DAY);

    // The summary counts the quickstart's two ledgered calls, Chat and ChatStream, on top of the
    // baseline: their tokens, and their costs as exact decimals.
    const summary = result.usage;
    const total = summary.total;
    assert.ok(total, "total is unset");
    const before = { requests: 0n, promptTokens: 0n, completionTokens: 0n, cost: "0", ...baseline };
    const last = result.streamEvents[result.streamEvents.length - 1]?.event;
    assert.equal(last?.case, "finish");
    const finish = last.value;
    assert.ok(total.requests >= before.requests + 2n, `requests ${total.requests} < ${before.requests} + 2`);
    assert.ok(total.requests >= (result.usageBefore.total?.requests ?? 0n) + 2n, "fewer than 2 new calls");
    const prompt = BigInt((result.chat.usage?.promptTokens ?? 0) + (finish.usage?.promptTokens ?? 0));
    const completion = BigInt(
      (result.chat.usage?.completionTokens ?? 0) + (finish.usage?.completionTokens ?? 0),
    );
    assert.ok(total.promptTokens >= before.promptTokens + prompt, "prompt tokens not counted");
    assert.ok(total.completionTokens >= before.completionTokens + completion, "completion tokens");
    const [sum = 0n, baseCost = 0n, chatCost = 0n, streamCost = 0n] = scaled(
      total.cost,
      before.cost,
      result.chat.cost?.total ?? "",
      finish.cost?.total ?? "",
    );
    assert.ok(chatCost + streamCost > 0n, "the calls cost nothing");
    assert.ok(
      sum >= baseCost + chatCost + streamCost,
      `total cost ${total.cost} < ${before.cost} + ${result.chat.cost?.total} + ${finish.cost?.total}`,
    );
    assert.equal(summary.currency, "USD");
    assert.equal(summary.currency, result.chat.cost?.currency);

    // One daily bucket, starting at the period's start, holding the whole period.
    assert.equal(summary.buckets.length, 1, "expected one daily bucket");
    assert.equal(timestampMs(summary.buckets[0]?.startTime ?? timestampFromMs(0)), todayStartMs());
    assert.equal(summary.buckets[0]?.stats?.requests, total.requests);
    assert.equal(summary.buckets[0]?.stats?.cost, total.cost);

    // mock:echo served both calls.
    const echo = summary.topModelsByCost.find((m) => m.model === "mock:echo");
    assert.ok(echo, "mock:echo is not among the top models by cost");
    assert.ok(echo.requests >= 2n, `mock:echo has ${echo.requests} calls`);
    const [echoCost = 0n, echoChat = 0n, echoStream = 0n] = scaled(
      echo.cost,
      result.chat.cost?.total ?? "",
      finish.cost?.total ?? "",
    );
    assert.ok(echoCost >= echoChat + echoStream, `mock:echo cost ${echo.cost} < the calls' cost`);

    // Printed as received: counts, tokens, and the cost string with its currency.
    assert.ok(printed.includes(`calls:    ${total.requests} (${total.errors} failed)\n`), printed);
    assert.ok(
      printed.includes(`tokens:   ${total.promptTokens} prompt + ${total.completionTokens} completion\n`),
    );
    assert.ok(printed.includes(`cost:     ${total.cost} USD\n`), "the summary's cost was not printed");
    assert.ok(printed.includes(`  mock:echo: ${echo.cost} USD (${echo.requests} calls)\n`));
    assert.ok(!printed.includes("has not recorded"), "the quickstart gave up waiting for the ledger");
  });

  it("prints the reply, usage, cost and latency", TEST, async () => {
    const { result, printed } = await quickstart();
    assert.ok(printed.includes(USER_TEXT), "the reply was not printed");
    assert.ok(printed.includes(`${result.chat.cost?.total} USD`), "the chat cost was not printed");
    assert.match(printed, /usage: +\d+ prompt \+ \d+ completion = \d+ tokens/);
    assert.match(printed, /latency: +total \d+\.\d+ ms/);
    assert.match(printed, /== ListModels \(\d+ models\)/);
  });
});

describe("GatewayService against a live gateway", () => {
  it("chat uses the caller's x-request-id", TEST, async () => {
    let trailer: string | null = null;
    const reply = await client().chat(chatRequest(), {
      timeoutMs: TIMEOUT_MS,
      headers: { "x-request-id": "ts-test-123" },
      onTrailer: (t) => {
        trailer = t.get("x-request-id");
      },
    });
    assert.equal(reply.requestId, "ts-test-123");
    assert.equal(trailer, "ts-test-123");
  });

  it("listModels pages through every model exactly once", TEST, async () => {
    const gw = client();
    const models: Model[] = [];
    let pageToken = "";
    let totalSize = -1;
    let pages = 0;
    do {
      const page = await gw.listModels({ pageSize: 1, pageToken }, { timeoutMs: TIMEOUT_MS });
      assert.ok(page.models.length <= 1, `page size 1 returned ${page.models.length} models`);
      models.push(...page.models);
      totalSize = page.totalSize;
      pageToken = page.nextPageToken;
      pages += 1;
      assert.ok(pages <= 1000, "nextPageToken never became empty");
    } while (pageToken !== "");

    const ids = models.map((m) => m.id);
    assert.equal(new Set(ids).size, ids.length, `repeated models: ${ids.join(", ")}`);
    assert.equal(totalSize, ids.length, "totalSize differs from the number of models listed");
    for (const id of MOCK_MODELS) {
      assert.ok(ids.includes(id), `${id} missing from ${ids.join(", ")}`);
    }
  });

  it("listModels filters by provider", TEST, async () => {
    const page = await client().listModels({ provider: "mock" }, { timeoutMs: TIMEOUT_MS });
    assert.ok(page.models.length >= MOCK_MODELS.length, "fewer models than the mock provider has");
    for (const m of page.models) {
      assert.equal(m.provider, "mock", `${m.id} is not a mock model`);
    }
  });

  it("rejects an out-of-range temperature with INVALID_ARGUMENT and a BadRequest", TEST, async () => {
    const err = await rejection(
      client().chat(chatRequest({ generation: { temperature: 7 } }), {
        timeoutMs: TIMEOUT_MS,
        headers: { "x-request-id": "ts-test-invalid" },
      }),
    );
    assert.equal(err.code, Code.InvalidArgument, `got ${Code[err.code]}: ${err.message}`);
    const info = errorInfo(err);
    assert.ok(info, "no google.rpc.ErrorInfo detail");
    assert.equal(info.reason, "INVALID_REQUEST");
    assert.equal(info.domain, "llmgateway.v1");
    assert.equal(info.metadata["request_id"], "ts-test-invalid", "ErrorInfo metadata request_id");
    const fields = badRequest(err)?.fieldViolations.map((v) => v.field) ?? [];
    assert.ok(
      fields.includes("generation.temperature"),
      `no BadRequest violation of generation.temperature (got ${fields.join(", ") || "none"})`,
    );
  });

  it("rejects an unknown model with NOT_FOUND", TEST, async () => {
    const err = await rejection(
      client().chat(chatRequest({ model: "nosuch:model" }), { timeoutMs: TIMEOUT_MS }),
    );
    assert.equal(err.code, Code.NotFound, `got ${Code[err.code]}: ${err.message}`);
    assert.equal(errorInfo(err)?.reason, "MODEL_NOT_FOUND");
    assert.equal(errorInfo(err)?.domain, "llmgateway.v1");
  });

  if (API_KEY !== "") {
    it("rejects a call without an API key with UNAUTHENTICATED", TEST, async () => {
      const err = await rejection(client("").chat(chatRequest(), { timeoutMs: TIMEOUT_MS }));
      assert.equal(err.code, Code.Unauthenticated, `got ${Code[err.code]}: ${err.message}`);
      assert.equal(errorInfo(err)?.reason, "MISSING_API_KEY");
    });

    it("rejects a wrong API key with UNAUTHENTICATED", TEST, async () => {
      const err = await rejection(client("wrong").chat(chatRequest(), { timeoutMs: TIMEOUT_MS }));
      assert.equal(err.code, Code.Unauthenticated, `got ${Code[err.code]}: ${err.message}`);
      assert.equal(errorInfo(err)?.reason, "INVALID_API_KEY");
    });
  } else {
    it("serves calls without an API key when LLM_GATEWAY_API_KEY is empty", TEST, async () => {
      const page = await client("").listModels({}, { timeoutMs: TIMEOUT_MS });
      assert.ok(page.models.length > 0, "no models listed");
    });
  }
});

describe("UsageService against a live gateway", () => {
  it("rejects a summary without a period with INVALID_ARGUMENT naming the field", TEST, async () => {
    const err = await rejection(usageClient().getUsageSummary({}, { timeoutMs: TIMEOUT_MS }));
    assert.equal(err.code, Code.InvalidArgument, `got ${Code[err.code]}: ${err.message}`);
    assert.equal(errorInfo(err)?.reason, "INVALID_REQUEST");
    const fields = badRequest(err)?.fieldViolations.map((v) => v.field) ?? [];
    assert.ok(fields.includes("filter.start_time"), `violations: ${fields.join(", ") || "none"}`);
  });

  if (API_KEY !== "") {
    it("sends the API key: without one, UNAUTHENTICATED", TEST, async () => {
      const anonymous = createUsageClient({ address: gatewayAddress() });
      const err = await rejection(anonymous.getUsageSummary(todaysUsage(), { timeoutMs: TIMEOUT_MS }));
      assert.equal(err.code, Code.Unauthenticated, `got ${Code[err.code]}: ${err.message}`);
      assert.equal(errorInfo(err)?.reason, "MISSING_API_KEY");
    });
  }
});

describe("BudgetService against a live gateway", () => {
  it("counts a call against its project's budget, then refuses the next", TEST, async () => {
    const budgets = budgetClient();
    const gw = client();
    // A budget of its own, for a project no other call names: 0.0001 USD a day, alert at 50 %.
    const id = `ts-test-${randomBytes(6).toString("hex")}`;
    const created: Budget = await budgets.createBudget(
      {
        budget: {
          id,
          scope: `project:${id}`,
          limitUsd: "0.0001",
          period: BudgetPeriod.DAY,
          thresholds: ["50"],
        },
      },
      { timeoutMs: TIMEOUT_MS },
    );
    let deleted = false;
    try {
      assert.equal(created.id, id);
      assert.equal(created.spentUsd, "0");
      assert.equal(created.remainingUsd, "0.0001");
      assert.equal(created.source, BudgetSource.API);

      // One call in the budget's project: its worst case (0.0000775) fits, and it costs 0.0000675.
      const request = chatRequest({
        model: "mock:echo-large",
        messages: [{ role: Role.USER, content: [{ kind: { case: "text", value: "Count this call" } }] }],
        generation: { maxTokens: 5 },
        caller: { project: id },
      });
      let trailers: Headers | undefined;
      const reply = await gw.chat(request, {
        timeoutMs: TIMEOUT_MS,
        onTrailer: (trailer) => {
          trailers = trailer;
        },
      });
      assert.equal(reply.cost?.total, "0.0000675");
      assert.equal(trailers?.get("x-budget-remaining-usd"), "0.0000325");
      assert.equal(trailers?.get("x-budget-id"), id);

      // The settlement is written in the background just after the reply: wait for the hold to go.
      const deadline = Date.now() + 3_000;
      let budget = await budgets.getBudget({ id }, { timeoutMs: TIMEOUT_MS });
      while (budget.reservedUsd !== "0" && Date.now() < deadline) {
        await sleep(50);
        budget = await budgets.getBudget({ id }, { timeoutMs: TIMEOUT_MS });
      }
      assert.equal(budget.reservedUsd, "0", "the call's hold was not settled within 3 s");
      assert.equal(budget.spentUsd, "0.0000675");

      // The same call again does not fit what is left: refused before anything is sent upstream.
      const err = await rejection(gw.chat(request, { timeoutMs: TIMEOUT_MS }));
      assert.equal(err.code, Code.ResourceExhausted, `got ${Code[err.code]}: ${err.message}`);
      const info = errorInfo(err);
      assert.ok(info, "no google.rpc.ErrorInfo detail");
      assert.equal(info.reason, "BUDGET_EXHAUSTED");
      assert.equal(info.domain, "llmgateway.v1");
      assert.equal(info.metadata["budget_id"], id);

      await budgets.deleteBudget({ id }, { timeoutMs: TIMEOUT_MS });
      deleted = true;
      const gone = await rejection(budgets.getBudget({ id }, { timeoutMs: TIMEOUT_MS }));
      assert.equal(gone.code, Code.NotFound, `got ${Code[gone.code]}: ${gone.message}`);
      assert.equal(errorInfo(gone)?.reason, "BUDGET_NOT_FOUND");
    } finally {
      if (!deleted) {
        // The test failed half-way: leave nothing behind.
        await budgets.deleteBudget({ id }, { timeoutMs: TIMEOUT_MS }).catch(() => undefined);
      }
    }
  });
});
