// Package llmgateway is a small convenience layer over the generated LLM Gateway stubs in
// github.com/llm-gateway/llm-gateway/clients/go/gen/llmgateway/v1.
//
// It opens a connection with an optional API key ([Dial]) that serves all of the gateway's
// services ([Client], [Client.Usage] and [Client.Budgets]), and reads the rich error details the
// gateway attaches to every failed call ([ErrorInfo], [BadRequest], [RetryInfo]).
//
// Money in the API is exact: every amount is a decimal string such as "0.000435". This package
// never converts amounts to binary floating point; parse them with a decimal type (for example
// math/big.Rat) when arithmetic is needed.
package llmgateway

import (
	"context"
	"crypto/tls"
	"strings"

	llmgatewayv1 "github.com/llm-gateway/llm-gateway/clients/go/gen/llmgateway/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Client is a connection to an LLM Gateway. It embeds the generated
// [llmgatewayv1.GatewayServiceClient], so Chat, ChatStream, EstimateCost and ListModels are called
// on it directly; [Client.Usage] reads the usage ledger and [Client.Budgets] manages spend limits
// over the same connection. A Client is safe for concurrent use; call Close when done.
type Client struct {
	llmgatewayv1.GatewayServiceClient

	usage   llmgatewayv1.UsageServiceClient
	budgets llmgatewayv1.BudgetServiceClient
	conn    *grpc.ClientConn
}

// Option configures [Dial].
type Option func(*options)

type options struct {
	apiKey    string
	transport credentials.TransportCredentials
	dialOpts  []grpc.DialOption
}

// WithAPIKey sends key on every call as the metadata `authorization: Bearer <key>`. The key is
// sent over plaintext connections too, because the gateway is commonly reached without TLS inside
// a service mesh; use [WithTLS] when the network between you and the gateway is not trusted. An
// empty key sends no authorization metadata.
func WithAPIKey(key string) Option {
	return func(o *options) { o.apiKey = key }
}

// WithTLS connects over TLS configured by cfg. A nil cfg uses the host's root certificates and
// the server name taken from the target address. Without this option the connection is plaintext.
func WithTLS(cfg *tls.Config) Option {
	if cfg == nil {
		cfg = &tls.Config{}
	}
	return func(o *options) { o.transport = credentials.NewTLS(cfg) }
}

// WithDialOptions appends grpc dial options, for example interceptors or a custom resolver. They
// are applied after the options this package sets, so they can override them.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpts = append(o.dialOpts, opts...) }
}

// Dial creates a client for the gateway at target, a gRPC target such as "localhost:50051" or
// "dns:///gateway.internal:443". Like [grpc.NewClient], it does not wait for the connection: the
// first call connects, and connection problems are reported by that call.
func Dial(target string, opts ...Option) (*Client, error) {
	o := options{transport: insecure.NewCredentials()}
	for _, opt := range opts {
		opt(&o)
	}
	dialOpts := []grpc.DialOption{grpc.WithTransportCredentials(o.transport)}
	if o.apiKey != "" {
		dialOpts = append(dialOpts, grpc.WithPerRPCCredentials(bearerToken(o.apiKey)))
	}
	dialOpts = append(dialOpts, o.dialOpts...)
	conn, err := grpc.NewClient(target, dialOpts...)
	if err != nil {
		return nil, err
	}
	return &Client{
		GatewayServiceClient: llmgatewayv1.NewGatewayServiceClient(conn),
		usage:                llmgatewayv1.NewUsageServiceClient(conn),
		budgets:              llmgatewayv1.NewBudgetServiceClient(conn),
		conn:                 conn,
	}, nil
}

// Usage returns the client of the gateway's UsageService (GetUsageSummary, ListUsageRecords) on the
// same connection, with the same API key. A key that is not an admin key sees only its own calls.
func (c *Client) Usage() llmgatewayv1.UsageServiceClient { return c.usage }

// Budgets returns the client of the gateway's BudgetService (CreateBudget, GetBudget, ListBudgets,
// UpdateBudget, DeleteBudget, ListBudgetAlerts) on the same connection, with the same API key. Only
// an admin key may create, change or delete budgets; a key that is not an admin key sees only the
// budgets of its own "key:" scope.
func (c *Client) Budgets() llmgatewayv1.BudgetServiceClient { return c.budgets }

// Conn returns the underlying connection, for use with other services on the same gateway (for
// example grpc.health.v1.Health).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection. Calls in flight fail with codes.Canceled.
func (c *Client) Close() error { return c.conn.Close() }

// bearerToken is a grpc PerRPCCredentials that sends an API key as a bearer token. Unlike
// google.golang.org/grpc/credentials/oauth, it does not require transport security.
type bearerToken string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (bearerToken) RequireTransportSecurity() bool { return false }

// Text returns the concatenation of the text parts of m, in order, ignoring other parts. It
// returns "" for a nil message.
func Text(m *llmgatewayv1.Message) string {
	var b strings.Builder
	for _, p := range m.GetContent() {
		b.WriteString(p.GetText())
	}
	return b.String()
}
