package consumer

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fileengine/finetune/clients/go/finetune"
	"github.com/fileengine/finetune/clients/go/internal/harness"
)

// modulePath is the SDK's module, as a consumer requires it.
const modulePath = "github.com/fileengine/finetune/clients/go"

// quickStartMarker is the README line before the quick start's code block.
const quickStartMarker = "<!-- consumer test: main.go -->"

var server *harness.Harness

func TestMain(m *testing.M) {
	os.Exit(harness.RunTests(m, harness.Into(&server)))
}

func TestQuickStartInAFreshModule(t *testing.T) {
	// A safety net: go mod tidy may download the dependencies.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	sdk, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	program := quickStart(t, filepath.Join(sdk, "README.md"))

	dir := t.TempDir()
	if rel, err := filepath.Rel(filepath.Dir(filepath.Dir(sdk)), dir); err != nil || !strings.HasPrefix(rel, "..") {
		t.Fatalf("the temporary module %s is inside the repository", dir)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), program, 0o600); err != nil {
		t.Fatal(err)
	}
	// The replace path relative to the consumer's go.mod, as the README writes it.
	replacement, err := filepath.Rel(dir, sdk)
	if err != nil {
		t.Fatal(err)
	}

	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		// A consumer's own settings: no workspace, go.mod updated as needed.
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "FINETUNE_ADDR="+server.Address)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("go", "mod", "init", "example.com/pipeline")
	// The README's install steps.
	run("go", "mod", "edit", "-require="+modulePath+"@v"+finetune.Version, "-replace="+modulePath+"="+replacement)
	run("go", "mod", "tidy")
	run("go", "vet", "./...")
	if out := run("gofmt", "-l", "."); out != "" {
		t.Errorf("the README's quick start is not gofmt-ed: %s", out)
	}
	run("go", "build", "-o", "pipeline", ".")
	out := run(filepath.Join(dir, "pipeline"), server.SampleDataset)

	for _, want := range []string{
		`(?m)^\d+ STATE_CHANGED `,
		`(?m)^\d+ METRICS `,
		`(?m)^trained ft:gpt-4o-2024-08-06:\S+:file-engine:\S+$`,
		`(?m)^answer from ft:gpt-4o-2024-08-06:\S+:file-engine:\S+: \S`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("the quick start's output does not match %s:\n%s", want, out)
		}
	}
}

// quickStart is the code block after quickStartMarker in the README at path.
func quickStart(t *testing.T, path string) []byte {
	t.Helper()
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(bytes.NewReader(readme))
	for lines.Scan() && lines.Text() != quickStartMarker {
	}
	if !lines.Scan() || lines.Text() != "```go" {
		t.Fatalf("%s: no ```go block after %q", path, quickStartMarker)
	}
	var program bytes.Buffer
	for lines.Scan() {
		if lines.Text() == "```" {
			return program.Bytes()
		}
		fmt.Fprintln(&program, lines.Text())
	}
	t.Fatalf("%s: the quick start's block does not end", path)
	return nil
}
