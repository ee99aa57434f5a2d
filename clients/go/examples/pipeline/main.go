// Command pipeline runs File Engine's fine-tuning pipeline through the Go SDK:
// validate a dataset, train on it, watch the job, then test the model: promote
// it to the fast tier and stream a completion from it.
//
//	go run ./examples/pipeline [-addr 127.0.0.1:50051] [-token T] [-ca-file CA.pem] [training-data.jsonl]
//
// Against a server started with `finetune serve --emulator`, no real training happens.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/fileengine/finetune/clients/go/finetune"
)

type config struct {
	address, token, caFile string
	dataset, suffix        string
	prompt                 string
}

func main() {
	var cfg config
	flag.StringVar(&cfg.address, "addr", envOr("FINETUNE_ADDR", "127.0.0.1:50051"), "the server's address")
	flag.StringVar(&cfg.token, "token", os.Getenv("FINETUNE_TOKEN"), "bearer token (optional)")
	flag.StringVar(&cfg.caFile, "ca-file", "", "connect with TLS, trusting this CA (PEM); plaintext without")
	flag.StringVar(&cfg.suffix, "suffix", "file-engine", "the fine-tuned model's name suffix")
	flag.StringVar(&cfg.prompt, "prompt", "Build me a landing page with dark theme", "the test prompt")
	flag.Parse()
	cfg.dataset = "training-data.jsonl"
	if flag.NArg() > 0 {
		cfg.dataset = flag.Arg(0)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "pipeline:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	var opts []finetune.Option
	if cfg.token != "" {
		opts = append(opts, finetune.WithToken(cfg.token))
	}
	if cfg.caFile != "" {
		opts = append(opts, finetune.WithCAFile(cfg.caFile))
	}
	client, err := finetune.Dial(cfg.address, opts...)
	if err != nil {
		return err
	}
	defer client.Close()

	// 1. Validate. The dataset is sent once (inline, or uploaded when large) and
	// the same source is reused for training.
	training, err := client.DatasetFromFile(ctx, cfg.dataset)
	if err != nil {
		return err
	}
	report, err := client.ValidateDataset(ctx, finetune.Source(training), nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "validate: %d examples, %d errors, %d warnings; %d epochs, %d billed tokens, estimated $%.2f\n",
		report.GetTraining().GetExamples(), report.GetErrorCount(), report.GetWarningCount(),
		report.GetEpochs(), report.GetBilledTokens(), report.GetEstimatedCostUsd())
	if report.GetErrorCount() > 0 {
		for _, p := range report.GetProblems() {
			fmt.Fprintf(out, "  %s:%d: %s[%s]: %s\n", cfg.dataset, p.GetLine(), finetune.EnumName(p.GetSeverity()), p.GetCode(), p.GetMessage())
		}
		return errors.New("the dataset has errors")
	}

	// 2. Train. The SDK generates the request id, so a retry cannot start a second job.
	started, err := client.StartTraining(ctx, &finetune.StartTrainingRequest{Training: training, Suffix: cfg.suffix})
	if err != nil {
		return err
	}
	job := started.GetJob()
	fmt.Fprintf(out, "train: job %s (request id %s)\n", job.GetId(), job.GetRequestId())

	// 3. Watch until the job ends; a dropped stream is resumed without gaps or repeats.
	watch := client.WatchJob(ctx, job.GetId(), 0)
	for ev, err := range watch.Events() {
		if err != nil {
			return err
		}
		switch ev.GetKind() {
		case finetune.JobEventKindStateChanged:
			fmt.Fprintf(out, "watch: #%d %s\n", ev.GetSequence(), finetune.EnumName(ev.GetJob().GetState()))
		case finetune.JobEventKindMetrics:
			if m := ev.GetMetrics(); m.GetStep()%10 == 0 || m.GetStep() == m.GetTotalSteps() {
				fmt.Fprintf(out, "watch: #%d step %d/%d loss %.3f\n", ev.GetSequence(), m.GetStep(), m.GetTotalSteps(), m.GetTrainLoss())
			}
		default:
			fmt.Fprintf(out, "watch: #%d %s\n", ev.GetSequence(), ev.GetMessage())
		}
	}
	final := watch.Job() // the job as of its last state change: the final snapshot
	if final.GetState() != finetune.JobStateSucceeded {
		return fmt.Errorf("job %s ended %s: %s", job.GetId(), finetune.EnumName(final.GetState()), final.GetError().GetMessage())
	}
	job = final
	fmt.Fprintf(out, "succeeded: %s (%d trained tokens, $%.2f; estimate %d tokens, $%.2f)\n",
		job.GetFineTunedModel(), job.GetTrainedTokens(), job.GetActualCostUsd(),
		job.GetEstimatedTokens(), job.GetEstimatedCostUsd())

	// 4. Test: serve the model from the fast tier and stream an answer.
	if _, err := client.PromoteModel(ctx, "fast", finetune.FromJob(job.GetId())); err != nil {
		return err
	}
	stream := client.StreamComplete(ctx, &finetune.CompleteRequest{
		Tier:     "fast",
		Messages: []*finetune.ChatMessage{{Role: finetune.ChatRoleUser, Content: cfg.prompt}},
	})
	for text, err := range stream.Text() {
		if err != nil {
			return err
		}
		fmt.Fprint(out, text)
	}
	completion := stream.Completion()
	usage := completion.GetUsage()
	fmt.Fprintf(out, "\ntest: %s on tier %s: %d prompt + %d completion tokens, $%.5f, %.0f ms\n",
		completion.GetModel(), completion.GetTier(), usage.GetPromptTokens(), usage.GetCompletionTokens(),
		completion.GetCostUsd(), completion.GetLatencyMs())
	return nil
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
