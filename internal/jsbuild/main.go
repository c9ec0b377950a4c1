// Command jsbuild builds the JavaScript client with esbuild's Go API: the
// TypeScript in client-js/src becomes the committed bundles in
// client-js/dist, which the server embeds and npm ships.
//
//	go run ./internal/jsbuild            # from anywhere inside the repository
//	go run ./internal/jsbuild -check     # fail if client-js/dist is stale
//
// It writes, with a source map each:
//
//	myxi.js   minified IIFE defining the global Myxi, for <script src="/myxi.js">
//	myxi.mjs  ES module, for <script type="module"> and npm's "import"
//	myxi.cjs  CommonJS, for npm's "require"
//
// and the gzip-compressed copies that the server sends to browsers that
// accept gzip, so that no request pays for compressing them:
//
//	myxi.js.gz, myxi.mjs.gz
//
// Type declarations come from tsc (npm run build:types), not from here:
// esbuild strips types without checking them.
//
// The output is deterministic: the same sources give the same bytes (the
// gzip header carries no name and no time), and the source maps name the
// sources relative to the output directory, so the committed files do not
// depend on where or when the repository is built. -check compares a .gz by
// its header and decompressed content rather than its bytes, so that a Go
// release whose compressor picks other bytes does not make it fail.
package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/evanw/esbuild/pkg/api"
)

// The budget of the minified script, as sent and gzipped: a page pays for
// it before anything else happens (issue 11: room for the liveness and
// recovery work, no more).
const (
	maxScriptSize = 10 * 1024
	maxScriptGzip = 4 * 1024
)

// gzipped are the bundles the server also serves compressed.
var gzipped = []string{"myxi.js", "myxi.mjs"}

type bundle struct {
	file   string
	entry  string // in client-js/src
	format api.Format
	minify bool
}

var bundles = []bundle{
	// global.ts assigns the global Myxi itself: an object literal costs less
	// than esbuild's namespace helpers for a GlobalName.
	{"myxi.js", "global.ts", api.FormatIIFE, true},
	{"myxi.mjs", "index.ts", api.FormatESModule, false},
	{"myxi.cjs", "index.ts", api.FormatCommonJS, false},
}

func main() {
	root := flag.String("root", "", "repository root (default: the nearest directory above the working directory holding go.mod)")
	out := flag.String("out", "", "output directory (default: ROOT/client-js/dist)")
	check := flag.Bool("check", false, "write nothing; exit 1 if the output directory differs from a fresh build")
	flag.Parse()

	if err := run(*root, *out, *check); err != nil {
		fmt.Fprintln(os.Stderr, "jsbuild:", err)
		os.Exit(1)
	}
}

func run(root, outDir string, check bool) error {
	if root == "" {
		var err error
		if root, err = findRoot(); err != nil {
			return err
		}
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	if outDir == "" {
		outDir = filepath.Join(root, "client-js", "dist")
	}
	if outDir, err = filepath.Abs(outDir); err != nil {
		return err
	}
	files, err := build(root, outDir)
	if err != nil {
		return err
	}
	if check {
		if stale := compare(files, outDir); len(stale) > 0 {
			return fmt.Errorf("%s is stale (%s): rebuild it with go run ./internal/jsbuild", outDir, strings.Join(stale, ", "))
		}
		return nil
	}
	if err := write(files, outDir); err != nil {
		return err
	}
	fmt.Printf("jsbuild: wrote %d files to %s; myxi.js is %d bytes, %d gzipped\n",
		len(files), outDir, len(files["myxi.js"]), len(files["myxi.js.gz"]))
	return nil
}

// build bundles the client once per format and returns the
// output files by name, with source maps relative to outDir. It writes
// nothing, so that a test can compare its result with the committed files.
func build(root, outDir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, b := range bundles {
		opts := api.BuildOptions{
			AbsWorkingDir: root,
			EntryPoints:   []string{filepath.Join("client-js", "src", b.entry)},
			Tsconfig:      filepath.Join(root, "tsconfig.json"),
			Outfile:       filepath.Join(outDir, b.file),
			Bundle:        true,
			Format:        b.format,
			Platform:      api.PlatformNeutral,
			Target:        api.ES2020,
			Sourcemap:     api.SourceMapLinked,
			LogLevel:      api.LogLevelSilent,
			Write:         false,
		}
		if b.minify {
			opts.MinifyWhitespace = true
			opts.MinifyIdentifiers = true
			opts.MinifySyntax = true
			// Members named _x are internal by convention (and stripped from
			// the type declarations): renaming them is safe and saves a
			// good part of the script.
			opts.MangleProps = "^_"
		}
		result := api.Build(opts)
		if len(result.Errors) > 0 {
			msgs := api.FormatMessages(result.Errors, api.FormatMessagesOptions{Kind: api.ErrorMessage})
			return nil, errors.New(strings.TrimSpace(strings.Join(msgs, "")))
		}
		if len(result.Warnings) > 0 {
			// A warning in this small code base is a bug waiting to happen.
			msgs := api.FormatMessages(result.Warnings, api.FormatMessagesOptions{Kind: api.WarningMessage})
			return nil, errors.New(strings.TrimSpace(strings.Join(msgs, "")))
		}
		for _, f := range result.OutputFiles {
			files[filepath.Base(f.Path)] = f.Contents
		}
	}
	for _, name := range gzipped {
		gz, err := compress(files[name])
		if err != nil {
			return nil, fmt.Errorf("gzip %s: %w", name, err)
		}
		files[name+".gz"] = gz
	}
	if n := len(files["myxi.js"]); n > maxScriptSize {
		return nil, fmt.Errorf("myxi.js is %d bytes, over its budget of %d", n, maxScriptSize)
	}
	if n := len(files["myxi.js.gz"]); n > maxScriptGzip {
		return nil, fmt.Errorf("myxi.js is %d bytes gzipped, over its budget of %d", n, maxScriptGzip)
	}
	return files, nil
}

// compress gzips b at the best level with a header that names no file and
// no time (the zero ModTime is written as 0), so the bytes depend on b alone.
func compress(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// compare returns the names of the files whose copy in dir is missing or differs.
func compare(files map[string][]byte, dir string) []string {
	var stale []string
	for _, name := range sortedNames(files) {
		have, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !same(name, have, files[name]) {
			stale = append(stale, name)
		}
	}
	return stale
}

// same tells whether have is an up-to-date copy of the built file want. A
// .gz is up to date when its header is as compress writes it and it
// decompresses to what want does.
func same(name string, have, want []byte) bool {
	if !strings.HasSuffix(name, ".gz") {
		return bytes.Equal(have, want)
	}
	h, err := gunzip(have)
	if err != nil {
		return false
	}
	w, err := gunzip(want)
	return err == nil && bytes.Equal(h, w)
}

// gunzip decompresses a single-member gzip file whose header carries no
// name, comment, extra field or time.
func gunzip(b []byte) ([]byte, error) {
	r := bytes.NewReader(b) // an io.ByteReader: gzip reads no further than the member
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, err
	}
	zr.Multistream(false)
	if h := zr.Header; h.Name != "" || h.Comment != "" || h.Extra != nil || !h.ModTime.IsZero() {
		return nil, errors.New("gzip header names a file, a comment, an extra field or a time")
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		return nil, err
	}
	// Anything after the member (another member, garbage) is not what compress writes.
	if r.Len() != 0 {
		return nil, errors.New("trailing data after the gzip member")
	}
	return out, nil
}

func write(files map[string][]byte, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range sortedNames(files) {
		if err := os.WriteFile(filepath.Join(dir, name), files[name], 0o644); err != nil {
			return err
		}
	}
	return nil
}

func sortedNames(files map[string][]byte) []string {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// findRoot walks up from the working directory to the directory holding
// go.mod, so that `go generate` (which runs in the package's directory) and a
// plain `go run` from anywhere in the tree build the same thing.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory; pass -root")
		}
		dir = parent
	}
}
