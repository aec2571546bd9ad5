package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// sseStreamer runs OpenAI Chat Completions streams over HTTP server-sent events.
type sseStreamer struct {
	client *http.Client
	url    string
	body   []byte
	auth   string
}

// sseChunk is the part of a chat.completion.chunk (or an error event) that streamload reads.
type sseChunk struct {
	Choices []struct {
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Error json.RawMessage `json:"error"`
}

func newSSEStreamer(cfg config) (*sseStreamer, error) {
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	type streamOptions struct {
		IncludeUsage bool `json:"include_usage"`
	}
	body, err := json.Marshal(struct {
		Model         string        `json:"model"`
		Messages      []message     `json:"messages"`
		Stream        bool          `json:"stream"`
		StreamOptions streamOptions `json:"stream_options"`
	}{cfg.model, []message{{"user", cfg.prompt}}, true, streamOptions{true}})
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy: nil, // never route benchmark traffic through an environment proxy
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          cfg.concurrency + 16,
		MaxIdleConnsPerHost:   cfg.concurrency,
		MaxConnsPerHost:       cfg.concurrency,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	s := &sseStreamer{
		client: &http.Client{Transport: tr},
		url:    strings.TrimRight(cfg.addr, "/") + "/v1/chat/completions",
		body:   body,
	}
	if cfg.apiKey != "" {
		s.auth = "Bearer " + cfg.apiKey
	}
	return s, nil
}

func (s *sseStreamer) close() { s.client.CloseIdleConnections() }

// transportKey names a transport failure: TIMEOUT when the stream's deadline passed, CANCELED when
// the run was interrupted, TRANSPORT otherwise.
func transportKey(ctx context.Context, err error) string {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return "TIMEOUT"
	case errors.Is(ctx.Err(), context.Canceled):
		return "CANCELED"
	}
	return "TRANSPORT"
}

var (
	dataPrefix = []byte("data:")
	doneMarker = []byte("[DONE]")
)

func (s *sseStreamer) stream(ctx context.Context, _ int, firstText func()) streamResult {
	var res streamResult
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(s.body))
	if err != nil {
		res.fail("REQUEST", err.Error())
		return res
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if s.auth != "" {
		req.Header.Set("Authorization", s.auth)
	}

	clk := textClock{start: time.Now(), res: &res, firstText: firstText}
	resp, err := s.client.Do(req)
	if err != nil {
		res.fail(transportKey(ctx, err), err.Error())
		return res
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		res.fail("HTTP_"+strconv.Itoa(resp.StatusCode), strings.TrimSpace(string(snippet)))
		return res
	}

	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 8<<20)
	done := false
	for sc.Scan() {
		data, ok := bytes.CutPrefix(sc.Bytes(), dataPrefix)
		if !ok {
			continue // blank separators, comments, event: and id: lines
		}
		now := time.Now()
		data = bytes.TrimPrefix(data, []byte(" "))
		if bytes.Equal(data, doneMarker) {
			done = true
			break
		}
		var ch sseChunk
		if err := json.Unmarshal(data, &ch); err != nil {
			res.fail("BAD_CHUNK", err.Error()+": "+truncate(string(data), 200))
			return res
		}
		if len(ch.Error) > 0 && string(ch.Error) != "null" {
			res.fail("STREAM_ERROR", truncate(string(ch.Error), 500))
			return res
		}
		if len(ch.Choices) > 0 && ch.Choices[0].Delta.Content != "" {
			clk.text(now)
		}
	}
	if err := sc.Err(); err != nil {
		res.fail(transportKey(ctx, err), err.Error())
		return res
	}
	if !done {
		res.fail("NO_DONE", "the stream ended without data: [DONE]")
		return res
	}
	// Read what is left (normally nothing) so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return res
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
