/**
 * Tests against a live gateway at `LLM_GATEWAY_ADDR` (with `LLM_GATEWAY_API_KEY` when it needs a
 * key). Run them with `make test-ts` from the repository root, which starts a gateway.
 *
 * @module
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  FinishReason,
  PricingStatus,
  Role,
  badRequest,
  createGatewayClient,
  errorInfo,
} from "../index.js";
import type { ChatRequestSchema, Cost, GatewayClient, Model } from "../index.js";
import { run, textOf } from "../examples/quickstart.js";
import type { QuickstartResult } from "../examples/quickstart.js";

const ADDR = process.env["LLM_GATEWAY_ADDR"] ?? "";
const API_KEY = process.env["LLM_GATEWAY_API_KEY"] ?? "";

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

let quickstartResult: Promise<{ result: QuickstartResult; printed: string }> | undefined;

/** Runs the quickstart once (on first use) and returns what it got and printed. */
function quickstart(): Promise<{ result: QuickstartResult; printed: string }> {
  const address = gatewayAddress();
  quickstartResult ??= (async () => {
    let printed = "";
    const result = await run(
      { address, apiKey: API_KEY, model: "mock:echo", timeoutMs: TIMEOUT_MS },
      { line: (text) => (printed += `${text}\n`), write: (text) => (printed += text) },
    );
    return { result, printed };
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
