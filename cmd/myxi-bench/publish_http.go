package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"
)

// httpPublisher publishes through a Myxi server's HTTP publish API
// (POST /api/publish), as an application without AMQP does. The API
// answers only once the broker took the event, so every publish is
// confirmed and nothing is left to wait for in finish.
type httpPublisher struct {
	client   *http.Client
	endpoint string
	key      string
	exchange string
	buf      bytes.Buffer
}

// newHTTPPublisher derives the API's address from the WebSocket URL and
// takes the key from MYXI_API_KEY (the server's variable of the same name,
// which -spawn passes on).
func newHTTPPublisher(wsURL, exchange string) (*httpPublisher, error) {
	key := os.Getenv("MYXI_API_KEY")
	if key == "" {
		return nil, errors.New("-publish http: set MYXI_API_KEY (the server's HTTP API key)")
	}
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil, fmt.Errorf("-publish http: %w", err)
	}
	u.Scheme = map[string]string{"wss": "https"}[u.Scheme]
	if u.Scheme == "" {
		u.Scheme = "http"
	}
	u.Path, u.RawQuery = "/api/publish", ""
	return &httpPublisher{
		client:   &http.Client{Timeout: 10 * time.Second},
		endpoint: u.String(),
		key:      key,
		exchange: exchange,
	}, nil
}

// publish turns the AMQP body {"event", "payload"} into the API's
// {"exchange", "routing_key", "event", "payload"} and posts it.
func (p *httpPublisher) publish(ctx context.Context, _ int64, key string, body []byte) error {
	p.buf.Reset()
	head, _ := json.Marshal(struct {
		Exchange   string `json:"exchange"`
		RoutingKey string `json:"routing_key"`
	}{p.exchange, key})
	p.buf.Write(head[:len(head)-1]) // without its closing brace
	p.buf.WriteByte(',')
	p.buf.Write(body[1:]) // without its opening brace
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.endpoint, bytes.NewReader(p.buf.Bytes()))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+p.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s: %s", p.endpoint, resp.Status, bytes.TrimSpace(answer))
	}
	return nil
}

func (p *httpPublisher) finish(context.Context) ([]int64, error) { return nil, nil }

// unroutable is unknown through the API (it does not say whether a node
// had the key bound); loss still shows in the delivery count.
func (p *httpPublisher) unroutable() int64 { return 0 }

func (p *httpPublisher) close() { p.client.CloseIdleConnections() }
