package examples_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/myxi/myxi/internal/testutil"
)

const apiKey = "examples-api-key-0123456789abcdef"

// TestGoExample: examples/go, the README's Go program: authenticated
// users subscribe to the widgets they may see, and its pushes arrive.
func TestGoExample(t *testing.T) {
	bin := build(t, "./examples/go")
	port := freePort(t)
	start(t, []string{fmt.Sprintf("MYXI_PORT=%d", port), "MYXI_BIND_ADDRESS=127.0.0.1"}, bin, "-every", "100ms")
	waitReady(t, base(port), 30*time.Second)
	ws := fmt.Sprintf("ws://127.0.0.1:%d/", port)

	anonymous := testutil.Dial(t, ws)
	anonymous.Send("SayHello", "h", nil)
	anonymous.ExpectError("AuthRequired")
	anonymous.Send("Subscribe", "s", map[string]any{"exchange": "widgets", "routing_key": "42"})
	anonymous.ExpectError("SubscriptionDenied")

	alice := testutil.Dial(t, ws)
	alice.Send("Authenticate", "a", map[string]string{"session_token": "nope"})
	alice.ExpectError("InvalidSessionToken")
	alice.Send("Authenticate", "a", map[string]string{"session_token": "alice-token"})
	if ev := alice.Expect("Authenticated"); ev.Str("username") != "alice" {
		t.Fatalf("Authenticated: %s", ev.Raw)
	}
	alice.Send("SayHello", "h", nil)
	if ev := alice.Expect("Hello"); ev.Str("username") != "alice" || string(ev.Tag) != `"h"` {
		t.Fatalf("Hello: %s", ev.Raw)
	}
	alice.Subscribe("widgets", "42")
	ev := alice.Expect("WidgetQtyChanged")
	if ev.MQ == nil || ev.MQ.RK != "42" || len(ev.Payload["quantity"]) == 0 || ev.MQ.O == nil || ev.MQ.EP == "" {
		t.Fatalf("push (recorded, with its position): %s", ev.Raw)
	}
	// History: alice comes back from the position of the last event she
	// saw and gets the ones pushed meanwhile, replayed.
	watcher := testutil.Dial(t, ws)
	watcher.Send("Authenticate", "a", map[string]string{"session_token": "alice-token"})
	watcher.Expect("Authenticated")
	watcher.Subscribe("widgets", "42")
	_ = alice.Conn.Close()
	for { // until alice has missed at least two pushes
		if w := watcher.Expect("WidgetQtyChanged"); w.MQ != nil && w.MQ.O != nil && *w.MQ.O >= *ev.MQ.O+2 {
			break
		}
	}
	back := testutil.Dial(t, ws)
	back.Send("Authenticate", "a", map[string]string{"session_token": "alice-token"})
	back.Expect("Authenticated")
	back.Send("Subscribe", "s", map[string]any{"exchange": "widgets", "routing_key": "42", "since": map[string]any{"offset": *ev.MQ.O, "epoch": ev.MQ.EP}})
	sub := back.Expect("Subscribed")
	var upTo uint64
	if string(sub.Payload["recovered"]) != "true" || json.Unmarshal(sub.Payload["offset"], &upTo) != nil || upTo <= *ev.MQ.O {
		t.Fatalf("Subscribed with since: %s, want recovered past offset %d", sub.Raw, *ev.MQ.O)
	}
	if next := back.Expect("WidgetQtyChanged"); next.MQ == nil || next.MQ.O == nil || *next.MQ.O <= *ev.MQ.O || *next.MQ.O > upTo {
		t.Fatalf("first replayed event: %s, want an offset in (%d, %d]", next.Raw, *ev.MQ.O, upTo)
	}

	bob := testutil.Dial(t, ws)
	bob.Send("Authenticate", "a", map[string]string{"session_token": "bob-token"})
	bob.Expect("Authenticated")
	bob.Send("Subscribe", "s", map[string]any{"exchange": "widgets", "routing_key": "43"}) // alice's private widget
	bob.ExpectError("SubscriptionDenied")

	// A second copy on the same port: the listen error comes back from
	// WaitReady, and the program fails saying why.
	again := start(t, []string{fmt.Sprintf("MYXI_PORT=%d", port), "MYXI_BIND_ADDRESS=127.0.0.1"}, bin)
	if err := again.waitExit(30 * time.Second); err == nil {
		t.Fatal("a second server on the same port exited 0")
	}
	if out := again.output(); !strings.Contains(out, "address already in use") {
		t.Fatalf("port in use, output:\n%s", out)
	}
}

// server runs the standalone server (go run ./server) with args and env.
func server(t *testing.T, env []string, args ...string) (port int) {
	t.Helper()
	port = freePort(t)
	env = append(env, fmt.Sprintf("MYXI_PORT=%d", port), "MYXI_BIND_ADDRESS=127.0.0.1")
	start(t, env, build(t, "./server"), args...)
	waitReady(t, base(port), 30*time.Second)
	return port
}

// TestNodeExamples: examples/node, the client from Node as an ES module
// and from CommonJS, with the package of this checkout and ws.
func TestNodeExamples(t *testing.T) {
	if _, err := os.Stat(filepath.Join(root, "node_modules", "ws")); err != nil {
		t.Fatal("the Node examples need the root's npm dependencies: run `npm ci` in the repository root (make deps)")
	}
	port := server(t, []string{"MYXI_API_KEY=" + apiKey}, "-exchanges", "widgets")
	for _, script := range []string{"examples/node/subscribe.mjs", "examples/node/subscribe.cjs"} {
		t.Run(filepath.Base(script), func(t *testing.T) {
			p := start(t, nil, "node", script, fmt.Sprintf("ws://127.0.0.1:%d/", port))
			_, next := p.waitLine(regexp.MustCompile(`^subscribed to widgets/42$`), 0, 20*time.Second)
			publish(t, base(port), apiKey, `{"exchange":"widgets","routing_key":"42","event":"WidgetQtyChanged","payload":{"quantity":5}}`)
			p.waitLine(regexp.MustCompile(`^WidgetQtyChanged \{"quantity":5\}$`), next, 10*time.Second)
		})
	}
}

// TestAnyLanguageQuickStart: examples/any-language, the quick start of
// docs/any-language.md: a token minted with Python's standard library,
// the webhooks of webhook.py, the configuration myxi.toml.
func TestAnyLanguageQuickStart(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatal("python3 is needed for the any-language examples")
	}
	hookPort := freePort(t)
	hooks := start(t, []string{fmt.Sprintf("PORT=%d", hookPort)}, "python3", "examples/any-language/webhook.py")
	hooks.waitLine(regexp.MustCompile(`^webhooks on http://localhost:\d+$`), 0, 10*time.Second)

	// The configuration as shipped, with the webhooks' port of this run.
	toml, err := os.ReadFile(filepath.Join(root, "examples/any-language/myxi.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(toml), "localhost:3000") {
		t.Fatal("myxi.toml no longer points at webhook.py's default port 3000")
	}
	config := filepath.Join(t.TempDir(), "myxi.toml")
	if err := os.WriteFile(config, []byte(strings.ReplaceAll(string(toml), "localhost:3000", fmt.Sprintf("localhost:%d", hookPort))), 0o600); err != nil {
		t.Fatal(err)
	}
	const jwtSecret = "examples-jwt-secret-0123456789abcdef0123456789abcdef"
	port := server(t, []string{"MYXI_API_KEY=" + apiKey, "MYXI_JWT_SECRET=" + jwtSecret}, "-config", config)

	mint := exec.Command("python3", "examples/any-language/mint_jwt.py", "alice", "widgets=1,2,9*", "news=*")
	mint.Dir, mint.Env = root, append(os.Environ(), "MYXI_JWT_SECRET="+jwtSecret)
	out, err := mint.Output()
	if err != nil {
		t.Fatalf("mint_jwt.py: %v", err)
	}
	token := strings.TrimSpace(string(out))

	c := testutil.Dial(t, fmt.Sprintf("ws://127.0.0.1:%d/", port))
	c.Send("SayHello", "h", nil)
	c.ExpectError("AuthRequired") // auth_required = true
	c.Send("Authenticate", "a", map[string]string{"token": token})
	if ev := c.Expect("Authenticated"); ev.Str("username") != "alice" {
		t.Fatalf("Authenticated: %s", ev.Raw)
	}
	c.Send("SayHello", "h", map[string]string{"name": "Bob"})
	if ev := c.Expect("Hello"); ev.Str("text") != "Hello, Bob" || string(ev.Tag) != `"h"` {
		t.Fatalf("SayHello through webhook.py: %s", ev.Raw)
	}
	c.Subscribe("widgets", "90") // granted by "9*"
	c.Send("Subscribe", "s", map[string]any{"exchange": "widgets", "routing_key": "3"})
	c.ExpectError("SubscriptionDenied")
	c.Subscribe("orders", "alice-1") // webhook.py decides
	c.Send("Subscribe", "s", map[string]any{"exchange": "orders", "routing_key": "bob-1"})
	c.ExpectError("SubscriptionDenied")
	c.Subscribe("news", "")

	publish(t, base(port), apiKey, `{"exchange":"widgets","routing_key":"90","event":"WidgetQtyChanged","payload":{"quantity":5}}`)
	if ev := c.Expect("WidgetQtyChanged"); string(ev.Payload["quantity"]) != "5" {
		t.Fatalf("event: %s", ev.Raw)
	}
	publish(t, base(port), apiKey, `{"exchange":"orders","routing_key":"alice-1","event":"OrderShipped","payload":{}}`)
	c.Expect("OrderShipped")
}

// shellBlock returns the first ```sh block after heading in a Markdown
// file, as commands (continuation lines joined).
func shellBlock(t *testing.T, file, heading string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, file))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	i := strings.Index(text, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("%s: no heading %q", file, heading)
	}
	text = text[i:]
	j := strings.Index(text, "```sh\n")
	if j < 0 {
		t.Fatalf("%s: no sh block after %q", file, heading)
	}
	text = text[j+len("```sh\n"):]
	text = text[:strings.Index(text, "```")]
	var cmds []string
	current := ""
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		current += line + "\n"
		if !strings.HasSuffix(line, "\\") {
			cmds = append(cmds, current)
			current = ""
		}
	}
	return cmds
}

// shell is one bash reading commands from its stdin, as a terminal would
// run them pasted one by one.
type shell struct {
	*proc
	next int
	n    int
}

func newShell(t *testing.T, env []string) *shell {
	return &shell{proc: start(t, env, "bash", "--norc", "--noprofile")}
}

// run runs one command and, unless it runs in the background, waits for
// it and checks that it succeeded.
func (s *shell) run(cmd string, timeout time.Duration) {
	s.t.Helper()
	s.n++
	background := strings.HasSuffix(strings.TrimSpace(stripComment(cmd)), "&")
	if _, err := fmt.Fprint(s.stdin, cmd); err != nil {
		s.t.Fatal(err)
	}
	if background {
		return
	}
	fmt.Fprintf(s.stdin, "echo \"@@ %d exit $?\"\n", s.n)
	m, next := s.waitLine(regexp.MustCompile(fmt.Sprintf(`@@ %d exit (\d+)$`, s.n)), s.next, timeout)
	if m[1] != "0" {
		s.t.Fatalf("command failed (exit %s):\n%s", m[1], cmd)
	}
	s.next = next
}

func stripComment(cmd string) string {
	if i := strings.Index(cmd, "  #"); i >= 0 {
		return cmd[:i]
	}
	return cmd
}

// TestREADMEAnyLanguageBlock: the README's block under "Use it from any
// language" runs top to bottom as written (on a free port instead of
// 5005), and both of its publishes reach a subscribed client.
func TestREADMEAnyLanguageBlock(t *testing.T) {
	cmds := shellBlock(t, "README.md", "## Use it from any language")
	port := freePort(t)
	sh := newShell(t, []string{fmt.Sprintf("MYXI_PORT=%d", port)})
	var c *testutil.Client
	published := 0
	for _, cmd := range cmds {
		cmd = strings.ReplaceAll(cmd, "localhost:5005", fmt.Sprintf("localhost:%d", port))
		sh.run(cmd, 3*time.Minute) // go run compiles
		switch {
		case strings.Contains(cmd, "go run ./server -exchanges widgets &"):
			waitReady(t, base(port), 3*time.Minute)
			c = testutil.Dial(t, fmt.Sprintf("ws://127.0.0.1:%d/", port))
			c.Subscribe("widgets", "42")
		case strings.Contains(cmd, "/api/publish"), strings.Contains(cmd, "go run ./server push"):
			if c == nil {
				t.Fatalf("a publish before the server started:\n%s", cmd)
			}
			if ev := c.Expect("WidgetQtyChanged"); string(ev.Payload["quantity"]) != "5" {
				t.Fatalf("after %q: %s", cmd, ev.Raw)
			}
			published++
		}
	}
	if published != 2 {
		t.Fatalf("the block published %d events, want 2 (curl and push)", published)
	}
	if !strings.Contains(sh.output(), `{"published":1}`) {
		t.Fatalf("curl's answer missing:\n%s", sh.output())
	}
}

// TestMakeRun: `make run` prints an API key and the curl and push lines,
// and both publish to it.
func TestMakeRun(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make is needed")
	}
	run := start(t, []string{"MYXI_PORT=0", "MYXI_BIND_ADDRESS=127.0.0.1"}, "make", "--no-print-directory", "run")
	m, next := run.waitLine(regexp.MustCompile(`^Myxi is listening on http://localhost:(\d+) `), 0, 3*time.Minute)
	port := m[1]
	curl, next := run.waitLine(regexp.MustCompile(`^\s+(curl .*/api/publish)$`), next, 10*time.Second)
	push, _ := run.waitLine(regexp.MustCompile(`^\s+(MYXI_URL=.* go run ./server push .*)$`), next, 10*time.Second)

	c := testutil.Dial(t, "ws://127.0.0.1:"+port+"/")
	c.Subscribe("widgets", "42")
	sh := newShell(t, nil)
	sh.run(curl[1]+"\n", time.Minute)
	c.Expect("WidgetQtyChanged")
	sh.run(push[1]+"\n", 3*time.Minute)
	if ev := c.Expect("WidgetQtyChanged"); string(ev.Payload["quantity"]) != "5" {
		t.Fatalf("event: %s", ev.Raw)
	}
	var answer map[string]int
	for _, line := range strings.Split(sh.output(), "\n") {
		if json.Unmarshal([]byte(line), &answer) == nil && answer["published"] == 1 {
			return
		}
	}
	t.Fatalf("curl's answer missing:\n%s", sh.output())
}

// TestLicense: MIT, as myxi 1.x, in the repository and in the npm package.
func TestLicense(t *testing.T) {
	license, err := os.ReadFile(filepath.Join(root, "LICENSE"))
	if err != nil || !strings.HasPrefix(string(license), "MIT License") || !strings.Contains(string(license), "The Myxi authors") {
		t.Fatalf("LICENSE: %v %.40q", err, license)
	}
	var pkg struct {
		License string `json:"license"`
	}
	data, err := os.ReadFile(filepath.Join(root, "package.json"))
	if err != nil || json.Unmarshal(data, &pkg) != nil || pkg.License != "MIT" {
		t.Fatalf("package.json license %q (%v)", pkg.License, err)
	}
}

// TestDocsQuickStart: docs/any-language.md's quick start names the files
// TestAnyLanguageQuickStart runs, and no webhook it relies on is missing.
func TestDocsQuickStart(t *testing.T) {
	cmds := strings.Join(shellBlock(t, "docs/any-language.md", "## Quick start"), "")
	for _, want := range []string{"python3 examples/any-language/webhook.py &", "go run ./server -config examples/any-language/myxi.toml", "openssl rand -hex 32"} {
		if !strings.Contains(cmds, want) {
			t.Errorf("the quick start lacks %q:\n%s", want, cmds)
		}
	}
	toml, err := os.ReadFile(filepath.Join(root, "examples/any-language/myxi.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, url := range regexp.MustCompile(`http://localhost:3000(/\S*)"`).FindAllStringSubmatch(string(toml), -1) {
		script, _ := os.ReadFile(filepath.Join(root, "examples/any-language/webhook.py"))
		if !strings.Contains(string(script), `"`+url[1]+`"`) {
			t.Errorf("myxi.toml points at %s, which webhook.py does not answer", url[1])
		}
	}
}

// TestGoVersion: go.mod asks for the language version the code and its
// dependencies need, not a patch release that would bump a user's
// module, and the README says the same.
func TestGoVersion(t *testing.T) {
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (1\.(\d+))(\.(\d+))?$`).FindStringSubmatch(string(mod))
	if m == nil || (m[4] != "" && m[4] != "0") {
		t.Fatalf("go.mod's go line %q: want go 1.N or go 1.N.0", m)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "Go (" + m[1] + " or later)"; !strings.Contains(string(readme), want) {
		t.Fatalf("README.md does not say %q", want)
	}
}
