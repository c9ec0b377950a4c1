// Package examples_test runs every example of examples/ (and the README's
// and docs' command blocks) against the real server, as a user would:
// each as its own process, on free ports, with the embedded broker. The
// browser page runs in Chromium through Playwright (browser.spec.ts).
package examples_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// root is the repository's root, where commands run as the docs show.
var root = func() string {
	dir, err := filepath.Abs("..")
	if err != nil {
		panic(err)
	}
	return dir
}()

var (
	buildMu    sync.Mutex
	builds     = map[string]string{}
	binDir     string
	binDirOnce sync.Once
)

// build compiles the command at pkg (relative to root) once per run.
func build(t *testing.T, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := builds[pkg]; ok {
		return bin
	}
	binDirOnce.Do(func() {
		var err error
		if binDir, err = os.MkdirTemp("", "myxi-examples-"); err != nil {
			t.Fatal(err)
		}
	})
	bin := filepath.Join(binDir, strings.NewReplacer("/", "_", ".", "_").Replace(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	builds[pkg] = bin
	return bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// freePort returns a port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// proc is a running command, its output (stdout and stderr) collected by
// line.
type proc struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced when a line arrives or the process ends
	exited  bool
	err     error
}

// start runs name with args in root's directory, with the environment
// plus env, in its own process group: stopping it at the end of the test
// stops its children too (go run's program, a shell's background jobs).
func start(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: filepath.Base(name), cmd: cmd, stdin: stdin, changed: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	go func() {
		err := cmd.Wait()
		_ = w.Close()
		<-scanned
		p.mu.Lock()
		p.exited, p.err = true, err
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("output of %s:\n%s", p.name, p.output())
		}
	})
	return p
}

// stop sends SIGTERM to the process group, then SIGKILL after 10 s.
func (p *proc) stop() {
	_ = p.stdin.Close()
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	deadline := time.After(10 * time.Second)
	for {
		p.mu.Lock()
		exited, changed := p.exited, p.changed
		p.mu.Unlock()
		if exited {
			// Children that outlived their parent (background jobs).
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			return
		}
		select {
		case <-changed:
		case <-deadline:
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			deadline = time.After(10 * time.Second)
		}
	}
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// waitLine waits for a line matching re after the first `from` lines and
// returns its submatches and the index after it.
func (p *proc) waitLine(re *regexp.Regexp, from int, timeout time.Duration) ([]string, int) {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		for i := from; i < len(p.lines); i++ {
			if m := re.FindStringSubmatch(p.lines[i]); m != nil {
				p.mu.Unlock()
				return m, i + 1
			}
		}
		from = len(p.lines)
		exited, err, changed := p.exited, p.err, p.changed
		p.mu.Unlock()
		if exited {
			p.t.Fatalf("%s exited (%v) before printing a line matching %q", p.name, err, re)
		}
		select {
		case <-changed:
		case <-deadline:
			p.t.Fatalf("%s printed no line matching %q in %v", p.name, re, timeout)
		}
	}
}

// waitExit waits for the process to end and returns its error.
func (p *proc) waitExit(timeout time.Duration) error {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		exited, err, changed := p.exited, p.err, p.changed
		p.mu.Unlock()
		if exited {
			return err
		}
		select {
		case <-changed:
		case <-deadline:
			p.t.Fatalf("%s still running after %v", p.name, timeout)
		}
	}
}

// waitReady polls base/readyz until it answers 200.
func waitReady(t *testing.T, base string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s/readyz not ready after %v (last: %v)", base, timeout, errors.Join(err, ctx.Err()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// publish POSTs one event to a server's HTTP API.
func publish(t *testing.T, base, key, body string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/api/publish", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("publish: HTTP %d %s", resp.StatusCode, answer)
	}
}

func base(port int) string { return fmt.Sprintf("http://127.0.0.1:%d", port) }
