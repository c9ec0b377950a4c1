package myxi

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
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
// the global Myxi; myxi.mjs, the ES module; their source maps and type
// declarations), for applications that serve it themselves.
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
		sum := sha256.Sum256(body)
		ct := mime.TypeByExtension(path.Ext(name))
		if strings.HasSuffix(name, ".js") || strings.HasSuffix(name, ".mjs") {
			ct = "text/javascript; charset=utf-8"
		} else if strings.HasSuffix(name, ".map") {
			ct = "application/json; charset=utf-8"
		}
		assets["/"+name] = asset{body: body, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, contentType: ct}
	}
	return assets
}

func isClientAsset(p string) bool {
	_, ok := clientAssets[p]
	return ok
}

// serveClientAsset serves an embedded file with an ETag; clients
// revalidate (cheaply, 304) so a new server version is picked up at once.
func serveClientAsset(c echo.Context, p string) error {
	a := clientAssets[p]
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, a.contentType)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "public, max-age=0, must-revalidate")
	h.Set("X-Content-Type-Options", "nosniff")
	if match := c.Request().Header.Get("If-None-Match"); match != "" && strings.Contains(match, a.etag) {
		return c.NoContent(http.StatusNotModified)
	}
	if c.Request().Method == http.MethodHead {
		return c.NoContent(http.StatusOK)
	}
	return c.Blob(http.StatusOK, a.contentType, a.body)
}
