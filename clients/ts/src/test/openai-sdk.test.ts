/**
 * The gateway's OpenAI-compatible HTTP door (`LLM_GATEWAY_HTTP_URL`) through the official `openai`
 * Node SDK: a chat completion with exact usage and cost, a stream, and an error in OpenAI's shape.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import OpenAI from "openai";

const HTTP_URL = process.env["LLM_GATEWAY_HTTP_URL"] ?? "";
const API_KEY = process.env["LLM_GATEWAY_API_KEY"] ?? "";
const TEST = { timeout: 60_000 } as const;

function sdk(apiKey: string = API_KEY): OpenAI {
  if (HTTP_URL === "") {
    assert.fail(
      "LLM_GATEWAY_HTTP_URL is not set: run these tests with `make test-ts`, which starts a gateway.",
    );
  }
  return new OpenAI({ baseURL: `${HTTP_URL}/v1`, apiKey: apiKey || "unused", maxRetries: 0, timeout: 15_000 });
}

describe("the official openai Node SDK against the HTTP door", () => {
  it("gets a completion with usage and the gateway's exact cost", TEST, async () => {
    const reply = await sdk().chat.completions.create({
      model: "mock:echo",
      messages: [{ role: "user", content: "Hello from the Node SDK" }],
    });
    assert.equal(reply.object, "chat.completion");
    assert.equal(reply.model, "mock:echo");
    assert.equal(reply.choices[0]?.message.content, "Hello from the Node SDK");
    assert.equal(reply.choices[0]?.finish_reason, "stop");
    const usage = reply.usage;
    assert.ok(usage !== undefined);
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
    // The gateway's extension, as exact decimal text: mock:echo's 0.15 and 0.60 USD per million.
    const cost = (reply as unknown as { cost: { total_cost: string } }).cost;
    const micro = BigInt(usage.prompt_tokens) * 15n + BigInt(usage.completion_tokens) * 60n; // 1e-8 USD
    assert.equal(toUnits(cost.total_cost, 8), micro);
  });

  it("streams the text, then the usage", TEST, async () => {
    const stream = await sdk().chat.completions.create({
      model: "mock:echo",
      messages: [{ role: "user", content: "one two three" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage = 0;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      if (chunk.usage) usage += 1;
    }
    assert.equal(text, "one two three");
    assert.equal(usage, 1);
  });

  it("reads a refusal in OpenAI's error shape", TEST, async () => {
    await assert.rejects(
      sdk().chat.completions.create({
        model: "mock:echo",
        messages: [{ role: "user", content: "x" }],
        temperature: 7,
      }),
      (err: unknown) => {
        assert.ok(err instanceof OpenAI.BadRequestError);
        assert.equal(err.status, 400);
        assert.equal(err.param, "temperature");
        assert.equal(err.type, "invalid_request_error");
        return true;
      },
    );
    await assert.rejects(
      sdk("not-a-key-of-this-gateway").chat.completions.create({
        model: "mock:echo",
        messages: [{ role: "user", content: "x" }],
      }),
      (err: unknown) => err instanceof OpenAI.AuthenticationError,
    );
  });
});

/** A plain decimal string as an integer count of 10^-places. */
function toUnits(text: string, places: number): bigint {
  const [whole = "0", fraction = ""] = text.split(".");
  assert.ok(fraction.length <= places, `${text} has more than ${places} decimal places`);
  return BigInt(whole) * 10n ** BigInt(places) + BigInt(fraction.padEnd(places, "0") || "0");
}
