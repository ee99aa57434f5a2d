package main

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fileengine/finetune/clients/go/internal/harness"
)

// server is plaintext and open; secured requires tokens and speaks TLS.
var server, secured *harness.Harness

func TestMain(m *testing.M) {
	os.Exit(harness.RunTests(m, harness.Into(&server), harness.Into(&secured, harness.Secure)))
}

// The example runs the whole pipeline against the real service.
func TestPipeline(t *testing.T) {
	t.Run("plaintext", func(t *testing.T) {
		testPipeline(t, config{address: server.Address, dataset: server.SampleDataset})
	})
	// -token and -ca-file: the same pipeline with a token, over TLS.
	t.Run("secure", func(t *testing.T) {
		testPipeline(t, config{address: secured.Address, token: secured.Token, caFile: secured.CAFile,
			dataset: secured.SampleDataset})
	})
}

func testPipeline(t *testing.T, cfg config) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute) // a safety net
	defer cancel()
	cfg.suffix, cfg.prompt = "example", "Build me a landing page with dark theme"
	var out strings.Builder
	err := run(ctx, cfg, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{
		`(?m)^validate: 13 examples, 0 errors, \d+ warnings; 7 epochs, 123844 billed tokens, estimated \$3\.10$`,
		`(?m)^train: job job-\S+ \(request id [0-9a-f-]{36}\)$`,
		`(?m)^watch: #\d+ SUCCEEDED$`,
		`(?m)^succeeded: ft:gpt-4o-2024-08-06:\S+:example:\S+ \(\d+ trained tokens, \$\d+\.\d\d; estimate 123844 tokens, \$3\.10\)$`,
		`(?m)^test: ft:gpt-4o-2024-08-06:\S+:example:\S+ on tier fast: `,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("output does not match %s:\n%s", want, out.String())
		}
	}
}
