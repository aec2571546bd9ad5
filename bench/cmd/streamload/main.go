// Command streamload is a streaming load client. It runs chat completion streams against the LLM
// gateway (gRPC ChatStream) or an OpenAI-compatible HTTP server-sent-events endpoint (the mock
// upstream, or a proxy such as LiteLLM's), and reports time to first token, the gaps between text
// events and the number of text events per stream, as one JSON object.
//
// Normally -concurrency workers run -total streams between them. With -hold, -concurrency streams
// are opened at once; when every one has received its first text event (or failed), "READY <ok>
// <failed>" is printed to stderr (and written to -ready-file), and the streams are then read to
// completion. That is used to measure a server's memory with many open streams.
//
// The exit status is 0 whenever the report was written, whatever the streams' outcome; 2 for bad
// flags, 1 for other setup failures.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"llmgateway.local/bench/internal/atomicfile"
)

// streamResult is the outcome of one stream.
type streamResult struct {
	errKey  string // "" when the stream succeeded
	errMsg  string
	gotText bool
	ttft    time.Duration
	gaps    []time.Duration
	chunks  int
}

func (r *streamResult) fail(key, msg string) {
	if r.errKey == "" {
		r.errKey, r.errMsg = key, msg
	}
}

// textClock records the timing of a stream's text events into a streamResult.
type textClock struct {
	start     time.Time
	last      time.Time
	res       *streamResult
	firstText func()
}

// text records a text event received at now.
func (c *textClock) text(now time.Time) {
	r := c.res
	if !r.gotText {
		r.gotText = true
		r.ttft = now.Sub(c.start)
		if c.firstText != nil {
			c.firstText()
		}
	} else {
		r.gaps = append(r.gaps, now.Sub(c.last))
	}
	c.last = now
	r.chunks++
}

// streamer runs streams against one kind of target. stream runs stream number i and calls
// firstText (when not nil) exactly once, when the first text event arrives. It must be safe for
// concurrent use.
type streamer interface {
	stream(ctx context.Context, i int, firstText func()) streamResult
	close()
}

// report is the JSON output.
type report struct {
	Target       string            `json:"target"`
	Addr         string            `json:"addr"`
	Model        string            `json:"model"`
	Concurrency  int               `json:"concurrency"`
	Connections  int               `json:"connections,omitempty"`
	Hold         bool              `json:"hold"`
	Streams      int               `json:"streams"`
	OK           int               `json:"ok"`
	Errors       map[string]int    `json:"errors"`
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	TTFT         summary           `json:"ttft_ms"`
	Gap          summary           `json:"gap_ms"`
	Chunks       countSummary      `json:"chunks_per_stream"`
	WallS        float64           `json:"wall_s"`
	StreamsPerS  float64           `json:"streams_per_s"`
	ReadyS       *float64          `json:"ready_s,omitempty"`
	ReadyOK      *int              `json:"ready_ok,omitempty"`
}

type config struct {
	target      string
	addr        string
	apiKey      string
	model       string
	prompt      string
	concurrency int
	connections int
	total       int
	hold        bool
	readyFile   string
	timeout     time.Duration
	out         string
}

func parseFlags() config {
	var c config
	flag.StringVar(&c.target, "target", "grpc", "grpc (the gateway's ChatStream) or sse (OpenAI-compatible HTTP)")
	flag.StringVar(&c.addr, "addr", "", "grpc: host:port; sse: base URL such as http://127.0.0.1:4000 (POSTs to <base>/v1/chat/completions)")
	flag.StringVar(&c.apiKey, "api-key", "", "API key sent as a bearer token (omitted when empty)")
	flag.StringVar(&c.model, "model", "", `model (default "bench" for grpc, "mock-model" for sse)`)
	flag.StringVar(&c.prompt, "prompt", "Say hello", "the user message")
	flag.IntVar(&c.concurrency, "concurrency", 10, "streams in flight at once")
	flag.IntVar(&c.connections, "connections", 1, "grpc: client connections, used round-robin")
	flag.IntVar(&c.total, "total", 200, "streams to run in total (ignored with -hold: total = concurrency)")
	flag.BoolVar(&c.hold, "hold", false, "open -concurrency streams at once and report READY when all have their first text")
	flag.StringVar(&c.readyFile, "ready-file", "", "with -hold: write this file when READY")
	flag.DurationVar(&c.timeout, "timeout", 60*time.Second, "per-stream timeout")
	flag.StringVar(&c.out, "out", "", "write the JSON report here (default stdout)")
	flag.Parse()

	bad := func(msg string) {
		fmt.Fprintln(os.Stderr, "streamload:", msg)
		flag.Usage()
		os.Exit(2)
	}
	if flag.NArg() > 0 {
		bad("unexpected arguments")
	}
	switch c.target {
	case "grpc":
		if c.model == "" {
			c.model = "bench"
		}
	case "sse":
		if c.model == "" {
			c.model = "mock-model"
		}
	default:
		bad("-target must be grpc or sse")
	}
	if c.addr == "" {
		bad("-addr is required")
	}
	if c.concurrency < 1 || c.total < 1 || c.connections < 1 {
		bad("-concurrency, -total and -connections must be >= 1")
	}
	if c.timeout <= 0 {
		bad("-timeout must be > 0")
	}
	if c.readyFile != "" && !c.hold {
		bad("-ready-file needs -hold")
	}
	if c.hold {
		c.total = c.concurrency
	}
	return c
}

func main() {
	cfg := parseFlags()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var (
		s   streamer
		err error
	)
	switch cfg.target {
	case "grpc":
		s, err = newGRPCStreamer(ctx, cfg)
	case "sse":
		s, err = newSSEStreamer(cfg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "streamload:", err)
		os.Exit(1)
	}
	defer s.close()

	rep, err := run(ctx, cfg, s)
	if err != nil {
		fmt.Fprintln(os.Stderr, "streamload:", err)
		os.Exit(1)
	}
	data, _ := json.MarshalIndent(rep, "", "  ")
	data = append(data, '\n')
	if cfg.out == "" {
		_, err = os.Stdout.Write(data)
	} else {
		err = atomicfile.Write(cfg.out, data)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "streamload: writing the report:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "streamload: %d/%d ok in %.2fs; ttft p50 %.2fms p99 %.2fms; gap p50 %.2fms; errors %v\n",
		rep.OK, rep.Streams, rep.WallS, rep.TTFT.P50, rep.TTFT.P99, rep.Gap.P50, rep.Errors)
}

// run runs cfg.total streams on cfg.concurrency workers and summarizes them.
func run(ctx context.Context, cfg config, s streamer) (*report, error) {
	results := make([]streamResult, cfg.total)
	workers := min(cfg.concurrency, cfg.total)

	// -hold: every stream reports once, on its first text event or when it ends without one.
	var (
		pending sync.WaitGroup
		readyOK atomic.Int64
	)
	firstText := func() {}
	if cfg.hold {
		pending.Add(cfg.total)
		firstText = func() {
			readyOK.Add(1)
			pending.Done()
		}
	}

	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.total {
					return
				}
				sctx, cancel := context.WithTimeout(ctx, cfg.timeout)
				r := s.stream(sctx, i, firstText)
				cancel()
				if cfg.hold && !r.gotText {
					pending.Done()
				}
				results[i] = r
			}
		}()
	}

	var readyS *float64
	var readyN *int
	readyDone := make(chan error, 1)
	if cfg.hold {
		go func() {
			pending.Wait()
			elapsed := time.Since(start).Seconds()
			ok := int(readyOK.Load())
			line := fmt.Sprintf("READY %d %d", ok, cfg.total-ok)
			fmt.Fprintln(os.Stderr, line)
			readyS, readyN = &elapsed, &ok
			var err error
			if cfg.readyFile != "" {
				err = atomicfile.Write(cfg.readyFile, []byte(line+"\n"))
			}
			readyDone <- err
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	if cfg.hold {
		if err := <-readyDone; err != nil {
			return nil, fmt.Errorf("writing the ready file: %w", err)
		}
	}

	rep := &report{
		Target:      cfg.target,
		Addr:        cfg.addr,
		Model:       cfg.model,
		Concurrency: cfg.concurrency,
		Hold:        cfg.hold,
		Streams:     cfg.total,
		Errors:      map[string]int{},
		WallS:       wall.Seconds(),
		StreamsPerS: float64(cfg.total) / wall.Seconds(),
		ReadyS:      readyS,
		ReadyOK:     readyN,
	}
	if cfg.target == "grpc" {
		rep.Connections = cfg.connections
	}
	var ttfts, gaps []time.Duration
	var chunks []int
	for i := range results {
		r := &results[i]
		if r.errKey != "" {
			rep.Errors[r.errKey]++
			if rep.ErrorSamples == nil {
				rep.ErrorSamples = map[string]string{}
			}
			if _, ok := rep.ErrorSamples[r.errKey]; !ok {
				rep.ErrorSamples[r.errKey] = r.errMsg
			}
			continue
		}
		rep.OK++
		if r.gotText {
			ttfts = append(ttfts, r.ttft)
		}
		gaps = append(gaps, r.gaps...)
		chunks = append(chunks, r.chunks)
	}
	rep.TTFT = summarize(ttfts)
	rep.Gap = summarize(gaps)
	rep.Chunks = summarizeCounts(chunks)
	return rep, nil
}
