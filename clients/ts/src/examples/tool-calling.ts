/**
 * A tool-calling conversation: the model asks for a tool, the tool runs here, and its result goes
 * back to the model for the final answer. The first turn is also streamed, to show how tool-call
 * deltas assemble into whole calls.
 *
 * Run it with `npm run example:tools` in `clients/ts` (after `npm ci` there once). Settings come
 * from the environment:
 *
 * - `LLM_GATEWAY_ADDR`: the gateway's `host:port` (default `localhost:50051`).
 * - `LLM_GATEWAY_API_KEY`: the API key, when the gateway requires one.
 * - `LLM_GATEWAY_MODEL`: a model that supports tools (default `mock:echo`).
 *
 * @module
 */

import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import {
  ChatRequestSchema,
  ConnectError,
  FinishReason,
  MessageSchema,
  Role,
  ToolCallSchema,
  ToolChoiceMode,
  createGatewayClient,
  errorInfo,
} from "../index.js";
import type {
  ChatRequest,
  ChatResponse,
  ChatStreamResponse,
  Message,
  ToolCall,
} from "../index.js";
import { optionsFromEnv, stdoutOutput, textOf } from "./quickstart.js";
import type { QuickstartOptions, QuickstartOutput } from "./quickstart.js";

/** Both turns of the conversation, and the first turn streamed. */
export interface ToolCallingResult {
  /** The reply to the first turn: the tool calls. */
  first: ChatResponse;
  /**
   * The second turn's request: the first turn's messages, the assistant's tool calls, and one
   * tool message per call.
   */
  followup: ChatRequest;
  /** The reply to the second turn: the answer. */
  final: ChatResponse;
  /** The events of the first turn streamed, in arrival order. */
  streamEvents: ChatStreamResponse[];
  /** The tool calls assembled from {@link ToolCallingResult.streamEvents}. */
  streamedCalls: ToolCall[];
}

/** The tool: a stand-in for a real weather service. */
export function getWeather(city: string): { city: string; temp_c: number } {
  return { city, temp_c: 18 };
}

/** get_weather as declared to the model, with the JSON Schema of its arguments. */
const WEATHER_TOOL = {
  name: "get_weather",
  description: "The current weather in a city.",
  parameters: {
    type: "object",
    properties: { city: { type: "string" } },
    required: ["city"],
  },
};

/**
 * Runs the tool a call names and returns its result as JSON text. The arguments are the model's
 * JSON text, kept verbatim by the gateway, so they are checked before use.
 */
export function runTool(call: ToolCall): string {
  if (call.name !== "get_weather") {
    throw new Error(`the model called an unknown tool "${call.name}"`);
  }
  const args: unknown = JSON.parse(call.arguments);
  if (
    typeof args !== "object" ||
    args === null ||
    !("city" in args) ||
    typeof args.city !== "string"
  ) {
    throw new Error(`get_weather: arguments ${call.arguments} are not an object with a city`);
  }
  return JSON.stringify(getWeather(args.city));
}

/** The answer to one tool call, for the next turn. */
function toolMessage(toolCallId: string, result: string): Message {
  return create(MessageSchema, {
    role: Role.TOOL,
    toolCallId,
    content: [{ kind: { case: "text", value: result } }],
  });
}

/**
 * Joins a stream's tool-call deltas into calls: deltas with the same index are one call, the first
 * carries its id and name, and the arguments are every delta's pieces in order.
 */
export function assembleToolCalls(events: Iterable<ChatStreamResponse>): ToolCall[] {
  const calls = new Map<number, ToolCall>();
  for (const { event } of events) {
    if (event.case !== "toolCallDelta") {
      continue;
    }
    const delta = event.value;
    let call = calls.get(delta.index);
    if (call === undefined) {
      call = create(ToolCallSchema);
      calls.set(delta.index, call);
    }
    call.id ||= delta.id;
    call.name ||= delta.name;
    call.arguments += delta.arguments;
  }
  return [...calls.entries()].sort(([a], [b]) => a - b).map(([, call]) => call);
}

/**
 * Runs the conversation, printing each step.
 *
 * @param opts - Where the gateway is, and which model to call.
 * @param out - Where to print; standard output by default.
 */
export async function run(
  opts: QuickstartOptions,
  out: QuickstartOutput = stdoutOutput,
): Promise<ToolCallingResult> {
  const model = opts.model || "mock:echo";
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const client = createGatewayClient({
    address: opts.address,
    ...(opts.apiKey ? { apiKey: opts.apiKey } : {}),
  });

  const request = create(ChatRequestSchema, {
    model,
    messages: [
      {
        role: Role.SYSTEM,
        content: [{ kind: { case: "text", value: "Use the tools to answer." } }],
      },
      {
        role: Role.USER,
        content: [{ kind: { case: "text", value: "What is the weather in Paris?" } }],
      },
    ],
    tools: [WEATHER_TOOL],
    // REQUIRED: the reply is a tool call instead of text.
    toolChoice: { choice: { case: "mode", value: ToolChoiceMode.REQUIRED } },
  });

  // Turn 1: the tool calls.
  const first = await client.chat(request, { timeoutMs });
  out.line(`Chat: ${FinishReason[first.finishReason]}`);
  const assistantTurn = first.message;
  if (assistantTurn === undefined || assistantTurn.toolCalls.length === 0) {
    throw new Error(`${model} answered without calling a tool: "${textOf(assistantTurn)}"`);
  }

  // Run every call; the assistant's turn and one tool message per call extend the conversation.
  // No tool choice this time, so the model may answer.
  const followup = create(ChatRequestSchema, {
    model,
    messages: [...request.messages, assistantTurn],
    tools: request.tools,
  });
  for (const call of assistantTurn.toolCalls) {
    const result = runTool(call);
    out.line(`  ${call.name}(${call.arguments}) [${call.id}] -> ${result}`);
    followup.messages.push(toolMessage(call.id, result));
  }

  // Turn 2: the answer, from the tool results.
  const final = await client.chat(followup, { timeoutMs });
  out.line(`Chat: ${FinishReason[final.finishReason]}`);
  out.line(`  ${textOf(final.message)}`);
  for (const [turn, reply] of [["turn 1", first], ["turn 2", final]] as const) {
    out.line(
      `  ${turn}: ${reply.usage?.promptTokens} prompt + ${reply.usage?.completionTokens}` +
        ` completion tokens, cost ${reply.cost?.total} ${reply.cost?.currency}`,
    );
  }

  // Turn 1 again, streamed: tool calls arrive as deltas to join by index.
  const streamEvents: ChatStreamResponse[] = [];
  for await (const event of client.chatStream({ request }, { timeoutMs })) {
    streamEvents.push(event);
  }
  const streamedCalls = assembleToolCalls(streamEvents);
  const deltas = streamEvents.filter((e) => e.event.case === "toolCallDelta").length;
  out.line(`ChatStream: ${deltas} tool-call deltas`);
  for (const call of streamedCalls) {
    out.line(`  ${call.name}(${call.arguments}) [${call.id}]`);
  }

  return { first, followup, final, streamEvents, streamedCalls };
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
    const info = errorInfo(err);
    process.stderr.write(
      `tool calling against ${opts.address} failed: ${ConnectError.from(err).message}` +
        (info ? ` (reason ${info.reason})` : "") +
        "\n",
    );
    process.exitCode = 1;
  }
}
