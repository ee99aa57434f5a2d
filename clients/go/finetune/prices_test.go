package finetune_test

// What a completion should cost, worked out from the repository's data/models.toml and the
// usage the service reported, without the service's price lookup: each test names the exact
// [[inference]] entry it expects the served model to bill at, so a wrong lookup (a prefix that
// matches the wrong entry, the base price applied to a fine-tuned model) fails the comparison.

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/fileengine/finetune/clients/go/finetune"
)

// modelsTOML is data/models.toml, from this package's directory (go test runs there).
var modelsTOML = filepath.Join("..", "..", "..", "data", "models.toml")

// inferenceEntry is one [[inference]] entry as written; the cache prices are nil when the
// entry leaves them out.
type inferenceEntry struct {
	Model       string   `toml:"model"`
	FineTuned   bool     `toml:"fine_tuned"`
	Input       float64  `toml:"input"`
	CachedInput *float64 `toml:"cached_input"`
	CacheWrite  *float64 `toml:"cache_write"`
	Output      float64  `toml:"output"`
}

// price is an [[inference]] entry's rates in dollars per million tokens, the cache prices
// defaulting to the input price.
type price struct {
	input, cachedInput, cacheWrite, output float64
}

// priceOf reads the [[inference]] entry for model, the fine-tuned one when fineTuned.
func priceOf(t *testing.T, model string, fineTuned bool) price {
	t.Helper()
	var doc struct {
		Inference []inferenceEntry `toml:"inference"`
	}
	if _, err := toml.DecodeFile(modelsTOML, &doc); err != nil {
		t.Fatal(err)
	}
	for _, e := range doc.Inference {
		if e.Model == model && e.FineTuned == fineTuned {
			p := price{input: e.Input, cachedInput: e.Input, cacheWrite: e.Input, output: e.Output}
			if e.CachedInput != nil {
				p.cachedInput = *e.CachedInput
			}
			if e.CacheWrite != nil {
				p.cacheWrite = *e.CacheWrite
			}
			return p
		}
	}
	t.Fatalf("no [[inference]] entry for %s (fine_tuned %v) in %s", model, fineTuned, modelsTOML)
	return price{}
}

// assertCost checks that c was served by model (a model fine-tuned from it when fineTuned)
// and cost what its usage costs at that entry's prices: plain input, cache reads, cache
// writes and output, each at its own rate.
func assertCost(t *testing.T, c *finetune.Completion, model string, fineTuned bool) {
	t.Helper()
	served := model
	if fineTuned {
		served = "ft:" + model + ":"
	}
	if !strings.HasPrefix(c.GetModel(), served) {
		t.Errorf("%s is not billed as %s", c.GetModel(), model)
		return
	}
	u := c.GetUsage()
	if u.GetPromptTokens() == 0 || u.GetCompletionTokens() == 0 {
		t.Errorf("%s: usage without prompt or completion tokens: %v", c.GetModel(), u)
		return
	}
	p := priceOf(t, model, fineTuned)
	cached, written := float64(u.GetCachedTokens()), float64(u.GetCacheWriteTokens())
	plain := float64(u.GetPromptTokens()) - cached - written
	want := (plain*p.input + cached*p.cachedInput + written*p.cacheWrite +
		float64(u.GetCompletionTokens())*p.output) / 1e6
	if math.Abs(c.GetCostUsd()-want) >= 1e-12 {
		t.Errorf("%s cost $%v for %v; data/models.toml's %s prices make it $%v", c.GetModel(), c.GetCostUsd(), u, model, want)
	}
}
