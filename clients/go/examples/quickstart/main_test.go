package main

import (
	"bytes"
	"context"
	"math/big"
	"os"
	"regexp"
	"slices"
	"testing"
	"time"

	llmgatewayv1 "github.com/llm-gateway/llm-gateway/clients/go/gen/llmgateway/v1"
	"github.com/llm-gateway/llm-gateway/clients/go/llmgateway"
)

const prompt = "Hello from Go, gateway!"

// liveConfig returns the config for the live gateway named by LLM_GATEWAY_ADDR, failing the test
// when there is none.
func liveConfig(t *testing.T) Config {
	t.Helper()
	addr := os.Getenv("LLM_GATEWAY_ADDR")
	if addr == "" {
		t.Fatal("LLM_GATEWAY_ADDR is not set: these tests need a live gateway; run them through `make test-go` from the repository root")
	}
	return Config{
		Addr:          addr,
		APIKey:        os.Getenv("LLM_GATEWAY_API_KEY"),
		Model:         "mock:echo",
		CompareModels: []string{"mock:echo-large", "mock:echo"},
		PageSize:      1,
		Prompt:        prompt,
	}
}

var plainDecimal = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)

// decimal parses a non-negative amount in plain decimal notation exactly, failing the test when s
// is not one.
func decimal(t *testing.T, what, s string) *big.Rat {
	t.Helper()
	r, ok := new(big.Rat).SetString(s)
	if !ok || !plainDecimal.MatchString(s) {
		t.Fatalf("%s = %q, want a decimal string in plain notation", what, s)
	}
	return r
}

// positive checks that s is a decimal amount greater than zero.
func positive(t *testing.T, what, s string) {
	t.Helper()
	if decimal(t, what, s).Sign() <= 0 {
		t.Errorf("%s = %q, want > 0", what, s)
	}
}

func TestRun(t *testing.T) {
	cfg := liveConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var out bytes.Buffer
	res, err := run(ctx, cfg, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatalf("run: %v (ErrorInfo %v)", err, llmgateway.ErrorInfo(err))
	}

	t.Run("Chat", func(t *testing.T) {
		c := res.Chat
		if got := c.GetMessage().GetRole(); got != llmgatewayv1.Role_ROLE_ASSISTANT {
			t.Errorf("message.role = %v, want ROLE_ASSISTANT", got)
		}
		if got := llmgateway.Text(c.GetMessage()); got != prompt {
			t.Errorf("reply text = %q, want %q", got, prompt)
		}
		if got := c.GetFinishReason(); got != llmgatewayv1.FinishReason_FINISH_REASON_STOP {
			t.Errorf("finish_reason = %v, want FINISH_REASON_STOP", got)
		}
		u := c.GetUsage()
		if u.GetPromptTokens() <= 0 || u.GetCompletionTokens() <= 0 {
			t.Errorf("usage = %v, want prompt_tokens and completion_tokens > 0", u)
		}
		if u.GetTotalTokens() != u.GetPromptTokens()+u.GetCompletionTokens() {
			t.Errorf("usage.total_tokens = %d, want %d + %d", u.GetTotalTokens(), u.GetPromptTokens(), u.GetCompletionTokens())
		}
		cost := c.GetCost()
		if cost.GetStatus() != llmgatewayv1.PricingStatus_PRICING_STATUS_PRICED {
			t.Errorf("cost.status = %v, want PRICING_STATUS_PRICED", cost.GetStatus())
		}
		if cost.GetCurrency() != "USD" {
			t.Errorf("cost.currency = %q, want USD", cost.GetCurrency())
		}
		positive(t, "cost.total", cost.GetTotal())
		if d := c.GetLatency().GetTotal(); d == nil || d.AsDuration() <= 0 {
			t.Errorf("latency.total = %v, want set and > 0", d)
		}
		if c.GetModel() != "mock:echo" || c.GetProvider() != "mock" {
			t.Errorf("model, provider = %q, %q, want mock:echo, mock", c.GetModel(), c.GetProvider())
		}
		if c.GetRequestId() == "" {
			t.Error("request_id is empty")
		}
		if got := res.ChatTrailer.Get("x-request-id"); !slices.Equal(got, []string{c.GetRequestId()}) {
			t.Errorf("x-request-id trailer = %q, want [%q]", got, c.GetRequestId())
		}
	})

	t.Run("ChatStream", func(t *testing.T) {
		evs := res.StreamEvents
		if len(evs) < 4 {
			t.Fatalf("got %d events, want start, at least 2 text deltas and finish: %v", len(evs), evs)
		}
		start := evs[0].GetStart()
		if start == nil {
			t.Fatalf("first event = %v, want start", evs[0])
		}
		if start.GetModel() != "mock:echo" || start.GetProvider() != "mock" || start.GetRequestId() == "" {
			t.Errorf("start = %v, want model mock:echo, provider mock and a request_id", start)
		}
		finish := evs[len(evs)-1].GetFinish()
		if finish == nil {
			t.Fatalf("last event = %v, want finish", evs[len(evs)-1])
		}
		deltas := 0
		for i, ev := range evs[1 : len(evs)-1] {
			switch {
			case ev.GetTextDelta() != nil:
				deltas++
			case ev.GetStart() != nil, ev.GetFinish() != nil:
				t.Errorf("event %d = %v, want only deltas between start and finish", i+1, ev)
			}
		}
		if deltas < 2 {
			t.Errorf("got %d text deltas, want at least 2", deltas)
		}
		if res.StreamText != prompt {
			t.Errorf("streamed text = %q, want %q", res.StreamText, prompt)
		}
		if finish.GetFinishReason() != llmgatewayv1.FinishReason_FINISH_REASON_STOP {
			t.Errorf("finish.finish_reason = %v, want FINISH_REASON_STOP", finish.GetFinishReason())
		}
		if finish.GetUsage().GetCompletionTokens() <= 0 {
			t.Errorf("finish.usage = %v, want completion_tokens > 0", finish.GetUsage())
		}
		positive(t, "finish.cost.total", finish.GetCost().GetTotal())
	})

	t.Run("EstimateCost", func(t *testing.T) {
		ests := res.Estimate.GetEstimates()
		if len(ests) != 2 {
			t.Fatalf("got %d estimates, want 2: %v", len(ests), ests)
		}
		if ests[0].GetModel() != "mock:echo" || ests[1].GetModel() != "mock:echo-large" {
			t.Errorf("estimate models = %q, %q, want mock:echo, mock:echo-large (cheapest first)", ests[0].GetModel(), ests[1].GetModel())
		}
		for _, e := range ests {
			if e.GetPromptTokens() <= 0 {
				t.Errorf("%s: prompt_tokens = %d, want > 0", e.GetModel(), e.GetPromptTokens())
			}
			expected := decimal(t, e.GetModel()+" expected_cost.total", e.GetExpectedCost().GetTotal())
			worst := decimal(t, e.GetModel()+" worst_case_cost.total", e.GetWorstCaseCost().GetTotal())
			if worst.Cmp(expected) < 0 {
				t.Errorf("%s: worst case %s < expected %s", e.GetModel(), e.GetWorstCaseCost().GetTotal(), e.GetExpectedCost().GetTotal())
			}
		}
		first := decimal(t, "estimates[0].expected_cost.total", ests[0].GetExpectedCost().GetTotal())
		second := decimal(t, "estimates[1].expected_cost.total", ests[1].GetExpectedCost().GetTotal())
		if first.Cmp(second) > 0 {
			t.Errorf("estimates not sorted by expected cost: %s before %s", ests[0].GetExpectedCost().GetTotal(), ests[1].GetExpectedCost().GetTotal())
		}
	})

	t.Run("ListModels", func(t *testing.T) {
		seen := map[string]bool{}
		for _, m := range res.Models {
			if seen[m.GetId()] {
				t.Errorf("model %q listed twice", m.GetId())
			}
			seen[m.GetId()] = true
		}
		for _, id := range []string{"mock:echo", "mock:echo-large", "mock:echo-free"} {
			if !seen[id] {
				t.Errorf("model %q not listed; got %d models", id, len(res.Models))
			}
		}
		if int(res.ModelsTotalSize) != len(res.Models) {
			t.Errorf("total_size = %d, but %d models were listed", res.ModelsTotalSize, len(res.Models))
		}
		if res.ModelPages < len(res.Models) {
			t.Errorf("read %d pages for %d models with page_size 1", res.ModelPages, len(res.Models))
		}
	})
}
