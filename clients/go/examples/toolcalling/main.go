// Command toolcalling runs one tool-calling conversation through an LLM Gateway: the model asks
// for a tool, the tool runs here, and its result goes back to the model for the final answer. The
// first turn is also streamed, to show how tool-call deltas assemble into whole calls.
//
// From the repository root: go -C clients/go run ./examples/toolcalling
//
// Environment:
//
//	LLM_GATEWAY_ADDR     gateway address (default localhost:50051)
//	LLM_GATEWAY_API_KEY  API key, sent as "authorization: Bearer <key>" (optional)
//	LLM_GATEWAY_MODEL    a model that supports tools (default mock:echo)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"slices"
	"time"

	llmgatewayv1 "github.com/llm-gateway/llm-gateway/clients/go/gen/llmgateway/v1"
	"github.com/llm-gateway/llm-gateway/clients/go/llmgateway"
	"google.golang.org/protobuf/types/known/structpb"
)

const question = "What is the weather in Paris?"

// Config says which gateway to call and how.
type Config struct {
	Addr   string
	APIKey string
	Model  string
}

// Result holds both turns of the conversation and the first turn streamed.
type Result struct {
	// First is the reply to the first turn: the tool calls.
	First *llmgatewayv1.ChatResponse
	// Followup is the second turn's request: the first turn's messages, the assistant's tool
	// calls, and one tool message per call.
	Followup *llmgatewayv1.ChatRequest
	// Final is the reply to the second turn: the answer.
	Final *llmgatewayv1.ChatResponse
	// StreamEvents are the events of the first turn streamed, in order.
	StreamEvents []*llmgatewayv1.ChatStreamResponse
	// StreamedCalls are the tool calls assembled from StreamEvents.
	StreamedCalls []*llmgatewayv1.ToolCall
}

// Weather is what the get_weather tool returns.
type Weather struct {
	City  string `json:"city"`
	TempC int    `json:"temp_c"`
}

// getWeather is the tool: a stand-in for a real weather service.
func getWeather(city string) Weather { return Weather{City: city, TempC: 18} }

// weatherTool declares get_weather to the model, with the JSON Schema of its arguments.
func weatherTool() *llmgatewayv1.Tool {
	params, err := structpb.NewStruct(map[string]any{
		"type":       "object",
		"properties": map[string]any{"city": map[string]any{"type": "string"}},
		"required":   []any{"city"},
	})
	if err != nil {
		panic(err) // the schema is a constant; only a value structpb cannot hold gets here
	}
	return &llmgatewayv1.Tool{Name: "get_weather", Description: "The current weather in a city.", Parameters: params}
}

// runTool runs the tool a call names and returns its result as JSON text. The arguments are the
// model's JSON text, kept verbatim by the gateway, so they are checked before use.
func runTool(call *llmgatewayv1.ToolCall) (string, error) {
	switch call.GetName() {
	case "get_weather":
		var args struct {
			City *string `json:"city"`
		}
		if err := json.Unmarshal([]byte(call.GetArguments()), &args); err != nil || args.City == nil {
			return "", fmt.Errorf("get_weather: arguments %s are not an object with a city (%v)", call.GetArguments(), err)
		}
		out, err := json.Marshal(getWeather(*args.City))
		return string(out), err
	default:
		return "", fmt.Errorf("the model called an unknown tool %q", call.GetName())
	}
}

func textMessage(role llmgatewayv1.Role, text string) *llmgatewayv1.Message {
	return &llmgatewayv1.Message{Role: role, Content: []*llmgatewayv1.Part{{Kind: &llmgatewayv1.Part_Text{Text: text}}}}
}

// toolMessage answers one tool call in the next turn.
func toolMessage(callID, result string) *llmgatewayv1.Message {
	m := textMessage(llmgatewayv1.Role_ROLE_TOOL, result)
	m.ToolCallId = callID
	return m
}

// assembleToolCalls joins a stream's tool-call deltas into calls: deltas with the same index are
// one call, the first carries its id and name, and the arguments are every delta's pieces in order.
func assembleToolCalls(events []*llmgatewayv1.ChatStreamResponse) []*llmgatewayv1.ToolCall {
	byIndex := map[int32]*llmgatewayv1.ToolCall{}
	var indexes []int32
	for _, ev := range events {
		d := ev.GetToolCallDelta()
		if d == nil {
			continue
		}
		call, ok := byIndex[d.GetIndex()]
		if !ok {
			call = &llmgatewayv1.ToolCall{}
			byIndex[d.GetIndex()] = call
			indexes = append(indexes, d.GetIndex())
		}
		if call.Id == "" {
			call.Id = d.GetId()
		}
		if call.Name == "" {
			call.Name = d.GetName()
		}
		call.Arguments += d.GetArguments()
	}
	slices.Sort(indexes)
	calls := make([]*llmgatewayv1.ToolCall, len(indexes))
	for i, index := range indexes {
		calls[i] = byIndex[index]
	}
	return calls
}

// run runs the conversation, writing each step to out.
func run(ctx context.Context, cfg Config, out io.Writer) (*Result, error) {
	client, err := llmgateway.Dial(cfg.Addr, llmgateway.WithAPIKey(cfg.APIKey))
	if err != nil {
		return nil, err
	}
	defer client.Close()

	req := &llmgatewayv1.ChatRequest{
		Model: cfg.Model,
		Messages: []*llmgatewayv1.Message{
			textMessage(llmgatewayv1.Role_ROLE_SYSTEM, "Use the tools to answer."),
			textMessage(llmgatewayv1.Role_ROLE_USER, question),
		},
		Tools: []*llmgatewayv1.Tool{weatherTool()},
		// REQUIRED: the reply is a tool call instead of text.
		ToolChoice: &llmgatewayv1.ToolChoice{Choice: &llmgatewayv1.ToolChoice_Mode{Mode: llmgatewayv1.ToolChoiceMode_TOOL_CHOICE_MODE_REQUIRED}},
	}
	res := &Result{}

	// Turn 1: the tool calls.
	if res.First, err = client.Chat(ctx, req); err != nil {
		return res, fmt.Errorf("Chat (turn 1): %w", err)
	}
	fmt.Fprintf(out, "Chat: %s\n", res.First.GetFinishReason())
	calls := res.First.GetMessage().GetToolCalls()
	if len(calls) == 0 {
		return res, fmt.Errorf("%s answered without calling a tool: %q", cfg.Model, llmgateway.Text(res.First.GetMessage()))
	}

	// Run every call; the assistant's turn and one tool message per call extend the conversation.
	// No tool choice this time, so the model may answer.
	res.Followup = &llmgatewayv1.ChatRequest{
		Model:    cfg.Model,
		Messages: append(slices.Clone(req.GetMessages()), res.First.GetMessage()),
		Tools:    req.GetTools(),
	}
	for _, call := range calls {
		result, err := runTool(call)
		if err != nil {
			return res, err
		}
		fmt.Fprintf(out, "  %s(%s) [%s] -> %s\n", call.GetName(), call.GetArguments(), call.GetId(), result)
		res.Followup.Messages = append(res.Followup.Messages, toolMessage(call.GetId(), result))
	}

	// Turn 2: the answer, from the tool results.
	if res.Final, err = client.Chat(ctx, res.Followup); err != nil {
		return res, fmt.Errorf("Chat (turn 2): %w", err)
	}
	fmt.Fprintf(out, "Chat: %s\n  %s\n", res.Final.GetFinishReason(), llmgateway.Text(res.Final.GetMessage()))
	for i, reply := range []*llmgatewayv1.ChatResponse{res.First, res.Final} {
		u, c := reply.GetUsage(), reply.GetCost()
		fmt.Fprintf(out, "  turn %d: %d prompt + %d completion tokens, cost %s %s\n",
			i+1, u.GetPromptTokens(), u.GetCompletionTokens(), c.GetTotal(), c.GetCurrency())
	}

	// Turn 1 again, streamed: tool calls arrive as deltas to join by index.
	stream, err := client.ChatStream(ctx, &llmgatewayv1.ChatStreamRequest{Request: req})
	if err != nil {
		return res, fmt.Errorf("ChatStream: %w", err)
	}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("ChatStream: %w", err)
		}
		res.StreamEvents = append(res.StreamEvents, ev)
	}
	res.StreamedCalls = assembleToolCalls(res.StreamEvents)
	deltas := 0
	for _, ev := range res.StreamEvents {
		if ev.GetToolCallDelta() != nil {
			deltas++
		}
	}
	fmt.Fprintf(out, "ChatStream: %d tool-call deltas\n", deltas)
	for _, call := range res.StreamedCalls {
		fmt.Fprintf(out, "  %s(%s) [%s]\n", call.GetName(), call.GetArguments(), call.GetId())
	}
	return res, nil
}

func getenv(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func main() {
	cfg := Config{
		Addr:   getenv("LLM_GATEWAY_ADDR", "localhost:50051"),
		APIKey: os.Getenv("LLM_GATEWAY_API_KEY"),
		Model:  getenv("LLM_GATEWAY_MODEL", "mock:echo"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err := run(ctx, cfg, os.Stdout)
	cancel()
	if err != nil {
		if info := llmgateway.ErrorInfo(err); info != nil {
			log.Fatalf("%v (reason %s, request %s)", err, info.GetReason(), info.GetMetadata()["request_id"])
		}
		log.Fatal(err)
	}
}
