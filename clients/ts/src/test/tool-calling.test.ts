/**
 * A tool-calling conversation against a live gateway at `LLM_GATEWAY_ADDR` (mock provider): a
 * forced tool call, the tool's result sent back, the final answer; and the first turn streamed as
 * tool-call deltas. Run them with `make test-ts` from the repository root.
 *
 * @module
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FinishReason, PricingStatus, Role } from "../index.js";
import type { ChatResponse, ToolCall } from "../index.js";
import { textOf } from "../examples/quickstart.js";
import { getWeather, run } from "../examples/tool-calling.js";
import type { ToolCallingResult } from "../examples/tool-calling.js";

const ADDR = process.env["LLM_GATEWAY_ADDR"] ?? "";
const API_KEY = process.env["LLM_GATEWAY_API_KEY"] ?? "";
const TEST = { timeout: 60_000 } as const;

let conversation: Promise<{ result: ToolCallingResult; printed: string }> | undefined;

/** Runs the example's conversation once (on first use) and returns what it got and printed. */
function toolCalling(): Promise<{ result: ToolCallingResult; printed: string }> {
  if (ADDR === "") {
    assert.fail(
      "LLM_GATEWAY_ADDR is not set. These tests run against a live gateway: " +
        "run them with `make test-ts` from the repository root.",
    );
  }
  conversation ??= (async () => {
    let printed = "";
    const result = await run(
      { address: ADDR, apiKey: API_KEY, model: "mock:echo", timeoutMs: 15_000 },
      { line: (text) => (printed += `${text}\n`), write: (text) => (printed += text) },
    );
    return { result, printed };
  })();
  return conversation;
}

/** The reply's one tool call, after checking the reply is exactly that. */
function onlyCall(reply: ChatResponse): ToolCall {
  assert.equal(reply.finishReason, FinishReason.TOOL_CALLS);
  assert.equal(reply.message?.role, Role.ASSISTANT);
  const calls = reply.message?.toolCalls ?? [];
  assert.equal(calls.length, 1, `expected one tool call, got ${calls.length}`);
  return calls[0] as ToolCall;
}

/** The call's arguments, after checking they are a JSON object. */
function argumentsOf(call: ToolCall): Record<string, unknown> {
  const parsed: unknown = JSON.parse(call.arguments);
  assert.ok(
    typeof parsed === "object" && parsed !== null && !Array.isArray(parsed),
    `arguments ${call.arguments} are not a JSON object`,
  );
  return parsed as Record<string, unknown>;
}

describe("tool calling against a live gateway", () => {
  it("the first turn calls get_weather for Paris", TEST, async () => {
    const { first } = (await toolCalling()).result;
    const call = onlyCall(first);
    assert.equal(call.name, "get_weather");
    assert.notEqual(call.id, "", "the tool call has no id");
    // The mock fills a string argument with the name the question ends on.
    assert.deepEqual(argumentsOf(call), { city: "Paris" });
  });

  it("the follow-up sends the tool call and the tool's result for its id", TEST, async () => {
    const { first, followup } = (await toolCalling()).result;
    const call = onlyCall(first);
    const [sentCall, sentResult] = followup.messages.slice(-2);
    assert.equal(sentCall?.role, Role.ASSISTANT);
    assert.deepEqual(sentCall.toolCalls, [call]);
    assert.equal(sentResult?.role, Role.TOOL);
    assert.equal(sentResult.toolCallId, call.id);
    const city = argumentsOf(call)["city"] as string;
    assert.deepEqual(JSON.parse(textOf(sentResult)), getWeather(city));
    assert.equal(followup.toolChoice, undefined, "the follow-up still forces a tool");
  });

  it("the final answer uses the tool result, on a larger prompt, with a cost", TEST, async () => {
    const { result, printed } = await toolCalling();
    const { first, followup, final } = result;
    const toolOutput = textOf(followup.messages[followup.messages.length - 1]);
    assert.equal(final.finishReason, FinishReason.STOP);
    assert.deepEqual(final.message?.toolCalls, []);
    // The mock answers a tool result with "Tool result: <its text>".
    const answer = textOf(final.message);
    assert.notEqual(toolOutput, "");
    assert.ok(answer.includes(toolOutput), `"${answer}" does not contain "${toolOutput}"`);
    // The second turn resends the whole conversation, so its prompt is larger.
    const before = first.usage?.promptTokens ?? 0;
    const after = final.usage?.promptTokens ?? 0;
    assert.ok(before > 0 && after > before, `prompt tokens: turn 1 ${before}, turn 2 ${after}`);
    assert.equal(final.cost?.status, PricingStatus.PRICED);
    assert.match(final.cost.total, /^\d+(\.\d+)?$/);
    assert.match(final.cost.total, /[1-9]/, "the cost is zero");
    assert.ok(printed.includes(answer), "the answer was not printed");
  });

  it("the streamed deltas assemble into the unary reply's tool call", TEST, async () => {
    const { first, streamEvents, streamedCalls } = (await toolCalling()).result;
    const call = onlyCall(first);
    assert.equal(streamEvents[0]?.event.case, "start");
    const last = streamEvents[streamEvents.length - 1]?.event;
    assert.equal(last?.case, "finish");
    assert.equal(last.value.finishReason, FinishReason.TOOL_CALLS);

    const deltas = streamEvents.flatMap((e) =>
      e.event.case === "toolCallDelta" ? [e.event.value] : [],
    );
    assert.ok(deltas.length > 0, "no tool-call deltas");
    assert.deepEqual(new Set(deltas.map((d) => d.index)), new Set([0]));
    assert.notEqual(deltas[0]?.id, "", "the first delta has no id");
    assert.equal(deltas[0]?.name, call.name);
    assert.equal(deltas.map((d) => d.arguments).join(""), call.arguments);

    // The example's assembly agrees.
    assert.equal(streamedCalls.length, 1);
    const [streamed] = streamedCalls;
    assert.deepEqual(
      { id: streamed?.id, name: streamed?.name, arguments: streamed?.arguments },
      { id: deltas[0]?.id, name: call.name, arguments: call.arguments },
    );
  });
});
