/**
 * Tests of the client helpers that need no gateway.
 *
 * @module
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import {
  BadRequestSchema,
  Code,
  ConnectError,
  ErrorInfoSchema,
  RetryInfoSchema,
  badRequest,
  createGatewayClient,
  errorInfo,
  retryInfo,
} from "../index.js";

describe("error detail helpers", () => {
  const err = new ConnectError("temperature out of range", Code.InvalidArgument, undefined, [
    {
      desc: ErrorInfoSchema,
      value: { reason: "INVALID_REQUEST", domain: "llmgateway.v1", metadata: { request_id: "r1" } },
    },
    {
      desc: BadRequestSchema,
      value: { fieldViolations: [{ field: "generation.temperature", description: "0 to 2" }] },
    },
    { desc: RetryInfoSchema, value: { retryDelay: durationFromMs(1500) } },
  ]);

  it("return the first detail of each type", () => {
    assert.equal(errorInfo(err)?.reason, "INVALID_REQUEST");
    assert.equal(errorInfo(err)?.metadata["request_id"], "r1");
    assert.equal(badRequest(err)?.fieldViolations[0]?.field, "generation.temperature");
    assert.equal(retryInfo(err)?.retryDelay?.seconds, 1n);
    assert.equal(retryInfo(err)?.retryDelay?.nanos, 500_000_000);
  });

  it("return undefined when the error has no such detail", () => {
    const bare = new ConnectError("no details", Code.Internal);
    assert.equal(errorInfo(bare), undefined);
    assert.equal(badRequest(bare), undefined);
    assert.equal(retryInfo(bare), undefined);
    assert.equal(errorInfo(new Error("not a ConnectError")), undefined);
    assert.equal(errorInfo("a string"), undefined);
  });
});

describe("createGatewayClient", () => {
  it("accepts host:port and full URLs", () => {
    for (const address of ["localhost:50051", "http://localhost:50051", "https://gw.example:443"]) {
      assert.equal(typeof createGatewayClient({ address }).chat, "function", address);
    }
    assert.equal(typeof createGatewayClient({ address: "gw:443", tls: true }).chatStream, "function");
  });

  it("rejects an empty address and a TLS setting that contradicts the URL", () => {
    assert.throws(() => createGatewayClient({ address: " " }), /address must not be empty/);
    assert.throws(
      () => createGatewayClient({ address: "http://localhost:50051", tls: true }),
      /conflicts/,
    );
    assert.throws(
      () => createGatewayClient({ address: "https://localhost:50051", tls: false }),
      /conflicts/,
    );
  });
});
