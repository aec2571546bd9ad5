/**
 * Quickstart: one call of every LLM Gateway RPC, printing usage, cost and latency, then the day's
 * usage summary from the gateway's ledger.
 *
 * Run it with `npm run example` in `clients/ts` (after `npm ci` there once). Settings come from
 * the environment:
 *
 * - `LLM_GATEWAY_ADDR`: the gateway's `host:port` (default `localhost:50051`).
 * - `LLM_GATEWAY_API_KEY`: the API key, when the gateway requires one.
 * - `LLM_GATEWAY_MODEL`: the model to call (default `mock:echo`).
 *
 * @module
 */

import { realpathSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Duration } from "@bufbuild/protobuf/wkt";
import {
  ChatRequestSchema,
  ConnectError,
  FinishReason,
  GetUsageSummaryRequestSchema,
  Granularity,
  PricingStatus,
  Role,
  TokenCountMethod,
  createGatewayClient,
  createUsageClient,
  errorInfo,
} from "../index.js";
import type {
  ChatRequest,
  ChatResponse,
  ChatStreamResponse,
  Cost,
  EstimateCostResponse,
  GetUsageSummaryRequest,
  GetUsageSummaryResponse,
  Latency,
  Message,
  Model,
  Usage,
} from "../index.js";

/** Settings of {@link run}. */
export interface QuickstartOptions {
  /** The gateway's `host:port`. */
  address: string;
  /** The API key; omit or leave empty when the gateway needs none. */
  apiKey?: string;
  /** The model to call. Default `mock:echo`. */
  model?: string;
  /** The user message to send. */
  prompt?: string;
  /** Timeout of each call in milliseconds. Default 30 seconds. */
  timeoutMs?: number;
}

/** Where {@link run} prints. */
export interface QuickstartOutput {
  /** Prints one line. */
  line(text: string): void;
  /** Prints text without a line break (used for stream deltas as they arrive). */
  write(text: string): void;
}

/** Everything {@link run} received, in call order. */
export interface QuickstartResult {
  /** The request sent to `Chat`, and inside `ChatStream` and `EstimateCost`. */
  request: ChatRequest;
  /** The reply of `Chat`. */
  chat: ChatResponse;
  /** The `x-request-id` trailer of `Chat`, or `null` when absent. */
  chatRequestIdTrailer: string | null;
  /** Every event of `ChatStream`, in arrival order. */
  streamEvents: ChatStreamResponse[];
  /** The concatenated `textDelta` events of `ChatStream`. */
  streamText: string;
  /** The reply of `EstimateCost`, comparing the model with `mock:echo-large`. */
  estimate: EstimateCostResponse;
  /** Every model of `ListModels`, collected over all pages. */
  models: Model[];
  /** The `GetUsageSummary` request: today, 00:00 UTC to 00:00 UTC tomorrow, in one bucket. */
  usageRequest: GetUsageSummaryRequest;
  /** The day's summary before the calls above. */
  usageBefore: GetUsageSummaryResponse;
  /** The day's summary after them. */
  usage: GetUsageSummaryResponse;
}

/** The model called when neither {@link QuickstartOptions.model} nor `LLM_GATEWAY_MODEL` is set. */
export const DEFAULT_MODEL = "mock:echo";

/** The user message sent when {@link QuickstartOptions.prompt} is not set. */
export const DEFAULT_PROMPT = "Hello from TypeScript, gateway!";

/** How many of {@link run}'s calls the usage ledger records: `Chat` and `ChatStream`. */
const LEDGERED_CALLS = 2n;

/** Prints to standard output. */
export const stdoutOutput: QuickstartOutput = {
  line: (text) => {
    process.stdout.write(`${text}\n`);
  },
  write: (text) => {
    process.stdout.write(text);
  },
};

/**
 * Reads {@link QuickstartOptions} from `LLM_GATEWAY_ADDR`, `LLM_GATEWAY_API_KEY` and
 * `LLM_GATEWAY_MODEL`.
 *
 * @param env - The environment to read; `process.env` by default.
 */
export function optionsFromEnv(env: NodeJS.ProcessEnv = process.env): QuickstartOptions {
  return {
    address: env["LLM_GATEWAY_ADDR"] || "localhost:50051",
    apiKey: env["LLM_GATEWAY_API_KEY"] ?? "",
    model: env["LLM_GATEWAY_MODEL"] || DEFAULT_MODEL,
  };
}

/** The text parts of a message, concatenated. */
export function textOf(message: Message | undefined): string {
  let text = "";
  for (const part of message?.content ?? []) {
    if (part.kind.case === "text") {
      text += part.kind.value;
    }
  }
  return text;
}

/** A duration in milliseconds, for display only. */
function formatDuration(duration: Duration | undefined): string {
  if (duration === undefined) {
    return "-";
  }
  const ms = Number(duration.seconds) * 1000 + duration.nanos / 1_000_000;
  return `${ms.toFixed(2)} ms`;
}

/** Usage as "prompt + completion = total tokens". */
function formatUsage(usage: Usage | undefined): string {
  if (usage === undefined) {
    return "none";
  }
  const extra: string[] = [];
  if (usage.cacheReadTokens > 0) extra.push(`${usage.cacheReadTokens} cache read`);
  if (usage.cacheWriteTokens > 0) extra.push(`${usage.cacheWriteTokens} cache write`);
  if (usage.reasoningTokens > 0) extra.push(`${usage.reasoningTokens} reasoning`);
  if (usage.estimated) extra.push("estimated");
  const suffix = extra.length > 0 ? ` (${extra.join(", ")})` : "";
  return (
    `${usage.promptTokens} prompt + ${usage.completionTokens} completion` +
    ` = ${usage.totalTokens} tokens${suffix}`
  );
}

/** A cost with its currency; the amounts stay decimal strings. */
function formatCost(cost: Cost | undefined): string {
  if (cost === undefined) {
    return "none";
  }
  const status = PricingStatus[cost.status] ?? String(cost.status);
  if (cost.status === PricingStatus.UNKNOWN) {
    return "unknown (no price for this model)";
  }
  const parts = [`${cost.total} ${cost.currency}`, `input ${cost.input}`, `output ${cost.output}`];
  if (cost.costPer1kTokens !== "") parts.push(`${cost.costPer1kTokens} per 1k tokens`);
  if (cost.estimated) parts.push("estimated");
  const source = cost.priceSource !== "" ? `, ${cost.priceSource}` : "";
  return `${parts.join(", ")} [${status.toLowerCase()}${source}]`;
}

/** The parts of a latency that are set. */
function formatLatency(latency: Latency | undefined): string {
  if (latency === undefined) {
    return "none";
  }
  const parts = [`total ${formatDuration(latency.total)}`];
  if (latency.timeToFirstToken) parts.push(`first token ${formatDuration(latency.timeToFirstToken)}`);
  if (latency.upstream) parts.push(`upstream ${formatDuration(latency.upstream)}`);
  if (latency.gatewayOverhead) parts.push(`gateway ${formatDuration(latency.gatewayOverhead)}`);
  return parts.join(", ");
}

/** A `GetUsageSummary` request for the UTC day of `now`, in one daily bucket. */
export function todaysUsageRequest(now: Date): GetUsageSummaryRequest {
  const [year, month, day] = [now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()];
  return create(GetUsageSummaryRequestSchema, {
    filter: {
      startTime: timestampFromDate(new Date(Date.UTC(year, month, day))),
      endTime: timestampFromDate(new Date(Date.UTC(year, month, day + 1))),
    },
    granularity: Granularity.DAY,
    topModels: 3,
  });
}

/** Prints a usage summary; the costs stay the decimal strings the gateway sent. */
function printUsageSummary(out: QuickstartOutput, summary: GetUsageSummaryResponse): void {
  const total = summary.total;
  out.line(`calls:    ${total?.requests ?? 0n} (${total?.errors ?? 0n} failed)`);
  out.line(`tokens:   ${total?.promptTokens ?? 0n} prompt + ${total?.completionTokens ?? 0n} completion`);
  out.line(`cost:     ${total?.cost ?? "0"} ${summary.currency}`);
  if (summary.topModelsByCost.length > 0) {
    out.line("top models by cost:");
  }
  for (const m of summary.topModelsByCost) {
    out.line(`  ${m.model}: ${m.cost} ${summary.currency} (${m.requests} calls)`);
  }
}

/**
 * Calls `Chat`, `ChatStream`, `EstimateCost` and `ListModels` in that order, prints what each
 * returned, then reads and prints the day's usage summary, and returns it all.
 *
 * @param opts - Where the gateway is, and what to send.
 * @param out - Where to print; standard output by default.
 */
export async function run(
  opts: QuickstartOptions,
  out: QuickstartOutput = stdoutOutput,
): Promise<QuickstartResult> {
  const model = opts.model || DEFAULT_MODEL;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const connection = { address: opts.address, ...(opts.apiKey ? { apiKey: opts.apiKey } : {}) };
  const client = createGatewayClient(connection);
  const usage = createUsageClient(connection);

  // The day's usage before the calls, to tell below when the ledger has recorded them.
  const now = new Date();
  const usageRequest = todaysUsageRequest(now);
  const usageBefore = await usage.getUsageSummary(usageRequest, { timeoutMs });

  const request = create(ChatRequestSchema, {
    model,
    messages: [
      { role: Role.SYSTEM, content: [{ kind: { case: "text", value: "Be brief." } }] },
      {
        role: Role.USER,
        content: [{ kind: { case: "text", value: opts.prompt ?? DEFAULT_PROMPT } }],
      },
    ],
  });

  // Chat: the whole reply at once.
  let chatRequestIdTrailer: string | null = null;
  const chat = await client.chat(request, {
    timeoutMs,
    onTrailer: (trailers) => {
      chatRequestIdTrailer = trailers.get("x-request-id");
    },
  });
  out.line(`== Chat (${chat.model} via ${chat.provider}, request ${chat.requestId})`);
  out.line(`reply:    ${textOf(chat.message)}`);
  out.line(`finish:   ${FinishReason[chat.finishReason] ?? chat.finishReason}`);
  out.line(`usage:    ${formatUsage(chat.usage)}`);
  out.line(`cost:     ${formatCost(chat.cost)}`);
  out.line(`latency:  ${formatLatency(chat.latency)}`);

  // ChatStream: print each text delta as it arrives.
  const streamEvents: ChatStreamResponse[] = [];
  let streamText = "";
  for await (const event of client.chatStream({ request }, { timeoutMs })) {
    streamEvents.push(event);
    switch (event.event.case) {
      case "start":
        out.line(
          `== ChatStream (${event.event.value.model} via ${event.event.value.provider},` +
            ` request ${event.event.value.requestId})`,
        );
        out.write("reply:    ");
        break;
      case "textDelta":
        streamText += event.event.value.text;
        out.write(event.event.value.text);
        break;
      case "toolCallDelta":
        break;
      case "finish": {
        const finish = event.event.value;
        out.line("");
        out.line(`finish:   ${FinishReason[finish.finishReason] ?? finish.finishReason}`);
        out.line(`usage:    ${formatUsage(finish.usage)}`);
        out.line(`cost:     ${formatCost(finish.cost)}`);
        out.line(`latency:  ${formatLatency(finish.latency)}`);
        break;
      }
      case undefined:
        break;
    }
  }

  // EstimateCost: what the same call would cost on two models, cheapest first.
  const estimate = await client.estimateCost(
    { request, candidateModels: [...new Set(["mock:echo-large", model])] },
    { timeoutMs },
  );
  out.line("== EstimateCost");
  for (const e of estimate.estimates) {
    const method = TokenCountMethod[e.tokenCountMethod] ?? e.tokenCountMethod;
    out.line(
      `${e.model}: expected ${e.expectedCost?.total ?? "-"} ${e.expectedCost?.currency ?? ""}` +
        ` (${e.promptTokens} prompt tokens, ${String(method).toLowerCase()},` +
        ` ${e.expectedOutputTokens} output), worst case ${e.worstCaseCost?.total ?? "-"}` +
        ` (${e.worstCaseOutputTokens} output)`,
    );
  }

  // ListModels: follow next_page_token until it is empty.
  const models: Model[] = [];
  let pageToken = "";
  do {
    const page = await client.listModels({ pageSize: 100, pageToken }, { timeoutMs });
    models.push(...page.models);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  out.line(`== ListModels (${models.length} models)`);
  for (const m of models) {
    const p = m.pricing;
    const price =
      p === undefined || p.status === PricingStatus.UNKNOWN
        ? "price unknown"
        : p.status === PricingStatus.FREE
          ? "free"
          : `${p.inputPerMillion} in / ${p.outputPerMillion} out per 1M tokens ${p.currency}`;
    out.line(`${m.id}: ${price}`);
  }

  // GetUsageSummary: today's calls as the ledger has them; a key that is not an admin key sees
  // only its own. The ledger writes in the background (every 100 ms by default), so a summary can
  // lag the calls just made: wait, up to 2 s, until it counts this run's too.
  const want = (usageBefore.total?.requests ?? 0n) + LEDGERED_CALLS;
  let summary = await usage.getUsageSummary(usageRequest, { timeoutMs });
  for (let tries = 1; tries < 20 && (summary.total?.requests ?? 0n) < want; tries++) {
    await sleep(100);
    summary = await usage.getUsageSummary(usageRequest, { timeoutMs });
  }
  out.line(`== GetUsageSummary (${now.toISOString().slice(0, 10)}, UTC)`);
  printUsageSummary(out, summary);
  if ((summary.total?.requests ?? 0n) < want) {
    out.line("(the ledger has not recorded all of this run's calls yet)");
  }

  return {
    request,
    chat,
    chatRequestIdTrailer,
    streamEvents,
    streamText,
    estimate,
    models,
    usageRequest,
    usageBefore,
    usage: summary,
  };
}

/** True when this file is the script Node was started with (not imported). */
function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (entry === undefined) {
    return false;
  }
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  const opts = optionsFromEnv();
  try {
    await run(opts);
  } catch (err) {
    const e = ConnectError.from(err);
    const info = errorInfo(err);
    process.stderr.write(
      `quickstart against ${opts.address} failed: ${e.message}` +
        (info ? ` (reason ${info.reason})` : "") +
        "\n",
    );
    process.exitCode = 1;
  }
}
