package llmgateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"math/big"
	"os"
	"slices"
	"testing"
	"time"

	llmgatewayv1 "github.com/llm-gateway/llm-gateway/clients/go/gen/llmgateway/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The tests in this file call the live gateway named by LLM_GATEWAY_ADDR, as `make test-go` does.

const prompt = "Hello from Go, gateway!"

// liveAddr returns the address of the live gateway, failing the test when there is none.
func liveAddr(t *testing.T) string {
	t.Helper()
	addr := os.Getenv("LLM_GATEWAY_ADDR")
	if addr == "" {
		t.Fatal("LLM_GATEWAY_ADDR is not set: these tests need a live gateway; run them through `make test-go` from the repository root")
	}
	return addr
}

// dial connects to the live gateway with opts, closing the client when the test ends.
func dial(t *testing.T, opts ...Option) *Client {
	t.Helper()
	c, err := Dial(liveAddr(t), opts...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// liveClient connects to the live gateway with the key in LLM_GATEWAY_API_KEY.
func liveClient(t *testing.T) *Client {
	t.Helper()
	return dial(t, WithAPIKey(os.Getenv("LLM_GATEWAY_API_KEY")))
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func echoRequest(model string) *llmgatewayv1.ChatRequest {
	return &llmgatewayv1.ChatRequest{
		Model: model,
		Messages: []*llmgatewayv1.Message{
			{Role: llmgatewayv1.Role_ROLE_SYSTEM, Content: []*llmgatewayv1.Part{{Kind: &llmgatewayv1.Part_Text{Text: "Be brief."}}}},
			{Role: llmgatewayv1.Role_ROLE_USER, Content: []*llmgatewayv1.Part{{Kind: &llmgatewayv1.Part_Text{Text: prompt}}}},
		},
	}
}

func TestChatRequestID(t *testing.T) {
	c := liveClient(t)
	ctx := metadata.AppendToOutgoingContext(testContext(t), "x-request-id", "go-test-123")
	var trailer metadata.MD
	resp, err := c.Chat(ctx, echoRequest("mock:echo"), grpc.Trailer(&trailer))
	if err != nil {
		t.Fatalf("Chat: %v", err)
	}
	if resp.GetRequestId() != "go-test-123" {
		t.Errorf("request_id = %q, want go-test-123", resp.GetRequestId())
	}
	if got := trailer.Get("x-request-id"); !slices.Equal(got, []string{"go-test-123"}) {
		t.Errorf("x-request-id trailer = %q, want [go-test-123]", got)
	}
	if got := Text(resp.GetMessage()); got != prompt {
		t.Errorf("reply text = %q, want %q", got, prompt)
	}
}

func TestListModelsProviderFilter(t *testing.T) {
	c := liveClient(t)
	resp, err := c.ListModels(testContext(t), &llmgatewayv1.ListModelsRequest{Provider: "mock", PageSize: 1000})
	if err != nil {
		t.Fatalf("ListModels: %v", err)
	}
	if len(resp.GetModels()) < 3 {
		t.Errorf("got %d mock models, want at least 3", len(resp.GetModels()))
	}
	for _, m := range resp.GetModels() {
		if m.GetProvider() != "mock" {
			t.Errorf("model %q has provider %q, want mock", m.GetId(), m.GetProvider())
		}
	}
	if int(resp.GetTotalSize()) != len(resp.GetModels()) || resp.GetNextPageToken() != "" {
		t.Errorf("total_size = %d, next_page_token = %q for %d models on one page",
			resp.GetTotalSize(), resp.GetNextPageToken(), len(resp.GetModels()))
	}
}

func TestInvalidTemperature(t *testing.T) {
	c := liveClient(t)
	req := echoRequest("mock:echo")
	temp := 7.0
	req.Generation = &llmgatewayv1.GenerationConfig{Temperature: &temp}
	_, err := c.Chat(testContext(t), req)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Chat with temperature 7: err = %v, want code InvalidArgument", err)
	}
	info := ErrorInfo(err)
	if info.GetReason() != "INVALID_REQUEST" || info.GetDomain() != Domain {
		t.Errorf("ErrorInfo = %v, want reason INVALID_REQUEST, domain %s", info, Domain)
	}
	if info.GetMetadata()["request_id"] == "" {
		t.Errorf("ErrorInfo metadata = %v, want a request_id", info.GetMetadata())
	}
	violations := BadRequest(err).GetFieldViolations()
	if !slices.ContainsFunc(violations, func(v *errdetails.BadRequest_FieldViolation) bool { return v.GetField() == "generation.temperature" }) {
		t.Errorf("BadRequest violations = %v, want one for generation.temperature", violations)
	}
}

func TestUnknownModel(t *testing.T) {
	c := liveClient(t)
	_, err := c.Chat(testContext(t), echoRequest("nosuch:model"))
	if status.Code(err) != codes.NotFound {
		t.Fatalf("Chat with model nosuch:model: err = %v, want code NotFound", err)
	}
	if info := ErrorInfo(err); info.GetReason() != "MODEL_NOT_FOUND" || info.GetDomain() != Domain {
		t.Errorf("ErrorInfo = %v, want reason MODEL_NOT_FOUND, domain %s", info, Domain)
	}
}

func TestAuthentication(t *testing.T) {
	key := os.Getenv("LLM_GATEWAY_API_KEY")
	if key == "" {
		// No key given: the gateway under test is expected to be open.
		c := dial(t)
		if _, err := c.ListModels(testContext(t), &llmgatewayv1.ListModelsRequest{}); err != nil {
			t.Fatalf("ListModels without a key (LLM_GATEWAY_API_KEY is empty): %v", err)
		}
		return
	}
	for _, tc := range []struct {
		name, key, reason string
	}{
		{"no key", "", "MISSING_API_KEY"},
		{"wrong key", "wrong", "INVALID_API_KEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, WithAPIKey(tc.key))
			_, err := c.ListModels(testContext(t), &llmgatewayv1.ListModelsRequest{})
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("err = %v, want code Unauthenticated", err)
			}
			if info := ErrorInfo(err); info.GetReason() != tc.reason || info.GetDomain() != Domain {
				t.Errorf("ErrorInfo = %v, want reason %s, domain %s", info, tc.reason, Domain)
			}
		})
	}
	c := dial(t, WithAPIKey(key))
	if _, err := c.ListModels(testContext(t), &llmgatewayv1.ListModelsRequest{}); err != nil {
		t.Fatalf("ListModels with LLM_GATEWAY_API_KEY: %v", err)
	}
}

func TestUsage(t *testing.T) {
	c := liveClient(t)
	ctx := testContext(t)

	// The usage client shares the connection and its key: the key's summary of the last day.
	now := time.Now()
	resp, err := c.Usage().GetUsageSummary(ctx, &llmgatewayv1.GetUsageSummaryRequest{
		Filter: &llmgatewayv1.UsageFilter{
			StartTime: timestamppb.New(now.Add(-24 * time.Hour)),
			EndTime:   timestamppb.New(now.Add(time.Minute)),
		},
	})
	if err != nil {
		t.Fatalf("GetUsageSummary: %v (ErrorInfo %v)", err, ErrorInfo(err))
	}
	if resp.GetCurrency() != "USD" {
		t.Errorf("currency = %q, want USD", resp.GetCurrency())
	}
	if _, ok := new(big.Rat).SetString(resp.GetTotal().GetCost()); !ok {
		t.Errorf("total.cost = %q, want a decimal string", resp.GetTotal().GetCost())
	}

	// Its errors carry the same details as the gateway's: a summary needs a period.
	_, err = c.Usage().GetUsageSummary(ctx, &llmgatewayv1.GetUsageSummaryRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("GetUsageSummary without a period: err = %v, want code InvalidArgument", err)
	}
	if info := ErrorInfo(err); info.GetReason() != "INVALID_REQUEST" || info.GetDomain() != Domain {
		t.Errorf("ErrorInfo = %v, want reason INVALID_REQUEST, domain %s", info, Domain)
	}
	violations := BadRequest(err).GetFieldViolations()
	if !slices.ContainsFunc(violations, func(v *errdetails.BadRequest_FieldViolation) bool { return v.GetField() == "filter.start_time" }) {
		t.Errorf("BadRequest violations = %v, want one for filter.start_time", violations)
	}
}

// adminClient connects to the live gateway with a key that may create budgets: LLM_GATEWAY_ADMIN_KEY
// when it is set, else c itself (an admin key, or no key on a gateway with authentication off, where
// every caller is an admin). It reports whether the key came from LLM_GATEWAY_ADMIN_KEY.
func adminClient(t *testing.T, c *Client) (*Client, bool) {
	t.Helper()
	if key := os.Getenv("LLM_GATEWAY_ADMIN_KEY"); key != "" {
		return dial(t, WithAPIKey(key)), true
	}
	return c, false
}

func TestBudgets(t *testing.T) {
	c := liveClient(t)
	admin, _ := adminClient(t, c)
	ctx := testContext(t)

	// A budget of its own, for a project no other call names: 0.0001 USD a day, alert at 50 %.
	suffix := make([]byte, 6)
	if _, err := rand.Read(suffix); err != nil {
		t.Fatalf("rand.Read: %v", err)
	}
	id := "go-test-" + hex.EncodeToString(suffix)
	created, err := admin.Budgets().CreateBudget(ctx, &llmgatewayv1.CreateBudgetRequest{Budget: &llmgatewayv1.Budget{
		Id:         id,
		Scope:      "project:" + id,
		LimitUsd:   "0.0001",
		Period:     llmgatewayv1.BudgetPeriod_BUDGET_PERIOD_DAY,
		Thresholds: []string{"50"},
	}})
	if err != nil {
		t.Fatalf("CreateBudget: %v (ErrorInfo %v)", err, ErrorInfo(err))
	}
	deleted := false
	t.Cleanup(func() {
		if !deleted { // the test failed half-way: leave nothing behind
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			admin.Budgets().DeleteBudget(ctx, &llmgatewayv1.DeleteBudgetRequest{Id: id})
		}
	})
	if created.GetId() != id || created.GetSpentUsd() != "0" || created.GetRemainingUsd() != "0.0001" ||
		created.GetSource() != llmgatewayv1.BudgetSource_BUDGET_SOURCE_API {
		t.Errorf("CreateBudget = %v, want id %s, spent 0, remaining 0.0001, source API", created, id)
	}

	// One call in the budget's project: its worst case (0.0000775) fits, and it costs 0.0000675.
	maxTokens := int32(5)
	req := &llmgatewayv1.ChatRequest{
		Model: "mock:echo-large",
		Messages: []*llmgatewayv1.Message{
			{Role: llmgatewayv1.Role_ROLE_USER, Content: []*llmgatewayv1.Part{{Kind: &llmgatewayv1.Part_Text{Text: "Count this call"}}}},
		},
		Generation: &llmgatewayv1.GenerationConfig{MaxTokens: &maxTokens},
		Caller:     &llmgatewayv1.CallerMetadata{Project: id},
	}
	var trailer metadata.MD
	resp, err := c.Chat(ctx, req, grpc.Trailer(&trailer))
	if err != nil {
		t.Fatalf("Chat: %v (ErrorInfo %v)", err, ErrorInfo(err))
	}
	if resp.GetCost().GetTotal() != "0.0000675" {
		t.Errorf("cost.total = %q, want 0.0000675", resp.GetCost().GetTotal())
	}
	if got := trailer.Get("x-budget-remaining-usd"); !slices.Equal(got, []string{"0.0000325"}) {
		t.Errorf("x-budget-remaining-usd trailer = %q, want [0.0000325]", got)
	}
	if got := trailer.Get("x-budget-id"); !slices.Equal(got, []string{id}) {
		t.Errorf("x-budget-id trailer = %q, want [%s]", got, id)
	}

	// The settlement is written in the background just after the reply: wait for the hold to go.
	var budget *llmgatewayv1.Budget
	for deadline := time.Now().Add(3 * time.Second); ; {
		budget, err = admin.Budgets().GetBudget(ctx, &llmgatewayv1.GetBudgetRequest{Id: id})
		if err != nil {
			t.Fatalf("GetBudget: %v (ErrorInfo %v)", err, ErrorInfo(err))
		}
		if budget.GetReservedUsd() == "0" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if budget.GetReservedUsd() != "0" || budget.GetSpentUsd() != "0.0000675" {
		t.Fatalf("GetBudget after the call: spent %q, reserved %q; want 0.0000675 and 0 (within 3 s)",
			budget.GetSpentUsd(), budget.GetReservedUsd())
	}

	// The same call again does not fit what is left: refused before anything is sent upstream.
	_, err = c.Chat(ctx, req)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second Chat: err = %v, want code ResourceExhausted", err)
	}
	info := ErrorInfo(err)
	if info.GetReason() != "BUDGET_EXHAUSTED" || info.GetDomain() != Domain || info.GetMetadata()["budget_id"] != id {
		t.Errorf("ErrorInfo = %v, want reason BUDGET_EXHAUSTED, domain %s, budget_id %s", info, Domain, id)
	}

	if _, err := admin.Budgets().DeleteBudget(ctx, &llmgatewayv1.DeleteBudgetRequest{Id: id}); err != nil {
		t.Fatalf("DeleteBudget: %v (ErrorInfo %v)", err, ErrorInfo(err))
	}
	deleted = true
	_, err = admin.Budgets().GetBudget(ctx, &llmgatewayv1.GetBudgetRequest{Id: id})
	if status.Code(err) != codes.NotFound || ErrorInfo(err).GetReason() != "BUDGET_NOT_FOUND" {
		t.Errorf("GetBudget after DeleteBudget: err = %v, want NotFound / BUDGET_NOT_FOUND", err)
	}
}
