package myxi

import (
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// getAsset runs serveClientAsset for one request, with the given headers.
func getAsset(t *testing.T, method, p string, header map[string][]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, p, nil)
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	rec := httptest.NewRecorder()
	if err := serveClientAsset(echo.New().NewContext(req, rec), p); err != nil {
		t.Fatalf("%s %s: %v", method, p, err)
	}
	return rec.Result()
}

func readBody(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gunzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not gzip: %v", err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return plain
}

// TestClientAssetGzip: /myxi.js and /myxi.mjs go out gzipped to a client
// that accepts gzip (issue 15: 7.9 KB went out uncompressed), as they are
// to one that does not, each encoding with its own ETag.
func TestClientAssetGzip(t *testing.T) {
	for _, p := range []string{"/myxi.js", "/myxi.mjs"} {
		plain, err := fs.ReadFile(ClientFiles(), strings.TrimPrefix(p, "/"))
		if err != nil {
			t.Fatal(err)
		}

		gz := getAsset(t, http.MethodGet, p, map[string][]string{"Accept-Encoding": {"gzip, deflate, br, zstd"}})
		body := readBody(t, gz)
		if gz.StatusCode != http.StatusOK || gz.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("%s with gzip accepted: %d, Content-Encoding %q", p, gz.StatusCode, gz.Header.Get("Content-Encoding"))
		}
		if !bytes.Equal(gunzipBytes(t, body), plain) {
			t.Errorf("%s: the gzipped body is not the file", p)
		}
		if len(body) >= len(plain)/2 {
			t.Errorf("%s: %d bytes gzipped for %d", p, len(body), len(plain))
		}
		if gz.Header.Get("Content-Length") != strconv.Itoa(len(body)) {
			t.Errorf("%s: Content-Length %q for %d bytes", p, gz.Header.Get("Content-Length"), len(body))
		}

		id := getAsset(t, http.MethodGet, p, nil)
		if id.StatusCode != http.StatusOK || id.Header.Get("Content-Encoding") != "" || !bytes.Equal(readBody(t, id), plain) {
			t.Errorf("%s without Accept-Encoding: %d, Content-Encoding %q", p, id.StatusCode, id.Header.Get("Content-Encoding"))
		}

		for _, resp := range []*http.Response{gz, id} {
			if got := resp.Header.Values("Vary"); len(got) != 1 || got[0] != "Accept-Encoding" {
				t.Errorf("%s: Vary %q", p, got)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/javascript; charset=utf-8" {
				t.Errorf("%s: Content-Type %q", p, ct)
			}
		}
		gzTag, idTag := gz.Header.Get("ETag"), id.Header.Get("ETag")
		if gzTag == "" || idTag == "" || gzTag == idTag {
			t.Fatalf("%s: ETags %q (gzip) and %q (identity): want two different ones", p, gzTag, idTag)
		}

		// Revalidation, per encoding.
		cases := []struct {
			what   string
			header map[string][]string
			status int
		}{
			{"gzip, its own ETag", map[string][]string{"Accept-Encoding": {"gzip"}, "If-None-Match": {gzTag}}, http.StatusNotModified},
			{"identity, its own ETag", map[string][]string{"If-None-Match": {idTag}}, http.StatusNotModified},
			{"gzip, the identity ETag", map[string][]string{"Accept-Encoding": {"gzip"}, "If-None-Match": {idTag}}, http.StatusOK},
			{"identity, the gzip ETag", map[string][]string{"If-None-Match": {gzTag}}, http.StatusOK},
			{"gzip, a list holding its weak ETag", map[string][]string{"Accept-Encoding": {"gzip"}, "If-None-Match": {`"x", W/` + gzTag}}, http.StatusNotModified},
			{"gzip, an old ETag", map[string][]string{"Accept-Encoding": {"gzip"}, "If-None-Match": {`"0123"`}}, http.StatusOK},
		}
		for _, c := range cases {
			resp := getAsset(t, http.MethodGet, p, c.header)
			body := readBody(t, resp)
			if resp.StatusCode != c.status {
				t.Errorf("%s, %s: %d, want %d", p, c.what, resp.StatusCode, c.status)
			}
			if resp.StatusCode == http.StatusNotModified {
				if len(body) != 0 || resp.Header.Get("Content-Encoding") != "" {
					t.Errorf("%s, %s: a 304 with %d bytes, Content-Encoding %q", p, c.what, len(body), resp.Header.Get("Content-Encoding"))
				}
				if resp.Header.Get("Vary") != "Accept-Encoding" || resp.Header.Get("ETag") == "" {
					t.Errorf("%s, %s: a 304 without Vary or ETag", p, c.what)
				}
			}
		}

		head := getAsset(t, http.MethodHead, p, map[string][]string{"Accept-Encoding": {"gzip"}})
		if b := readBody(t, head); head.StatusCode != http.StatusOK || len(b) != 0 ||
			head.Header.Get("Content-Encoding") != "gzip" || head.Header.Get("ETag") != gzTag ||
			head.Header.Get("Content-Length") != strconv.Itoa(len(body)) {
			t.Errorf("%s HEAD: %d, %d bytes, headers %v", p, head.StatusCode, len(b), head.Header)
		}
	}
}

// TestClientAssetSourceMapsNotCompressed: only the bundles have gzipped
// copies; a source map goes out as it is, without Vary.
func TestClientAssetSourceMapsNotCompressed(t *testing.T) {
	resp := getAsset(t, http.MethodGet, "/myxi.js.map", map[string][]string{"Accept-Encoding": {"gzip"}})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "" || resp.Header.Get("Vary") != "" {
		t.Errorf("/myxi.js.map: %d, Content-Encoding %q, Vary %q", resp.StatusCode, resp.Header.Get("Content-Encoding"), resp.Header.Get("Vary"))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("/myxi.js.map: Content-Type %q", ct)
	}
}

// TestEmbeddedGzipIsTheBundle: the embedded .gz files decompress to the
// embedded bundles, so the two encodings never serve different clients.
func TestEmbeddedGzipIsTheBundle(t *testing.T) {
	for _, name := range []string{"myxi.js", "myxi.mjs"} {
		a := clientAssets["/"+name]
		if a.gzip == nil {
			t.Fatalf("%s has no gzipped copy embedded: run go run ./internal/jsbuild", name)
		}
		if !bytes.Equal(gunzipBytes(t, a.gzip), a.body) {
			t.Errorf("%s.gz is stale: run go run ./internal/jsbuild", name)
		}
	}
	if isClientAsset("/myxi.js.gz") {
		t.Error("/myxi.js.gz is served as a file of its own: the server negotiates the encoding of /myxi.js")
	}
}

func TestClientAssetAcceptsGzip(t *testing.T) {
	cases := []struct {
		values []string
		want   bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"gzip"}, true},
		{[]string{"GZip"}, true},
		{[]string{"x-gzip"}, true},
		{[]string{"gzip, deflate, br"}, true},
		{[]string{"br", "gzip;q=0.5"}, true}, // several header lines
		{[]string{"deflate, br"}, false},
		{[]string{"identity"}, false},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip; q=0.000"}, false},
		{[]string{"gzip;q=0, *"}, false}, // refused by name: "*" does not override
		{[]string{"*"}, true},
		{[]string{"*;q=0"}, false},
		{[]string{"br, *;q=0.1"}, true},
		{[]string{"gzip;q=garbage"}, false},
		{[]string{"gzip;q=NaN"}, false},
		{[]string{"gzip;q=2"}, false},
		{[]string{"gzip;level=9;q=1"}, true},
		{[]string{",,, gzip ;; ,"}, true},
		{[]string{";gzip"}, false}, // a parameter, not a coding
		{[]string{strings.Repeat("x, ", 100000) + "gzip"}, true},
	}
	for _, c := range cases {
		if got := acceptsGzip(c.values); got != c.want {
			name := strings.Join(c.values, " | ")
			if len(name) > 60 {
				name = name[:60] + "…"
			}
			t.Errorf("acceptsGzip(%q) = %v, want %v", name, got, c.want)
		}
	}
}

// TestClientAssetUnderEchoGzip: an application that mounts Myxi behind
// echo's Gzip middleware gets the script compressed once, not twice.
func TestClientAssetUnderEchoGzip(t *testing.T) {
	plain, err := fs.ReadFile(ClientFiles(), "myxi.js")
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	e.Use(middleware.Gzip())
	e.GET("/myxi.js", func(c echo.Context) error { return serveClientAsset(c, "/myxi.js") })
	for _, accept := range []string{"gzip", ""} {
		req := httptest.NewRequest(http.MethodGet, "/myxi.js", nil)
		if accept != "" {
			req.Header.Set("Accept-Encoding", accept)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		resp := rec.Result()
		body := readBody(t, resp)
		if accept != "" {
			if resp.Header.Get("Content-Encoding") != "gzip" {
				t.Fatalf("Content-Encoding %q", resp.Header.Get("Content-Encoding"))
			}
			body = gunzipBytes(t, body)
		}
		if !bytes.Equal(body, plain) {
			t.Errorf("Accept-Encoding %q: the body, decoded once, is not myxi.js (compressed twice?)", accept)
		}
		if got := resp.Header.Values("Vary"); len(got) != 1 {
			t.Errorf("Accept-Encoding %q: Vary %q", accept, got)
		}
	}
}
