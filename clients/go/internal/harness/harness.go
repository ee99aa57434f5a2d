// Package harness runs the SDK's tests against the real service: the Rust
// crate's sdk_harness example (cargo build --example sdk_harness), which starts
// the server in emulator mode behind a TCP proxy that can cut every connection.
package harness

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// Harness is a running sdk_harness.
type Harness struct {
	Address       string `json:"address"`        // the proxy: what the SDK dials
	DirectAddress string `json:"direct_address"` // the server itself, not cut
	Control       string `json:"control"`        // http://host:port: POST /cut, GET /connections
	SampleDataset string `json:"sample_dataset"` // examples/training-data.jsonl (13 valid examples)

	cmd   *exec.Cmd
	stdin io.Closer
	log   *os.File
}

// RunTests is a TestMain body: it starts a harness into *h, runs the tests,
// stops the harness and returns the exit code.
func RunTests(m *testing.M, h **Harness) int {
	started, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sdk harness:", err)
		return 1
	}
	*h = started
	code := m.Run()
	started.Stop(code != 0)
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
func Start() (*Harness, error) {
	log, err := os.CreateTemp("", "finetune-sdk-harness-*.log")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(Binary())
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

func (h *Harness) control(t testing.TB, method, path string, answer any) {
	t.Helper()
	req, err := http.NewRequest(method, h.Control+path, nil)
	if err != nil {
		t.Fatal(err)
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
