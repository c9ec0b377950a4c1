package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHTTPPublisher(t *testing.T) {
	var got map[string]any
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/publish" {
			http.NotFound(w, r)
			return
		}
		auth = r.Header.Get("Authorization")
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &got); err != nil {
			t.Errorf("body %q: %v", body, err)
		}
		_, _ = w.Write([]byte(`{"published":1}`))
	}))
	defer srv.Close()
	t.Setenv("MYXI_API_KEY", "k3y")
	p, err := newHTTPPublisher("ws"+strings.TrimPrefix(srv.URL, "http")+"/?batch=1", "bench")
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	body := appendBody(nil, 123, 7, 0)
	if err := p.publish(context.Background(), 7, "k3", body); err != nil {
		t.Fatal(err)
	}
	if auth != "Bearer k3y" || got["exchange"] != "bench" || got["routing_key"] != "k3" || got["event"] != "Bench" {
		t.Fatalf("auth %q, body %v", auth, got)
	}
	if payload, ok := got["payload"].(map[string]any); !ok || payload["seq"] != float64(7) {
		t.Fatalf("payload %v", got["payload"])
	}

	t.Setenv("MYXI_API_KEY", "")
	if _, err := newHTTPPublisher("ws://127.0.0.1:1/", "bench"); err == nil {
		t.Fatal("want an error without MYXI_API_KEY")
	}
}
