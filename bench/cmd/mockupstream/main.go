// Command mockupstream is a fast mock LLM upstream that speaks the OpenAI Chat Completions wire
// format (as the official openai Python SDK expects), for benchmarking gateways in front of it.
//
// Endpoints:
//
//	POST /v1/chat/completions, POST /chat/completions   chat completion, plain or SSE stream
//	GET  /v1/models, GET /models                        a list with one model, "mock-model"
//	GET  /healthz                                       200 "ok"
//	GET  /_control                                      current settings as JSON
//	POST /_control                                      change settings: {"latency_ms": float,
//	                                                    "chunk_delay_ms": float, "chunks": int}
//
// A non-stream reply is a fixed sentence. A stream sends a role chunk, -chunks content chunks of
// "word ", a finish chunk, a usage chunk when stream_options.include_usage is set, then [DONE].
// -latency is waited before the reply (before the first chunk of a stream) and -chunk-delay between
// content chunks. A max_tokens (or max_completion_tokens) smaller than the reply truncates it and
// sets finish_reason "length", as a real model would.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"llmgateway.local/bench/internal/atomicfile"
)

const (
	replyText   = "The quick brown fox jumps over the lazy dog."
	chunkText   = "word "
	fingerprint = "fp_mock"
	modelsBody  = `{"object":"list","data":[{"id":"mock-model","object":"model","created":1700000000,"owned_by":"mock"}]}`
	maxBodySize = 16 << 20
	// replyTokens is the completion token count reported for the full non-stream reply.
	replyTokens = 10
)

// replyWords are the words of replyText with their trailing spaces, used to truncate the reply to
// max_tokens words.
var replyWords = strings.SplitAfter(replyText, " ")

// Precomputed JSON fragments.
var (
	replyJSON = mustJSON(replyText)
	chunkJSON = mustJSON(chunkText)
)

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// settings are the run-time knobs, readable and writable concurrently.
type settings struct {
	latency    atomic.Int64 // nanoseconds
	chunkDelay atomic.Int64 // nanoseconds
	chunks     atomic.Int64
}

// controlView is the JSON form of settings for GET and POST /_control.
type controlView struct {
	LatencyMs    float64 `json:"latency_ms"`
	ChunkDelayMs float64 `json:"chunk_delay_ms"`
	Chunks       int64   `json:"chunks"`
}

// controlUpdate is a POST /_control body: any subset of the settings.
type controlUpdate struct {
	LatencyMs    *float64 `json:"latency_ms"`
	ChunkDelayMs *float64 `json:"chunk_delay_ms"`
	Chunks       *int64   `json:"chunks"`
}

// chatRequest is the part of a Chat Completions request the mock uses.
type chatRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Stream        bool `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens           *int64 `json:"max_tokens"`
	MaxCompletionTokens *int64 `json:"max_completion_tokens"`
}

type server struct {
	cfg      settings
	idPrefix string
	seq      atomic.Uint64
	bufs     sync.Pool // *[]byte
}

func newServer(latency, chunkDelay time.Duration, chunks int64) *server {
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	s := &server{idPrefix: "chatcmpl-mock" + hex.EncodeToString(rnd[:])}
	s.cfg.latency.Store(int64(latency))
	s.cfg.chunkDelay.Store(int64(chunkDelay))
	s.cfg.chunks.Store(chunks)
	s.bufs.New = func() any { b := make([]byte, 0, 4096); return &b }
	return s
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.chatCompletions)
	mux.HandleFunc("POST /chat/completions", s.chatCompletions)
	mux.HandleFunc("GET /v1/models", s.models)
	mux.HandleFunc("GET /models", s.models)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /_control", s.getControl)
	mux.HandleFunc("POST /_control", s.postControl)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "invalid_request_error", "Unknown request URL: "+r.Method+" "+r.URL.Path, "")
	})
	return mux
}

func (s *server) getBuf() *[]byte { return s.bufs.Get().(*[]byte) }

func (s *server) putBuf(b *[]byte) {
	if cap(*b) > 1<<20 {
		return
	}
	*b = (*b)[:0]
	s.bufs.Put(b)
}

func (s *server) newID(b []byte) []byte {
	b = append(b, s.idPrefix...)
	b = append(b, '-')
	return strconv.AppendUint(b, s.seq.Add(1), 16)
}

// writeError writes an OpenAI-style error body.
func writeError(w http.ResponseWriter, status int, typ, msg, param string) {
	var body struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	body.Error.Message = msg
	body.Error.Type = typ
	if param != "" {
		body.Error.Param = &param
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(&body)
}

// sleep waits d or until ctx ends; it reports whether the caller should go on.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// promptTokens is a rough token estimate of the conversation: about 4 bytes per token of content
// plus a few tokens of overhead per message.
func promptTokens(req *chatRequest) int64 {
	n := int64(3)
	for _, m := range req.Messages {
		n += 4 + int64(len(m.Content)+3)/4
	}
	return n
}

func (s *server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	bp := s.getBuf()
	defer s.putBuf(bp)
	buf := bytes.NewBuffer((*bp)[:0])
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, maxBodySize)); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "Request body too large.", "")
			return
		}
		writeError(w, http.StatusBadRequest, "invalid_request_error", "Could not read the request body: "+err.Error(), "")
		return
	}
	*bp = buf.Bytes()[:0]

	var req chatRequest
	if err := json.Unmarshal(buf.Bytes(), &req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error",
			"We could not parse the JSON body of your request. ("+err.Error()+")", "")
		return
	}
	if req.Model == "" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "you must provide a model parameter", "model")
		return
	}
	if len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "[] is too short - 'messages'", "messages")
		return
	}
	limit, limitParam := int64(-1), ""
	if req.MaxTokens != nil {
		limit, limitParam = *req.MaxTokens, "max_tokens"
	}
	if req.MaxCompletionTokens != nil {
		limit, limitParam = *req.MaxCompletionTokens, "max_completion_tokens"
	}
	if limitParam != "" && limit < 1 {
		writeError(w, http.StatusBadRequest, "invalid_request_error",
			fmt.Sprintf("Invalid '%s': integer below minimum value. Expected a value >= 1, but got %d instead.", limitParam, limit),
			limitParam)
		return
	}
	modelJSON, _ := json.Marshal(req.Model)
	if req.Stream {
		s.stream(w, r, &req, modelJSON, limit)
		return
	}
	s.complete(w, r, &req, modelJSON, limit)
}

func appendUsage(b []byte, prompt, completion int64) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, prompt, 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, completion, 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, prompt+completion, 10)
	return append(b, `,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}`...)
}

// complete answers a non-stream request with one chat.completion object.
func (s *server) complete(w http.ResponseWriter, r *http.Request, req *chatRequest, modelJSON []byte, limit int64) {
	if !sleep(r.Context(), time.Duration(s.cfg.latency.Load())) {
		return
	}
	content, finish, completion := replyJSON, "stop", int64(replyTokens)
	if limit > 0 && limit < int64(len(replyWords)) {
		content = mustJSON(strings.TrimRight(strings.Join(replyWords[:limit], ""), " "))
		finish, completion = "length", limit
	}
	bp := s.getBuf()
	defer s.putBuf(bp)
	b := append((*bp)[:0], `{"id":"`...)
	b = s.newID(b)
	b = append(b, `","object":"chat.completion","created":`...)
	b = strconv.AppendInt(b, time.Now().Unix(), 10)
	b = append(b, `,"model":`...)
	b = append(b, modelJSON...)
	b = append(b, `,"choices":[{"index":0,"message":{"role":"assistant","content":`...)
	b = append(b, content...)
	b = append(b, `,"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"`...)
	b = append(b, finish...)
	b = append(b, `"}],"usage":`...)
	b = appendUsage(b, promptTokens(req), completion)
	b = append(b, `,"service_tier":"default","system_fingerprint":"`+fingerprint+`"}`...)
	*bp = b

	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

// stream answers a stream request with chat.completion.chunk events.
func (s *server) stream(w http.ResponseWriter, r *http.Request, req *chatRequest, modelJSON []byte, limit int64) {
	ctx := r.Context()
	flusher, _ := w.(http.Flusher)
	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	chunks, finish := s.cfg.chunks.Load(), "stop"
	if limit > 0 && limit < chunks {
		chunks, finish = limit, "length"
	}
	chunkDelay := time.Duration(s.cfg.chunkDelay.Load())

	// Every event is "data: " + prefix + choices + suffix + "\n\n"; build the shared parts once.
	pp := s.getBuf()
	defer s.putBuf(pp)
	prefix := append((*pp)[:0], `data: {"id":"`...)
	prefix = s.newID(prefix)
	prefix = append(prefix, `","object":"chat.completion.chunk","created":`...)
	prefix = strconv.AppendInt(prefix, time.Now().Unix(), 10)
	prefix = append(prefix, `,"model":`...)
	prefix = append(prefix, modelJSON...)
	prefix = append(prefix, `,"service_tier":"default","system_fingerprint":"`+fingerprint+`","choices":[`...)
	*pp = prefix
	suffix := "]}\n\n"
	if includeUsage {
		suffix = `],"usage":null}` + "\n\n"
	}

	bp := s.getBuf()
	defer s.putBuf(bp)
	event := func(choice string) []byte {
		b := append((*bp)[:0], prefix...)
		b = append(b, choice...)
		b = append(b, suffix...)
		*bp = b
		return b
	}
	send := func(b []byte) bool {
		if _, err := w.Write(b); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}

	if !sleep(ctx, time.Duration(s.cfg.latency.Load())) {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)

	if !send(event(`{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}`)) {
		return
	}
	// All content chunks are identical: build one and send it repeatedly.
	content := append([]byte(nil), event(`{"index":0,"delta":{"content":`+string(chunkJSON)+`},"logprobs":null,"finish_reason":null}`)...)
	for i := int64(0); i < chunks; i++ {
		if i > 0 && !sleep(ctx, chunkDelay) {
			return
		}
		if !send(content) {
			return
		}
	}
	if !send(event(`{"index":0,"delta":{},"logprobs":null,"finish_reason":"` + finish + `"}`)) {
		return
	}
	if includeUsage {
		b := append((*bp)[:0], prefix...)
		b = append(b, `],"usage":`...)
		b = appendUsage(b, promptTokens(req), chunks)
		b = append(b, "}\n\n"...)
		*bp = b
		if !send(b) {
			return
		}
	}
	send([]byte("data: [DONE]\n\n"))
}

func (s *server) models(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, modelsBody)
}

func (s *server) view() controlView {
	return controlView{
		LatencyMs:    float64(s.cfg.latency.Load()) / 1e6,
		ChunkDelayMs: float64(s.cfg.chunkDelay.Load()) / 1e6,
		Chunks:       s.cfg.chunks.Load(),
	}
}

func (s *server) getControl(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.view())
}

func (s *server) postControl(w http.ResponseWriter, r *http.Request) {
	var u controlUpdate
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&u); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "bad control body: "+err.Error(), "")
		return
	}
	switch {
	case u.LatencyMs != nil && *u.LatencyMs < 0:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "latency_ms must be >= 0", "latency_ms")
		return
	case u.ChunkDelayMs != nil && *u.ChunkDelayMs < 0:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "chunk_delay_ms must be >= 0", "chunk_delay_ms")
		return
	case u.Chunks != nil && *u.Chunks < 0:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "chunks must be >= 0", "chunks")
		return
	}
	if u.LatencyMs != nil {
		s.cfg.latency.Store(int64(*u.LatencyMs * 1e6))
	}
	if u.ChunkDelayMs != nil {
		s.cfg.chunkDelay.Store(int64(*u.ChunkDelayMs * 1e6))
	}
	if u.Chunks != nil {
		s.cfg.chunks.Store(*u.Chunks)
	}
	s.getControl(w, r)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (port 0 picks a free port)")
	portFile := flag.String("port-file", "", "write the bound port number to this file once listening")
	latency := flag.Duration("latency", 0, "delay before the response (before the first stream chunk)")
	chunkDelay := flag.Duration("chunk-delay", 0, "delay between stream content chunks")
	chunks := flag.Int("chunks", 8, "content chunks per stream")
	flag.Parse()
	if *latency < 0 || *chunkDelay < 0 || *chunks < 0 {
		fmt.Fprintln(os.Stderr, "mockupstream: -latency, -chunk-delay and -chunks must be >= 0")
		os.Exit(2)
	}

	s := newServer(*latency, *chunkDelay, int64(*chunks))
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mockupstream:", err)
		os.Exit(1)
	}
	baseCtx, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	srv := &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	port := ln.Addr().(*net.TCPAddr).Port
	if *portFile != "" {
		if err := atomicfile.Write(*portFile, []byte(strconv.Itoa(port)+"\n")); err != nil {
			fmt.Fprintln(os.Stderr, "mockupstream: writing port file:", err)
			os.Exit(1)
		}
	}
	fmt.Fprintf(os.Stderr, "mockupstream listening on %s (latency=%s chunk-delay=%s chunks=%d)\n",
		ln.Addr(), *latency, *chunkDelay, *chunks)

	sigCtx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	select {
	case <-sigCtx.Done():
	case err := <-serveErr:
		fmt.Fprintln(os.Stderr, "mockupstream:", err)
		os.Exit(1)
	}
	// Let in-flight requests finish briefly, then cut any long streams short.
	shutCtx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		cancelBase()
		_ = srv.Close()
	}
	fmt.Fprintln(os.Stderr, "mockupstream: stopped")
}
