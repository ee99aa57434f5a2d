// Package harness runs the SDK's tests against the real service: the Rust
// crate's sdk_harness example (cargo build --example sdk_harness), which starts
// the server in emulator mode behind a TCP proxy that can cut every connection.
// Started with Secure, the server requires bearer tokens and speaks TLS.
package harness

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Harness is a running sdk_harness.
type Harness struct {
	Address       string `json:"address"`        // the proxy: what the SDK dials
	DirectAddress string `json:"direct_address"` // the server itself, not cut
	Control       string `json:"control"`        // http://host:port: /cut, /restart, /connections, /faults, /upstream_jobs
	SampleDataset string `json:"sample_dataset"` // examples/training-data.jsonl (13 valid examples)

	// With Secure: TLS is true, CAFile is the PEM of the CA that signed the server's
	// certificate (for "localhost" and "127.0.0.1"), Token has every role and
	// ReadToken only "read". Without it they are false and empty.
	TLS       bool   `json:"tls"`
	CAFile    string `json:"ca_file"`
	Token     string `json:"token"`
	ReadToken string `json:"read_token"`

	cmd   *exec.Cmd
	stdin io.Closer
	log   *os.File
}

// Option changes how Start runs the harness.
type Option func(*options)

type options struct{ secure bool }

// Secure runs the harness with --secure: the server requires tokens and speaks
// TLS (through the same cuttable proxy); see the TLS, CAFile, Token and
// ReadToken fields.
func Secure(o *options) { o.secure = true }

// Setup is one harness for RunTests to start: into *Into, with Options.
type Setup struct {
	Into    **Harness
	Options []Option
}

// Into is the Setup of a harness started with opts into *h.
func Into(h **Harness, opts ...Option) Setup { return Setup{Into: h, Options: opts} }

// RunTests is a TestMain body: it starts the harnesses (concurrently), runs the
// tests, stops the harnesses and returns the exit code.
func RunTests(m *testing.M, setups ...Setup) int {
	started := make([]*Harness, len(setups))
	errs := make([]error, len(setups))
	var wg sync.WaitGroup
	for i, setup := range setups {
		wg.Go(func() { started[i], errs[i] = Start(setup.Options...) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(os.Stderr, "sdk harness:", err)
		for _, h := range started {
			if h != nil {
				h.Stop(false)
			}
		}
		return 1
	}
	for i, setup := range setups {
		*setup.Into = started[i]
	}
	code := m.Run()
	for _, h := range started {
		h.Stop(code != 0)
	}
	return code
}

// Binary is $FINETUNE_HARNESS, or target/debug/examples/sdk_harness in the repository.
func Binary() string {
	if path := os.Getenv("FINETUNE_HARNESS"); path != "" {
		return path
	}
	_, file, _, _ := runtime.Caller(0) // .../clients/go/internal/harness/harness.go
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "target", "debug", "examples", "sdk_harness")
}

// Start runs the harness and waits for its address line.
func Start(opts ...Option) (*Harness, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var args []string
	if o.secure {
		args = append(args, "--secure")
	}
	log, err := os.CreateTemp("", "finetune-sdk-harness-*.log")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(Binary(), args...)
	cmd.Stderr = log
	// The harness exits when its stdin closes, so it cannot outlive a crashed test.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w (build it with `cargo build --example sdk_harness` or set FINETUNE_HARNESS)", err)
	}
	h := &Harness{cmd: cmd, stdin: stdin, log: log}

	line := make(chan []byte, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadBytes('\n')
		line <- l
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case l := <-line:
		if err := json.Unmarshal(l, h); err != nil || h.Address == "" {
			h.Stop(true)
			return nil, fmt.Errorf("unexpected first line %q: %v", l, err)
		}
		if o.secure && (!h.TLS || h.CAFile == "" || h.Token == "" || h.ReadToken == "") {
			h.Stop(true)
			return nil, fmt.Errorf("--secure, but the first line %q has no TLS, CA file or tokens (rebuild: cargo build --example sdk_harness)", l)
		}
	case <-time.After(2 * time.Minute): // a safety net: it starts in about a second
		h.Stop(true)
		return nil, fmt.Errorf("no address line after 2 minutes")
	}
	return h, nil
}

// Stop closes the harness's stdin and waits for it to exit (killing it after a
// safety net). With failed, its log is kept and its path printed.
func (h *Harness) Stop(failed bool) {
	_ = h.stdin.Close()
	done := make(chan struct{})
	go func() { _ = h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = h.cmd.Process.Kill()
		<-done
	}
	_ = h.log.Close()
	if failed {
		fmt.Fprintln(os.Stderr, "sdk harness log:", h.log.Name())
	} else {
		_ = os.Remove(h.log.Name())
	}
}

// Cut closes every open proxied connection (open streams fail with
// UNAVAILABLE) and returns how many there were.
func (h *Harness) Cut(t testing.TB) int {
	t.Helper()
	var answer struct {
		Cut int `json:"cut"`
	}
	h.control(t, http.MethodPost, "/cut", &answer)
	return answer.Cut
}

// Restart stops the server (it drains, open proxied connections are cut, new
// ones are refused: clients see UNAVAILABLE) and returns once it is down; the
// server starts again on the same address and data after down.
func (h *Harness) Restart(t testing.TB, down time.Duration) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"down_ms": down.Milliseconds()})
	if err != nil {
		t.Fatal(err)
	}
	var answer struct {
		Stopped bool `json:"stopped"`
	}
	h.send(t, http.MethodPost, "/restart", body, &answer)
	if !answer.Stopped {
		t.Fatal("POST /restart: the server did not stop")
	}
}

// Accepted is the number of connections the proxy has accepted so far.
func (h *Harness) Accepted(t testing.TB) int {
	t.Helper()
	var answer struct {
		Open     int `json:"open"`
		Accepted int `json:"accepted"`
	}
	h.control(t, http.MethodGet, "/connections", &answer)
	return answer.Accepted
}

// Inject fails the next emulator requests to route ("METHOD /v1/path") with the
// fault kind ("malformed_json", "lost_response", "latency" with "ms", ...);
// fields may set "times" (default 1) and the kind's own fields.
func (h *Harness) Inject(t testing.TB, route, kind string, fields map[string]any) {
	t.Helper()
	rule := map[string]any{"route": route, "kind": kind}
	for k, v := range fields {
		rule[k] = v
	}
	body, err := json.Marshal(rule)
	if err != nil {
		t.Fatal(err)
	}
	var answer map[string]any
	h.send(t, http.MethodPost, "/faults", body, &answer)
}

// ClearFaults removes every injected fault not yet used.
func (h *Harness) ClearFaults(t testing.TB) {
	t.Helper()
	var answer map[string]any
	h.control(t, http.MethodDelete, "/faults", &answer)
}

// UpstreamJobs is the ids of the jobs the emulated OpenAI holds for requestID.
func (h *Harness) UpstreamJobs(t testing.TB, requestID string) []string {
	t.Helper()
	var answer struct {
		ByRequest map[string][]string `json:"by_request"`
	}
	h.control(t, http.MethodGet, "/upstream_jobs", &answer)
	return answer.ByRequest[requestID]
}

func (h *Harness) control(t testing.TB, method, path string, answer any) {
	t.Helper()
	h.send(t, method, path, nil, answer)
}

func (h *Harness) send(t testing.TB, method, path string, body []byte, answer any) {
	t.Helper()
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, h.Control+path, reader)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s", method, path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(answer); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
}
