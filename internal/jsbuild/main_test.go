package main

import (
	"bytes"
	"encoding/json"
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
	t.Logf("myxi.js: %d bytes, %d gzipped (budget %d)", len(script), gzipSize(script), maxScriptSize)
	if !bytes.Contains(script, []byte(".Myxi=")) {
		t.Error("myxi.js does not define the global Myxi")
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
