/**
 * The gateway's OpenAI-compatible HTTP door (`LLM_GATEWAY_HTTP_URL`) through the official `openai`
 * Node SDK: a chat completion with exact usage and cost, a stream, and an error in OpenAI's shape,
 * from the mock provider and from fake OpenAI, Anthropic and Gemini upstreams.
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

// The fake upstreams scripts/with-gateway.sh starts echo the last user message, each in its own
// provider's wire format, and count 10 prompt tokens and a quarter of the text's characters.
const UPSTREAMS = [
  { model: "openai:gpt-4o-mini", provider: "openai" },
  { model: "anthropic:claude-haiku-4-5", provider: "anthropic" },
  { model: "gemini:gemini-2.5-flash", provider: "gemini" },
] as const;

describe("the openai Node SDK through the HTTP door to fake OpenAI, Anthropic and Gemini upstreams", () => {
  for (const { model, provider } of UPSTREAMS) {
    it(`gets ${model}'s answer, usage and cost`, TEST, async () => {
      const text = `Hello ${provider} from Node`;
      const reply = await sdk().chat.completions.create({ model, messages: [{ role: "user", content: text }] });
      assert.equal(reply.model, model);
      assert.equal(reply.choices[0]?.message.content, text);
      assert.equal(reply.usage?.prompt_tokens, 10);
      assert.equal(reply.usage?.completion_tokens, Math.floor(text.length / 4));
      const extra = reply as unknown as { provider: string; cost: { status: string; total_cost: string } };
      assert.equal(extra.provider, provider);
      assert.equal(extra.cost.status, "priced");
      assert.ok(toUnits(extra.cost.total_cost, 18) > 0n);
    });

    it(`streams ${model}'s answer word by word, then the usage`, TEST, async () => {
      const stream = await sdk().chat.completions.create({
        model,
        messages: [{ role: "user", content: "one two three four" }],
        stream: true,
        stream_options: { include_usage: true },
      });
      const pieces: string[] = [];
      let completion = -1;
      for await (const chunk of stream) {
        const piece = chunk.choices[0]?.delta.content;
        if (piece) pieces.push(piece);
        if (chunk.usage) completion = chunk.usage.completion_tokens;
      }
      assert.equal(pieces.join(""), "one two three four");
      assert.ok(pieces.length >= 4, `${pieces.length} pieces`);
      assert.equal(completion, Math.floor("one two three four".length / 4));
    });
  }
});

/** A plain decimal string as an integer count of 10^-places. */
function toUnits(text: string, places: number): bigint {
  const [whole = "0", fraction = ""] = text.split(".");
  assert.ok(fraction.length <= places, `${text} has more than ${places} decimal places`);
  return BigInt(whole) * 10n ** BigInt(places) + BigInt(fraction.padEnd(places, "0") || "0");
}
