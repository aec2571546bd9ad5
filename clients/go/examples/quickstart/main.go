// Command quickstart calls every method of an LLM Gateway once and prints what came back: the
// reply, the streamed deltas, usage, cost, latency, a cost estimate and the model list. Then it
// reads the day's usage summary from the gateway's ledger.
//
// From the repository root: go -C clients/go run ./examples/quickstart
//
// Environment:
//
//	LLM_GATEWAY_ADDR            gateway address (default localhost:50051)
//	LLM_GATEWAY_API_KEY         API key, sent as "authorization: Bearer <key>" (optional)
//	LLM_GATEWAY_MODEL           model to chat with (default mock:echo)
//	LLM_GATEWAY_COMPARE_MODELS  comma-separated models to compare in EstimateCost (optional)
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"time"

	llmgatewayv1 "github.com/llm-gateway/llm-gateway/clients/go/gen/llmgateway/v1"
	"github.com/llm-gateway/llm-gateway/clients/go/llmgateway"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ledgeredCalls is how many of run's calls the usage ledger records: Chat and ChatStream (not
// EstimateCost or ListModels).
const ledgeredCalls = 2

// Config says which gateway to call and how.
type Config struct {
	// Addr is the gateway's address, for example "localhost:50051".
	Addr string
	// APIKey is sent as a bearer token when non-empty.
	APIKey string
	// Model is the model to chat with, for example "mock:echo".
	Model string
	// CompareModels are the candidate models for EstimateCost; empty means Model alone.
	CompareModels []string
	// PageSize is the ListModels page size; 0 means the gateway's default.
	PageSize int32
	// Prompt is the user message.
	Prompt string
}

// Result holds everything the gateway returned, for callers that inspect it.
type Result struct {
	// Chat is the reply of the Chat call.
	Chat *llmgatewayv1.ChatResponse
	// ChatTrailer is the trailing metadata of the Chat call (it carries x-request-id).
	ChatTrailer metadata.MD
	// StreamEvents are the ChatStream events in the order they arrived.
	StreamEvents []*llmgatewayv1.ChatStreamResponse
	// StreamText is the concatenation of the stream's text deltas.
	StreamText string
	// Estimate is the reply of the EstimateCost call.
	Estimate *llmgatewayv1.EstimateCostResponse
	// Models are the models of every ListModels page, in order.
	Models []*llmgatewayv1.Model
	// ModelPages is how many ListModels pages were read.
	ModelPages int
	// ModelsTotalSize is the total_size the last ListModels page reported.
	ModelsTotalSize int32
	// UsageRequest asks GetUsageSummary for today (00:00 UTC to 00:00 UTC tomorrow) in one bucket.
	UsageRequest *llmgatewayv1.GetUsageSummaryRequest
	// UsageBefore is the day's summary before the calls above, Usage the one after them.
	UsageBefore, Usage *llmgatewayv1.GetUsageSummaryResponse
}

func configFromEnv() Config {
	cfg := Config{
		Addr:   getenv("LLM_GATEWAY_ADDR", "localhost:50051"),
		APIKey: os.Getenv("LLM_GATEWAY_API_KEY"),
		Model:  getenv("LLM_GATEWAY_MODEL", "mock:echo"),
		Prompt: "Hello from Go, gateway!",
	}
	for _, m := range strings.Split(os.Getenv("LLM_GATEWAY_COMPARE_MODELS"), ",") {
		if m = strings.TrimSpace(m); m != "" {
			cfg.CompareModels = append(cfg.CompareModels, m)
		}
	}
	return cfg
}

func getenv(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// chatRequest builds the conversation every call of run uses.
func chatRequest(cfg Config) *llmgatewayv1.ChatRequest {
	return &llmgatewayv1.ChatRequest{
		Model: cfg.Model,
		Messages: []*llmgatewayv1.Message{
			textMessage(llmgatewayv1.Role_ROLE_SYSTEM, "Be brief."),
			textMessage(llmgatewayv1.Role_ROLE_USER, cfg.Prompt),
		},
	}
}

func textMessage(role llmgatewayv1.Role, text string) *llmgatewayv1.Message {
	return &llmgatewayv1.Message{
		Role:    role,
		Content: []*llmgatewayv1.Part{{Kind: &llmgatewayv1.Part_Text{Text: text}}},
	}
}

// todaysUsageRequest asks for the usage of the UTC day of now, in one daily bucket.
func todaysUsageRequest(now time.Time) *llmgatewayv1.GetUsageSummaryRequest {
	y, m, d := now.UTC().Date()
	start := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	return &llmgatewayv1.GetUsageSummaryRequest{
		Filter: &llmgatewayv1.UsageFilter{
			StartTime: timestamppb.New(start),
			EndTime:   timestamppb.New(start.AddDate(0, 0, 1)),
		},
		Granularity: llmgatewayv1.Granularity_GRANULARITY_DAY,
		TopModels:   3,
	}
}

// run calls Chat, ChatStream, EstimateCost and ListModels in that order, writes a readable
// account of each to out, then reads and writes the day's usage summary, and returns what the
// gateway sent.
func run(ctx context.Context, cfg Config, out io.Writer) (*Result, error) {
	client, err := llmgateway.Dial(cfg.Addr, llmgateway.WithAPIKey(cfg.APIKey))
	if err != nil {
		return nil, err
	}
	defer client.Close()

	res := &Result{}
	req := chatRequest(cfg)

	// The day's usage before the calls, to tell below when the ledger has recorded them.
	res.UsageRequest = todaysUsageRequest(time.Now())
	res.UsageBefore, err = client.Usage().GetUsageSummary(ctx, res.UsageRequest)
	if err != nil {
		return res, fmt.Errorf("GetUsageSummary: %w", err)
	}

	// Chat: the whole reply at once.
	res.Chat, err = client.Chat(ctx, req, grpc.Trailer(&res.ChatTrailer))
	if err != nil {
		return res, fmt.Errorf("Chat: %w", err)
	}
	c := res.Chat
	fmt.Fprintf(out, "== Chat (%s via %s, request %s)\n", c.GetModel(), c.GetProvider(), c.GetRequestId())
	fmt.Fprintf(out, "reply:    %s\n", llmgateway.Text(c.GetMessage()))
	fmt.Fprintf(out, "finish:   %s\n", c.GetFinishReason())
	printUsage(out, c.GetUsage())
	printCost(out, c.GetCost())
	printLatency(out, c.GetLatency())

	// ChatStream: deltas as they are generated, then usage, cost and latency.
	stream, err := client.ChatStream(ctx, &llmgatewayv1.ChatStreamRequest{Request: req})
	if err != nil {
		return res, fmt.Errorf("ChatStream: %w", err)
	}
	var text strings.Builder
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("ChatStream: %w", err)
		}
		res.StreamEvents = append(res.StreamEvents, ev)
		switch e := ev.GetEvent().(type) {
		case *llmgatewayv1.ChatStreamResponse_Start:
			fmt.Fprintf(out, "\n== ChatStream (%s via %s, request %s)\nreply:    ",
				e.Start.GetModel(), e.Start.GetProvider(), e.Start.GetRequestId())
		case *llmgatewayv1.ChatStreamResponse_TextDelta:
			text.WriteString(e.TextDelta.GetText())
			fmt.Fprint(out, e.TextDelta.GetText())
		case *llmgatewayv1.ChatStreamResponse_ToolCallDelta:
			fmt.Fprintf(out, "[tool call %d %s %s]", e.ToolCallDelta.GetIndex(), e.ToolCallDelta.GetName(), e.ToolCallDelta.GetArguments())
		case *llmgatewayv1.ChatStreamResponse_Finish:
			fmt.Fprintf(out, "\nfinish:   %s\n", e.Finish.GetFinishReason())
			printUsage(out, e.Finish.GetUsage())
			printCost(out, e.Finish.GetCost())
			printLatency(out, e.Finish.GetLatency())
		}
	}
	res.StreamText = text.String()

	// EstimateCost: what the same call would cost, without making it.
	res.Estimate, err = client.EstimateCost(ctx, &llmgatewayv1.EstimateCostRequest{
		Request:         req,
		CandidateModels: cfg.CompareModels,
	})
	if err != nil {
		return res, fmt.Errorf("EstimateCost: %w", err)
	}
	fmt.Fprintf(out, "\n== EstimateCost (cheapest first)\n")
	for _, e := range res.Estimate.GetEstimates() {
		fmt.Fprintf(out, "%-20s %d prompt tokens; expected %s (%d output tokens), worst case %s (%d output tokens)\n",
			e.GetModel(), e.GetPromptTokens(),
			money(e.GetExpectedCost()), e.GetExpectedOutputTokens(),
			money(e.GetWorstCaseCost()), e.GetWorstCaseOutputTokens())
	}

	// ListModels: every page, following next_page_token.
	fmt.Fprintf(out, "\n== ListModels\n")
	listReq := &llmgatewayv1.ListModelsRequest{PageSize: cfg.PageSize}
	for {
		page, err := client.ListModels(ctx, listReq)
		if err != nil {
			return res, fmt.Errorf("ListModels: %w", err)
		}
		res.ModelPages++
		res.ModelsTotalSize = page.GetTotalSize()
		res.Models = append(res.Models, page.GetModels()...)
		for _, m := range page.GetModels() {
			p := m.GetPricing()
			fmt.Fprintf(out, "%-20s %-10s input %s, output %s per million tokens\n",
				m.GetId(), p.GetStatus(), orDash(p.GetInputPerMillion()), orDash(p.GetOutputPerMillion()))
		}
		next := page.GetNextPageToken()
		if next == "" {
			break
		}
		if next == listReq.GetPageToken() {
			return res, fmt.Errorf("ListModels: page token %q repeats", next)
		}
		listReq.PageToken = next
	}
	fmt.Fprintf(out, "%d models in %d pages\n", len(res.Models), res.ModelPages)

	// GetUsageSummary: today's calls as the ledger has them; a key that is not an admin key sees
	// only its own. The ledger writes in the background (every 100 ms by default), so a summary can
	// lag the calls just made: wait, up to 2 s, until it counts this run's too.
	want := res.UsageBefore.GetTotal().GetRequests() + ledgeredCalls
	for range 20 {
		res.Usage, err = client.Usage().GetUsageSummary(ctx, res.UsageRequest)
		if err != nil {
			return res, fmt.Errorf("GetUsageSummary: %w", err)
		}
		if res.Usage.GetTotal().GetRequests() >= want {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	printSummary(out, res.UsageRequest, res.Usage)
	if res.Usage.GetTotal().GetRequests() < want {
		fmt.Fprintln(out, "(the ledger has not recorded all of this run's calls yet)")
	}
	return res, nil
}

// printSummary writes a usage summary; its cost is an exact decimal string, printed as it is.
func printSummary(out io.Writer, req *llmgatewayv1.GetUsageSummaryRequest, s *llmgatewayv1.GetUsageSummaryResponse) {
	t := s.GetTotal()
	fmt.Fprintf(out, "\n== GetUsageSummary (%s, UTC)\n", req.GetFilter().GetStartTime().AsTime().Format(time.DateOnly))
	fmt.Fprintf(out, "calls:    %d (%d failed)\n", t.GetRequests(), t.GetErrors())
	fmt.Fprintf(out, "tokens:   %d prompt + %d completion\n", t.GetPromptTokens(), t.GetCompletionTokens())
	fmt.Fprintf(out, "cost:     %s %s\n", t.GetCost(), s.GetCurrency())
	if len(s.GetTopModelsByCost()) > 0 {
		fmt.Fprintln(out, "top models by cost:")
	}
	for _, m := range s.GetTopModelsByCost() {
		fmt.Fprintf(out, "  %-20s %s %s (%d calls)\n", m.GetModel(), m.GetCost(), s.GetCurrency(), m.GetRequests())
	}
}

func printUsage(out io.Writer, u *llmgatewayv1.Usage) {
	est := ""
	if u.GetEstimated() {
		est = " (estimated)"
	}
	fmt.Fprintf(out, "usage:    %d prompt + %d completion = %d tokens%s\n",
		u.GetPromptTokens(), u.GetCompletionTokens(), u.GetTotalTokens(), est)
}

func printCost(out io.Writer, c *llmgatewayv1.Cost) {
	fmt.Fprintf(out, "cost:     %s (input %s, output %s; %s", money(c), orDash(c.GetInput()), orDash(c.GetOutput()), c.GetStatus())
	if c.GetPriceSource() != "" {
		fmt.Fprintf(out, ", prices from %s", c.GetPriceSource())
	}
	fmt.Fprintln(out, ")")
}

// money formats a cost's total with its currency. Amounts are exact decimal strings and are
// printed as they are, never through a float.
func money(c *llmgatewayv1.Cost) string {
	if c.GetTotal() == "" {
		return "unknown"
	}
	return strings.TrimSpace(c.GetTotal() + " " + c.GetCurrency())
}

func printLatency(out io.Writer, l *llmgatewayv1.Latency) {
	fmt.Fprintf(out, "latency:  %s total, %s upstream, %s gateway overhead",
		dur(l.GetTotal()), dur(l.GetUpstream()), dur(l.GetGatewayOverhead()))
	if l.GetTimeToFirstToken() != nil {
		fmt.Fprintf(out, ", first token after %s", dur(l.GetTimeToFirstToken()))
	}
	fmt.Fprintln(out)
}

func dur(d *durationpb.Duration) string {
	if d == nil {
		return "-"
	}
	return d.AsDuration().String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err := run(ctx, configFromEnv(), os.Stdout)
	cancel()
	if err != nil {
		if info := llmgateway.ErrorInfo(err); info != nil {
			log.Fatalf("%v (reason %s, request %s)", err, info.GetReason(), info.GetMetadata()["request_id"])
		}
		log.Fatal(err)
	}
}
