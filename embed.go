package myxi

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// The JavaScript client is built from client-js/src by esbuild (run
// `go generate`), and the result is committed, so Go users need no Node.
//
//go:generate go run ./internal/jsbuild
//go:embed client-js/dist
var clientDist embed.FS

// ClientFiles is the built JavaScript client (myxi.js, the IIFE exposing
// the global Myxi; myxi.mjs, the ES module; their gzipped copies
// myxi.js.gz and myxi.mjs.gz; their source maps and type declarations), for
// applications that serve it themselves.
func ClientFiles() fs.FS {
	sub, err := fs.Sub(clientDist, "client-js/dist")
	if err != nil {
		return clientDist // unreachable: the directory is embedded
	}
	return sub
}

type asset struct {
	body        []byte
	etag        string
	contentType string
	// The gzipped copy that jsbuild made, if any: compressed once at build
	// time, so that no request pays for it.
	gzip     []byte
	gzipETag string
}

// clientAssets are the files served at the root, keyed by URL path.
var clientAssets = loadClientAssets()

func loadClientAssets() map[string]asset {
	assets := map[string]asset{}
	for _, name := range []string{"myxi.js", "myxi.js.map", "myxi.mjs", "myxi.mjs.map"} {
		body, err := fs.ReadFile(ClientFiles(), name)
		if err != nil {
			continue
		}
		ct := mime.TypeByExtension(path.Ext(name))
		if strings.HasSuffix(name, ".js") || strings.HasSuffix(name, ".mjs") {
			ct = "text/javascript; charset=utf-8"
		} else if strings.HasSuffix(name, ".map") {
			ct = "application/json; charset=utf-8"
		}
		a := asset{body: body, etag: etagOf(body), contentType: ct}
		// Each encoding has its own ETag (of its own bytes): a cache must
		// not answer a gzip request with a 304 for the identity copy.
		if gz, err := fs.ReadFile(ClientFiles(), name+".gz"); err == nil {
			a.gzip, a.gzipETag = gz, etagOf(gz)
		}
		assets["/"+name] = a
	}
	return assets
}

func etagOf(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}

func isClientAsset(p string) bool {
	_, ok := clientAssets[p]
	return ok
}

// serveClientAsset serves an embedded file with an ETag; clients
// revalidate (cheaply, 304) so a new server version is picked up at once.
// A file with a gzipped copy is sent compressed to a client that accepts
// gzip, and says that the answer varies with Accept-Encoding; unless a
// compressing middleware around it (echo's Gzip, in an application that
// mounts Myxi) has said so already: it compresses what it gets, and would
// compress the gzipped copy again.
func serveClientAsset(c echo.Context, p string) error {
	a := clientAssets[p]
	r := c.Request()
	h := c.Response().Header()
	body, etag, encoding := a.body, a.etag, ""
	if a.gzip != nil && !variesWithEncoding(h) {
		h.Add("Vary", "Accept-Encoding")
		if acceptsGzip(r.Header.Values("Accept-Encoding")) {
			body, etag, encoding = a.gzip, a.gzipETag, "gzip"
		}
	}
	h.Set(echo.HeaderContentType, a.contentType)
	h.Set("ETag", etag)
	h.Set("Cache-Control", "public, max-age=0, must-revalidate")
	h.Set("X-Content-Type-Options", "nosniff")
	if match := r.Header.Get("If-None-Match"); match != "" && (match == "*" || strings.Contains(match, etag)) {
		return c.NoContent(http.StatusNotModified)
	}
	if encoding != "" {
		h.Set("Content-Encoding", encoding)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return c.NoContent(http.StatusOK)
	}
	return c.Blob(http.StatusOK, a.contentType, body)
}

func variesWithEncoding(h http.Header) bool {
	for _, v := range h.Values("Vary") {
		for _, name := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(name), "Accept-Encoding") {
				return true
			}
		}
	}
	return false
}

// acceptsGzip tells whether Accept-Encoding values (RFC 9110 §12.5.3) let
// the answer be gzipped: gzip (or x-gzip) listed with a non-zero weight,
// or else "*" with one. A missing header means no preference, which gets
// the identity copy: some clients that send none cannot decode gzip.
func acceptsGzip(values []string) bool {
	gzipQ, anyQ := -1.0, -1.0
	for _, value := range values {
		for value != "" {
			var item string
			item, value, _ = strings.Cut(value, ",")
			name, params, _ := strings.Cut(item, ";")
			q := weight(params)
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "gzip", "x-gzip":
				gzipQ = max(gzipQ, q)
			case "*":
				anyQ = max(anyQ, q)
			}
		}
	}
	if gzipQ >= 0 {
		return gzipQ > 0
	}
	return anyQ > 0
}

// weight is the q parameter of an Accept-Encoding item's parameters: 1
// when absent, 0 when malformed (a client that garbles it is not trusted
// to decode gzip).
func weight(params string) float64 {
	for params != "" {
		var param string
		param, params, _ = strings.Cut(params, ";")
		k, v, _ := strings.Cut(param, "=")
		if !strings.EqualFold(strings.TrimSpace(k), "q") {
			continue
		}
		q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(q >= 0 && q <= 1) { // NaN too
			return 0
		}
		return q
	}
	return 1
}
