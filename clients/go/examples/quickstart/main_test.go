package main

import (
	"bytes"
	"context"
	"fmt"
	"math/big"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	llmgatewayv1 "github.com/llm-gateway/llm-gateway/clients/go/gen/llmgateway/v1"
	"github.com/llm-gateway/llm-gateway/clients/go/llmgateway"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
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

// todaysUsage reads the day's usage summary of cfg's key, with a request built here rather than by
// todaysUsageRequest. It returns the request too.
func todaysUsage(ctx context.Context, t *testing.T, cfg Config) (*llmgatewayv1.GetUsageSummaryRequest, *llmgatewayv1.GetUsageSummaryResponse) {
	t.Helper()
	client, err := llmgateway.Dial(cfg.Addr, llmgateway.WithAPIKey(cfg.APIKey))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer client.Close()
	start := time.Now().UTC().Truncate(24 * time.Hour)
	req := &llmgatewayv1.GetUsageSummaryRequest{
		Filter: &llmgatewayv1.UsageFilter{
			StartTime: timestamppb.New(start),
			EndTime:   timestamppb.New(start.Add(24 * time.Hour)),
		},
		Granularity: llmgatewayv1.Granularity_GRANULARITY_DAY,
	}
	resp, err := client.Usage().GetUsageSummary(ctx, req)
	if err != nil {
		t.Fatalf("GetUsageSummary: %v (ErrorInfo %v)", err, llmgateway.ErrorInfo(err))
	}
	return req, resp
}

func TestRun(t *testing.T) {
	cfg := liveConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// What the ledger holds for this key today before the quickstart runs (it only grows).
	today, baselineResp := todaysUsage(ctx, t, cfg)
	baseline := baselineResp.GetTotal()

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

	t.Run("GetUsageSummary", func(t *testing.T) {
		if !proto.Equal(res.UsageRequest.GetFilter(), today.GetFilter()) {
			t.Errorf("filter = %v, want today 00:00 UTC to tomorrow 00:00 UTC: %v", res.UsageRequest.GetFilter(), today.GetFilter())
		}
		if g := res.UsageRequest.GetGranularity(); g != llmgatewayv1.Granularity_GRANULARITY_DAY {
			t.Errorf("granularity = %v, want GRANULARITY_DAY", g)
		}

		// The summary counts the quickstart's two ledgered calls, Chat and ChatStream, on top of
		// the baseline: their tokens, and their costs as exact decimals.
		s := res.Usage
		total := s.GetTotal()
		var finish *llmgatewayv1.StreamFinish
		if n := len(res.StreamEvents); n > 0 {
			finish = res.StreamEvents[n-1].GetFinish()
		}
		if total.GetRequests() < baseline.GetRequests()+2 || total.GetRequests() < res.UsageBefore.GetTotal().GetRequests()+2 {
			t.Errorf("requests = %d, want >= 2 more than the %d before (the quickstart saw %d)",
				total.GetRequests(), baseline.GetRequests(), res.UsageBefore.GetTotal().GetRequests())
		}
		if want := baseline.GetPromptTokens() + int64(res.Chat.GetUsage().GetPromptTokens()+finish.GetUsage().GetPromptTokens()); total.GetPromptTokens() < want {
			t.Errorf("prompt_tokens = %d, want >= %d", total.GetPromptTokens(), want)
		}
		if want := baseline.GetCompletionTokens() + int64(res.Chat.GetUsage().GetCompletionTokens()+finish.GetUsage().GetCompletionTokens()); total.GetCompletionTokens() < want {
			t.Errorf("completion_tokens = %d, want >= %d", total.GetCompletionTokens(), want)
		}
		callsCost := new(big.Rat).Add(
			decimal(t, "chat cost.total", res.Chat.GetCost().GetTotal()),
			decimal(t, "finish cost.total", finish.GetCost().GetTotal()))
		if callsCost.Sign() <= 0 {
			t.Errorf("the calls cost %s, want > 0", callsCost.FloatString(10))
		}
		want := new(big.Rat).Add(decimal(t, "baseline cost", baseline.GetCost()), callsCost)
		if decimal(t, "total.cost", total.GetCost()).Cmp(want) < 0 {
			t.Errorf("total.cost = %s, want >= %s (baseline %s + the calls' %s)",
				total.GetCost(), want.FloatString(10), baseline.GetCost(), callsCost.FloatString(10))
		}
		if s.GetCurrency() != "USD" || s.GetCurrency() != res.Chat.GetCost().GetCurrency() {
			t.Errorf("currency = %q, want USD as the calls'", s.GetCurrency())
		}

		// One daily bucket, starting at the period's start, holding the whole period.
		if b := s.GetBuckets(); len(b) != 1 || !proto.Equal(b[0].GetStartTime(), today.GetFilter().GetStartTime()) ||
			b[0].GetStats().GetRequests() != total.GetRequests() || b[0].GetStats().GetCost() != total.GetCost() {
			t.Errorf("buckets = %v, want one starting at %v with the total", b, today.GetFilter().GetStartTime().AsTime())
		}

		// mock:echo served both calls.
		var echo *llmgatewayv1.ModelUsage
		for _, m := range s.GetTopModelsByCost() {
			if m.GetModel() == "mock:echo" {
				echo = m
			}
		}
		if echo == nil {
			t.Fatalf("top_models_by_cost = %v, want mock:echo among them", s.GetTopModelsByCost())
		}
		if echo.GetRequests() < 2 || decimal(t, "mock:echo cost", echo.GetCost()).Cmp(callsCost) < 0 {
			t.Errorf("mock:echo = %v, want >= 2 calls costing >= %s", echo, callsCost.FloatString(10))
		}

		// Printed as received: counts, tokens, and the cost string with its currency.
		printed := out.String()
		for _, line := range []string{
			fmt.Sprintf("calls:    %d (%d failed)\n", total.GetRequests(), total.GetErrors()),
			fmt.Sprintf("tokens:   %d prompt + %d completion\n", total.GetPromptTokens(), total.GetCompletionTokens()),
			fmt.Sprintf("cost:     %s USD\n", total.GetCost()),
			fmt.Sprintf(" %s USD (%d calls)\n", echo.GetCost(), echo.GetRequests()),
		} {
			if !strings.Contains(printed, line) {
				t.Errorf("output lacks %q", line)
			}
		}
		if strings.Contains(printed, "has not recorded") {
			t.Error("the quickstart gave up waiting for the ledger")
		}
	})
}
