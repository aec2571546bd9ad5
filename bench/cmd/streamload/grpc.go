package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	llmgatewayv1 "github.com/llm-gateway/llm-gateway/clients/go/gen/llmgateway/v1"
	"github.com/llm-gateway/llm-gateway/clients/go/llmgateway"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// grpcStreamer runs the gateway's ChatStream over one or more client connections, round-robin.
type grpcStreamer struct {
	clients []*llmgateway.Client
	req     *llmgatewayv1.ChatStreamRequest
}

func newGRPCStreamer(ctx context.Context, cfg config) (*grpcStreamer, error) {
	g := &grpcStreamer{
		req: &llmgatewayv1.ChatStreamRequest{Request: &llmgatewayv1.ChatRequest{
			Model: cfg.model,
			Messages: []*llmgatewayv1.Message{{
				Role:    llmgatewayv1.Role_ROLE_USER,
				Content: []*llmgatewayv1.Part{{Kind: &llmgatewayv1.Part_Text{Text: cfg.prompt}}},
			}},
		}},
	}
	for range cfg.connections {
		c, err := llmgateway.Dial(cfg.addr, llmgateway.WithAPIKey(cfg.apiKey))
		if err != nil {
			g.close()
			return nil, fmt.Errorf("dial %s: %w", cfg.addr, err)
		}
		g.clients = append(g.clients, c)
	}
	// Connect before the clock starts so that connection setup is not counted in the first
	// streams' time to first token. A connection that does not come up is left to fail the
	// streams, which then report the error.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for i, c := range g.clients {
		if err := waitReady(wctx, c); err != nil {
			fmt.Fprintf(os.Stderr, "streamload: connection %d to %s not ready: %v\n", i, cfg.addr, err)
		}
	}
	return g, nil
}

func waitReady(ctx context.Context, c *llmgateway.Client) error {
	conn := c.Conn()
	conn.Connect()
	for {
		s := conn.GetState()
		if s == connectivity.Ready {
			return nil
		}
		if !conn.WaitForStateChange(ctx, s) {
			return fmt.Errorf("still %s: %w", s, ctx.Err())
		}
	}
}

func (g *grpcStreamer) close() {
	for _, c := range g.clients {
		_ = c.Close()
	}
}

// codeName is the canonical name of a gRPC status code, such as "UNAVAILABLE".
func codeName(err error) string {
	return code.Code(status.Code(err)).String()
}

func (g *grpcStreamer) stream(ctx context.Context, i int, firstText func()) streamResult {
	var res streamResult
	c := g.clients[i%len(g.clients)]
	clk := textClock{start: time.Now(), res: &res, firstText: firstText}
	st, err := c.ChatStream(ctx, g.req)
	if err != nil {
		res.fail(codeName(err), err.Error())
		return res
	}
	finished := false
	for {
		msg, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			res.fail(codeName(err), err.Error())
			return res
		}
		switch msg.GetEvent().(type) {
		case *llmgatewayv1.ChatStreamResponse_TextDelta:
			clk.text(time.Now())
		case *llmgatewayv1.ChatStreamResponse_Finish:
			finished = true
		}
	}
	if !finished {
		res.fail("NO_FINISH", "the stream ended with OK but without a finish event")
	}
	return res
}
