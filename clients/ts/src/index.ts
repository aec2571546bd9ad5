/**
 * TypeScript client for the LLM Gateway gRPC API (`llmgateway.v1`).
 *
 * The message types, enums and schemas are generated from `protos/llmgateway/v1` by protobuf-es
 * and re-exported here; the service descriptors are {@link GatewayService},
 * {@link UsageService} (the usage ledger) and {@link BudgetService} (spend limits). Calls go over
 * Connect's gRPC transport for Node.js (native `node:http2`).
 *
 * Money in this API is always a decimal string in plain notation (for example `"0.000435"`).
 * Never convert an amount to a JavaScript `number`: use a decimal library if you need arithmetic.
 *
 * @packageDocumentation
 */

import type { SecureClientSessionOptions } from "node:http2";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { CallOptions, Client, Interceptor, Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { GatewayService } from "./gen/llmgateway/v1/gateway_service_pb.js";
import { UsageService } from "./gen/llmgateway/v1/usage_service_pb.js";
import { BudgetService } from "./gen/llmgateway/v1/budget_service_pb.js";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";
import type { BadRequest, ErrorInfo, RetryInfo } from "./gen/google/rpc/error_details_pb.js";

/** Usage, cost, latency and routing messages (`llmgateway/v1/accounting.proto`). */
export * from "./gen/llmgateway/v1/accounting_pb.js";
/** Models, prices, `ListModels` and `EstimateCost` messages (`llmgateway/v1/catalog.proto`). */
export * from "./gen/llmgateway/v1/catalog_pb.js";
/** `Chat` and `ChatStream` requests, replies and stream events (`llmgateway/v1/chat.proto`). */
export * from "./gen/llmgateway/v1/chat_pb.js";
/** Conversation content: messages, parts, images and tools (`llmgateway/v1/content.proto`). */
export * from "./gen/llmgateway/v1/content_pb.js";
/** The service descriptor `GatewayService` (`llmgateway/v1/gateway_service.proto`). */
export * from "./gen/llmgateway/v1/gateway_service_pb.js";
/** Usage summaries and records: `GetUsageSummary`, `ListUsageRecords` (`llmgateway/v1/usage.proto`). */
export * from "./gen/llmgateway/v1/usage_pb.js";
/** The service descriptor `UsageService` (`llmgateway/v1/usage_service.proto`). */
export * from "./gen/llmgateway/v1/usage_service_pb.js";
/** Budgets, their periods and alerts (`llmgateway/v1/budgets.proto`). */
export * from "./gen/llmgateway/v1/budgets_pb.js";
/**
 * The service descriptor `BudgetService` and its requests and replies
 * (`llmgateway/v1/budget_service.proto`).
 */
export * from "./gen/llmgateway/v1/budget_service_pb.js";
/**
 * The `google.rpc` error details the gateway attaches to errors: `ErrorInfo` on every error,
 * `BadRequest` on INVALID_ARGUMENT, `RetryInfo` on some RESOURCE_EXHAUSTED errors.
 */
export * from "./gen/google/rpc/error_details_pb.js";

/**
 * Connect's error class and status codes, re-exported so callers can check `err.code` without a
 * direct dependency on `@connectrpc/connect`.
 */
export { Code, ConnectError };
/** Connect types used by {@link createGatewayClient} and its calls. */
export type { CallOptions, Client, Interceptor, Transport };

/** A client for `llmgateway.v1.GatewayService`: one async method per RPC. */
export type GatewayClient = Client<typeof GatewayService>;

/** A client for `llmgateway.v1.UsageService`: `getUsageSummary` and `listUsageRecords`. */
export type UsageClient = Client<typeof UsageService>;

/**
 * A client for `llmgateway.v1.BudgetService`: `createBudget`, `getBudget`, `listBudgets`,
 * `updateBudget`, `deleteBudget` and `listBudgetAlerts`.
 */
export type BudgetClient = Client<typeof BudgetService>;

/** Options of {@link createGatewayTransport} and {@link createGatewayClient}. */
export interface GatewayClientOptions {
  /**
   * Where the gateway listens: `"host:port"` (for example `"localhost:50051"`), or a full base URL
   * (`"http://host:port"` or `"https://host:port"`), in which case the scheme decides TLS.
   */
  address: string;
  /**
   * The gateway API key. When non-empty, every call carries `authorization: Bearer <apiKey>`
   * (unless the call sets its own `authorization` header).
   */
  apiKey?: string | undefined;
  /**
   * Connect with TLS (`https://`) instead of plaintext HTTP/2 (`http://`, the default). Ignored
   * when `address` is a full URL, except that a conflicting value is an error.
   */
  tls?: boolean | undefined;
  /**
   * Options passed to `node:http2` `connect()`, for example `{ ca }` to trust a private
   * certificate authority.
   */
  nodeOptions?: SecureClientSessionOptions | undefined;
  /** Timeout in milliseconds applied to every call that does not set `timeoutMs` itself. */
  defaultTimeoutMs?: number | undefined;
  /** Further interceptors, run after the one that adds the API key. */
  interceptors?: Interceptor[] | undefined;
}

/**
 * An interceptor that adds `authorization: Bearer <apiKey>` to every call that does not already
 * carry an `authorization` header.
 *
 * @param apiKey - The gateway API key.
 */
export function bearerAuthInterceptor(apiKey: string): Interceptor {
  const value = `Bearer ${apiKey}`;
  return (next) => async (req) => {
    if (!req.header.has("authorization")) {
      req.header.set("authorization", value);
    }
    return await next(req);
  };
}

/**
 * Resolves {@link GatewayClientOptions.address} and {@link GatewayClientOptions.tls} to the base
 * URL of the transport.
 */
function baseUrlOf(address: string, tls: boolean | undefined): string {
  const trimmed = address.trim();
  if (trimmed === "") {
    throw new Error("createGatewayClient: address must not be empty (expected \"host:port\")");
  }
  const scheme = /^(https?):\/\//i.exec(trimmed)?.[1]?.toLowerCase();
  if (scheme === undefined) {
    return `${tls === true ? "https" : "http"}://${trimmed}`;
  }
  if (tls !== undefined && tls !== (scheme === "https")) {
    throw new Error(
      `createGatewayClient: tls: ${String(tls)} conflicts with the ${scheme}:// address ${trimmed}`,
    );
  }
  return trimmed;
}

/**
 * Creates a gRPC transport (HTTP/2, binary protobuf) to the gateway. Most callers want
 * {@link createGatewayClient}; use this to share one connection between several clients.
 *
 * @param options - Address, API key, TLS and transport settings.
 */
export function createGatewayTransport(options: GatewayClientOptions): Transport {
  const interceptors: Interceptor[] = [];
  if (options.apiKey !== undefined && options.apiKey !== "") {
    interceptors.push(bearerAuthInterceptor(options.apiKey));
  }
  interceptors.push(...(options.interceptors ?? []));
  return createGrpcTransport({
    baseUrl: baseUrlOf(options.address, options.tls),
    interceptors,
    ...(options.nodeOptions !== undefined ? { nodeOptions: options.nodeOptions } : {}),
    ...(options.defaultTimeoutMs !== undefined
      ? { defaultTimeoutMs: options.defaultTimeoutMs }
      : {}),
  });
}

/**
 * Creates a client for `llmgateway.v1.GatewayService` over gRPC.
 *
 * Requests are plain objects (`{ model: "mock:echo", messages: [...] }`); replies are typed
 * messages. `chatStream` returns an async iterable of events. Every method takes Connect
 * {@link CallOptions} as its second argument (`timeoutMs`, `headers`, `signal`, `onHeader`, ...).
 *
 * @example
 * ```ts
 * const client = createGatewayClient({ address: "localhost:50051", apiKey: process.env.KEY });
 * const reply = await client.chat(
 *   { model: "mock:echo", messages: [{ role: Role.USER, content: [{ kind: { case: "text", value: "Hi" } }] }] },
 *   { timeoutMs: 30_000 },
 * );
 * console.log(reply.cost?.total, reply.cost?.currency);
 * ```
 *
 * @param options - Address, API key, TLS and transport settings.
 */
export function createGatewayClient(options: GatewayClientOptions): GatewayClient {
  return createClient(GatewayService, createGatewayTransport(options));
}

/**
 * Creates a client for `llmgateway.v1.UsageService` (the gateway's usage ledger) over gRPC, with
 * the same options as {@link createGatewayClient}. A key that is not an admin key sees only its own
 * calls. To share one connection with a {@link GatewayClient}, pass one
 * {@link createGatewayTransport} to Connect's `createClient` for each service instead.
 *
 * @example
 * ```ts
 * const usage = createUsageClient({ address: "localhost:50051", apiKey: process.env.KEY });
 * const summary = await usage.getUsageSummary(
 *   { filter: { startTime: timestampFromDate(dayStart), endTime: timestampFromDate(dayEnd) } },
 *   { timeoutMs: 30_000 },
 * );
 * console.log(summary.total?.requests, summary.total?.cost, summary.currency);
 * ```
 *
 * @param options - Address, API key, TLS and transport settings.
 */
export function createUsageClient(options: GatewayClientOptions): UsageClient {
  return createClient(UsageService, createGatewayTransport(options));
}

/**
 * Creates a client for `llmgateway.v1.BudgetService` (spend limits over time, docs/budgets.md)
 * over gRPC, with the same options as {@link createGatewayClient}. Only an admin key may create,
 * change or delete budgets (with authentication off, every caller is an admin); a key that is not
 * an admin key sees only the budgets of its own `key:` scope. To share one connection with a
 * {@link GatewayClient}, pass one {@link createGatewayTransport} to Connect's `createClient` for
 * each service instead.
 *
 * @example
 * ```ts
 * const budgets = createBudgetClient({ address: "localhost:50051", apiKey: process.env.ADMIN_KEY });
 * await budgets.createBudget(
 *   { budget: { id: "docs-site", scope: "project:docs-site", limitUsd: "10", period: BudgetPeriod.DAY } },
 *   { timeoutMs: 30_000 },
 * );
 * const budget = await budgets.getBudget({ id: "docs-site" }, { timeoutMs: 30_000 });
 * console.log(budget.spentUsd, budget.reservedUsd, budget.remainingUsd);
 * ```
 *
 * @param options - Address, API key, TLS and transport settings.
 */
export function createBudgetClient(options: GatewayClientOptions): BudgetClient {
  return createClient(BudgetService, createGatewayTransport(options));
}

/**
 * Returns the `google.rpc.ErrorInfo` detail of a failed call (its `reason`, `domain`
 * `"llmgateway.v1"`, and `metadata` such as `request_id`), or `undefined` when there is none.
 *
 * @param err - Anything caught from a client call.
 */
export function errorInfo(err: unknown): ErrorInfo | undefined {
  return ConnectError.from(err).findDetails(ErrorInfoSchema)[0];
}

/**
 * Returns the `google.rpc.BadRequest` detail of a failed call (one `fieldViolations` entry per bad
 * field, for example `generation.temperature`), or `undefined` when there is none.
 *
 * @param err - Anything caught from a client call.
 */
export function badRequest(err: unknown): BadRequest | undefined {
  return ConnectError.from(err).findDetails(BadRequestSchema)[0];
}

/**
 * Returns the `google.rpc.RetryInfo` detail of a failed call (`retryDelay`: how long to wait
 * before retrying), or `undefined` when there is none.
 *
 * @param err - Anything caught from a client call.
 */
export function retryInfo(err: unknown): RetryInfo | undefined {
  return ConnectError.from(err).findDetails(RetryInfoSchema)[0];
}
