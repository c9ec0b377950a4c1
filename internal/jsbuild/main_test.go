package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := findRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func distDir(root string) string { return filepath.Join(root, "client-js", "dist") }

// TestDistUpToDate fails when the committed client-js/dist differs from a
// fresh build of client-js/src: someone changed the sources and forgot
// `go generate ./...`, and the server would embed the old client.
func TestDistUpToDate(t *testing.T) {
	root := repoRoot(t)
	files, err := build(root, distDir(root))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bundles {
		for _, name := range []string{b.file, b.file + ".map"} {
			if _, ok := files[name]; !ok {
				t.Errorf("the build made no %s", name)
			}
		}
	}
	// Round-trip through write, as the command does, into a scratch directory.
	tmp := t.TempDir()
	if err := write(files, tmp); err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(tmp, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("write: %s not written as built", name)
		}
	}
	if stale := compare(files, distDir(root)); len(stale) > 0 {
		t.Fatalf("client-js/dist is stale (%s): run `go generate ./...` (or go run ./internal/jsbuild) and commit the result",
			strings.Join(stale, ", "))
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	root := repoRoot(t)
	first, err := build(root, distDir(root))
	if err != nil {
		t.Fatal(err)
	}
	second, err := build(root, distDir(root))
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != len(second) {
		t.Fatalf("%d files, then %d", len(first), len(second))
	}
	for name, b := range first {
		if !bytes.Equal(b, second[name]) {
			t.Errorf("%s differs between two builds", name)
		}
	}
}

// TestSourceMapsArePortable checks that nothing depends on where the
// repository is checked out: relative sources, no sourceRoot, no absolute
// path anywhere in the output.
func TestSourceMapsArePortable(t *testing.T) {
	root := repoRoot(t)
	files, err := build(root, distDir(root))
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if bytes.Contains(content, []byte(root)) {
			t.Errorf("%s contains the absolute path %s", name, root)
		}
		if strings.HasSuffix(name, ".gz") {
			continue // TestGzipCopies: the content of a file checked here
		}
		if !strings.HasSuffix(name, ".map") {
			base := strings.TrimSuffix(name, ".map")
			if !bytes.HasSuffix(content, []byte("\n//# sourceMappingURL="+base+".map\n")) {
				t.Errorf("%s does not end with a relative sourceMappingURL", name)
			}
			continue
		}
		var m struct {
			SourceRoot     *string  `json:"sourceRoot"`
			Sources        []string `json:"sources"`
			SourcesContent []string `json:"sourcesContent"`
		}
		if err := json.Unmarshal(content, &m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if m.SourceRoot != nil && *m.SourceRoot != "" {
			t.Errorf("%s: sourceRoot %q", name, *m.SourceRoot)
		}
		if len(m.Sources) == 0 || len(m.SourcesContent) != len(m.Sources) {
			t.Errorf("%s: %d sources, %d contents", name, len(m.Sources), len(m.SourcesContent))
		}
		for _, src := range m.Sources {
			if !strings.HasPrefix(src, "../src/") || !strings.HasSuffix(src, ".ts") {
				t.Errorf("%s: source %q is not relative to the output directory", name, src)
			}
		}
	}
}

func TestScriptBudget(t *testing.T) {
	root := repoRoot(t)
	files, err := build(root, distDir(root))
	if err != nil {
		t.Fatal(err) // build fails when the script is over budget
	}
	script := files["myxi.js"]
	gz := files["myxi.js.gz"]
	t.Logf("myxi.js: %d bytes, %d gzipped (budgets %d, %d)", len(script), len(gz), maxScriptSize, maxScriptGzip)
	if len(script) > 10240 || len(gz) > 4096 {
		t.Errorf("myxi.js is %d bytes, %d gzipped: over 10,240 or 4,096", len(script), len(gz))
	}
	if !bytes.Contains(script, []byte(".Myxi=")) {
		t.Error("myxi.js does not define the global Myxi")
	}
}

// TestGzipCopies: the .gz files are the bundles, compressed with a header
// that holds no name and no time, so that two builds give the same bytes.
func TestGzipCopies(t *testing.T) {
	root := repoRoot(t)
	files, err := build(root, distDir(root))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"myxi.js", "myxi.mjs"} {
		gz, ok := files[name+".gz"]
		if !ok {
			t.Fatalf("the build made no %s.gz", name)
		}
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatalf("%s.gz: %v", name, err)
		}
		if zr.Name != "" || !zr.ModTime.IsZero() || zr.Comment != "" || zr.Extra != nil {
			t.Errorf("%s.gz header: %+v", name, zr.Header)
		}
		plain, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("%s.gz: %v", name, err)
		}
		if !bytes.Equal(plain, files[name]) {
			t.Errorf("%s.gz does not decompress to %s", name, name)
		}
		if len(gz) >= len(files[name])/2 {
			t.Errorf("%s.gz is %d bytes for %d: not compressed", name, len(gz), len(files[name]))
		}
	}
	if _, ok := files["myxi.cjs.gz"]; ok {
		t.Error("myxi.cjs.gz: only the files the server sends need a compressed copy")
	}
}

// TestCheckComparesGzipByContent: -check takes a .gz compressed another way
// (another Go release) as up to date, and one of other content, a named
// header or trailing bytes as stale.
func TestCheckComparesGzipByContent(t *testing.T) {
	root := repoRoot(t)
	files, err := build(root, distDir(root))
	if err != nil {
		t.Fatal(err)
	}
	gzipWith := func(level int, name string, body []byte) []byte {
		var buf bytes.Buffer
		zw, err := gzip.NewWriterLevel(&buf, level)
		if err != nil {
			t.Fatal(err)
		}
		zw.Name = name
		if _, err := zw.Write(body); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	js := files["myxi.js"]
	cases := []struct {
		what  string
		gz    []byte
		stale bool
	}{
		{"as built", files["myxi.js.gz"], false},
		{"another compression level", gzipWith(gzip.BestSpeed, "", js), false},
		{"an older bundle", gzipWith(gzip.BestCompression, "", js[:len(js)-1]), true},
		{"a file name in the header", gzipWith(gzip.BestCompression, "myxi.js", js), true},
		{"trailing bytes", append(append([]byte{}, files["myxi.js.gz"]...), 0), true},
		{"not gzip", js, true},
	}
	for _, c := range cases {
		dir := t.TempDir()
		if err := write(files, dir); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "myxi.js.gz"), c.gz, 0o644); err != nil {
			t.Fatal(err)
		}
		stale := compare(files, dir)
		if got := len(stale) > 0; got != c.stale {
			t.Errorf("%s: stale %v (%v), want %v", c.what, got, stale, c.stale)
		}
		if c.stale && (len(stale) != 1 || stale[0] != "myxi.js.gz") {
			t.Errorf("%s: stale files %v, want [myxi.js.gz]", c.what, stale)
		}
	}
}

func TestFindRootFromASubdirectory(t *testing.T) {
	// The test runs in internal/jsbuild, two levels below go.mod.
	root := repoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "client-js", "src", "index.ts")); err != nil {
		t.Fatalf("root %s has no client sources: %v", root, err)
	}
}

func TestRunCheck(t *testing.T) {
	root := repoRoot(t)
	stale := t.TempDir()
	if err := os.WriteFile(filepath.Join(stale, "myxi.js"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run(root, stale, true)
	if err == nil || !strings.Contains(err.Error(), "myxi.js") {
		t.Fatalf("check of a stale directory: %v", err)
	}
	// -check writes nothing.
	if b, _ := os.ReadFile(filepath.Join(stale, "myxi.js")); string(b) != "old" {
		t.Fatal("-check overwrote the file")
	}
}
