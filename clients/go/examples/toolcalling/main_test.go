package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	llmgatewayv1 "github.com/llm-gateway/llm-gateway/clients/go/gen/llmgateway/v1"
	"github.com/llm-gateway/llm-gateway/clients/go/llmgateway"
	"google.golang.org/protobuf/proto"
)

// The conversation against the live gateway named by LLM_GATEWAY_ADDR (mock provider), as
// `make test-go` runs it.
func TestRun(t *testing.T) {
	addr := os.Getenv("LLM_GATEWAY_ADDR")
	if addr == "" {
		t.Fatal("LLM_GATEWAY_ADDR is not set: these tests need a live gateway; run them through `make test-go` from the repository root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var out bytes.Buffer
	res, err := run(ctx, Config{Addr: addr, APIKey: os.Getenv("LLM_GATEWAY_API_KEY"), Model: "mock:echo"}, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatalf("run: %v (ErrorInfo %v)", err, llmgateway.ErrorInfo(err))
	}

	// The first turn's one tool call; every subtest below depends on it.
	first := res.First
	if got := first.GetFinishReason(); got != llmgatewayv1.FinishReason_FINISH_REASON_TOOL_CALLS {
		t.Errorf("turn 1 finish_reason = %v, want FINISH_REASON_TOOL_CALLS", got)
	}
	calls := first.GetMessage().GetToolCalls()
	if len(calls) != 1 {
		t.Fatalf("turn 1 has %d tool calls, want 1: %v", len(calls), calls)
	}
	call := calls[0]

	t.Run("ToolCall", func(t *testing.T) {
		if call.GetName() != "get_weather" || call.GetId() == "" {
			t.Errorf("tool call = %v, want name get_weather and an id", call)
		}
		var args map[string]any
		if err := json.Unmarshal([]byte(call.GetArguments()), &args); err != nil || args == nil {
			t.Fatalf("arguments %q are not a JSON object (%v)", call.GetArguments(), err)
		}
		// The mock fills a string argument with the name the question ends on.
		if city, ok := args["city"].(string); !ok || city != "Paris" {
			t.Errorf("arguments %q: city is not \"Paris\"", call.GetArguments())
		}
	})

	t.Run("Followup", func(t *testing.T) {
		msgs := res.Followup.GetMessages()
		if len(msgs) < 2 {
			t.Fatalf("follow-up has %d messages, want the tool call and its result at the end", len(msgs))
		}
		sentCall, sentResult := msgs[len(msgs)-2], msgs[len(msgs)-1]
		if sentCall.GetRole() != llmgatewayv1.Role_ROLE_ASSISTANT || len(sentCall.GetToolCalls()) != 1 || !proto.Equal(sentCall.GetToolCalls()[0], call) {
			t.Errorf("second-to-last message = %v, want the assistant's tool call %v", sentCall, call)
		}
		if sentResult.GetRole() != llmgatewayv1.Role_ROLE_TOOL || sentResult.GetToolCallId() != call.GetId() {
			t.Errorf("last message = %v, want a tool message answering %q", sentResult, call.GetId())
		}
		var args struct{ City string }
		var got Weather
		if err := json.Unmarshal([]byte(call.GetArguments()), &args); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(llmgateway.Text(sentResult)), &got); err != nil || got != getWeather(args.City) {
			t.Errorf("tool result %q, want the JSON of %+v (%v)", llmgateway.Text(sentResult), getWeather(args.City), err)
		}
		if res.Followup.GetToolChoice() != nil {
			t.Errorf("follow-up tool_choice = %v, want unset", res.Followup.GetToolChoice())
		}
	})

	t.Run("FinalAnswer", func(t *testing.T) {
		final := res.Final
		toolOutput := llmgateway.Text(res.Followup.GetMessages()[len(res.Followup.GetMessages())-1])
		if got := final.GetFinishReason(); got != llmgatewayv1.FinishReason_FINISH_REASON_STOP {
			t.Errorf("turn 2 finish_reason = %v, want FINISH_REASON_STOP", got)
		}
		// The mock answers a tool result with "Tool result: <its text>".
		answer := llmgateway.Text(final.GetMessage())
		if toolOutput == "" || !strings.Contains(answer, toolOutput) {
			t.Errorf("answer %q does not contain the tool result %q", answer, toolOutput)
		}
		if len(final.GetMessage().GetToolCalls()) != 0 {
			t.Errorf("turn 2 has tool calls %v, want none", final.GetMessage().GetToolCalls())
		}
		// The second turn resends the whole conversation, so its prompt is larger.
		if p1, p2 := first.GetUsage().GetPromptTokens(), final.GetUsage().GetPromptTokens(); p1 <= 0 || p2 <= p1 {
			t.Errorf("prompt tokens: turn 1 %d, turn 2 %d, want 0 < turn 1 < turn 2", p1, p2)
		}
		cost := final.GetCost()
		total, ok := new(big.Rat).SetString(cost.GetTotal())
		if cost.GetStatus() != llmgatewayv1.PricingStatus_PRICING_STATUS_PRICED || !ok || total.Sign() <= 0 {
			t.Errorf("turn 2 cost = %v, want priced with a total > 0", cost)
		}
		if !strings.Contains(out.String(), answer) {
			t.Errorf("the answer %q was not printed", answer)
		}
	})

	t.Run("StreamedDeltas", func(t *testing.T) {
		evs := res.StreamEvents
		if len(evs) < 3 || evs[0].GetStart() == nil || evs[len(evs)-1].GetFinish() == nil {
			t.Fatalf("events = %v, want start, deltas, finish", evs)
		}
		if got := evs[len(evs)-1].GetFinish().GetFinishReason(); got != llmgatewayv1.FinishReason_FINISH_REASON_TOOL_CALLS {
			t.Errorf("finish.finish_reason = %v, want FINISH_REASON_TOOL_CALLS", got)
		}
		var deltas []*llmgatewayv1.ToolCallDelta
		var args strings.Builder
		for _, ev := range evs {
			if d := ev.GetToolCallDelta(); d != nil {
				deltas = append(deltas, d)
				args.WriteString(d.GetArguments())
			}
		}
		if len(deltas) == 0 {
			t.Fatal("no tool-call deltas")
		}
		for i, d := range deltas {
			if d.GetIndex() != 0 {
				t.Errorf("delta %d index = %d, want 0 (one call)", i, d.GetIndex())
			}
		}
		if deltas[0].GetId() == "" || deltas[0].GetName() != call.GetName() {
			t.Errorf("first delta = %v, want an id and name %q", deltas[0], call.GetName())
		}
		if args.String() != call.GetArguments() {
			t.Errorf("streamed arguments %q, want the unary reply's %q", args.String(), call.GetArguments())
		}
		// The example's assembly agrees.
		want := &llmgatewayv1.ToolCall{Id: deltas[0].GetId(), Name: call.GetName(), Arguments: call.GetArguments()}
		if len(res.StreamedCalls) != 1 || !proto.Equal(res.StreamedCalls[0], want) {
			t.Errorf("assembled calls = %v, want [%v]", res.StreamedCalls, want)
		}
	})
}
