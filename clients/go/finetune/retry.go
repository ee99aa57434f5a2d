package finetune

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Backoff bounds how StartTraining retries UNAVAILABLE: it waits about Initial
// before the first retry, doubling up to Max (each delay with 20% jitter, never
// above Max), or the server's RetryInfo delay when it sends one, also at most
// Max; it gives up with the last error once Budget has passed since the first
// failure, or when ctx ends (its deadline), whichever comes first.
// A zero Initial or Max takes DefaultBackoff's; a Budget of 0 never retries.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
	Budget  time.Duration
}

// DefaultBackoff is the StartTraining retry policy shared by the Go, Python
// and TypeScript SDKs: 0.2 s doubling up to 5 s, for 60 s from the first
// failure. It outlasts an ordinary server restart.
var DefaultBackoff = Backoff{Initial: 200 * time.Millisecond, Max: 5 * time.Second, Budget: time.Minute}

// Resume bounds how WatchJob resumes a dropped stream: it waits about Initial
// before the first new WatchJob, doubling up to Max (each delay with 20%
// jitter, never above Max), and gives up with the last error once Budget has
// passed since the first failure after the last event received. The clock
// starts at that failure, not at the event: a job can be quiet for longer than
// Budget (queued upstream, heartbeats only), and a drop after such a spell
// still gets the whole budget. An event resets both the delay and the budget;
// heartbeats do not, so a server that keeps accepting and dropping the stream
// without progress still ends the watch.
// A zero Initial or Max takes DefaultResume's; a Budget of 0 never resumes.
type Resume struct {
	Initial time.Duration
	Max     time.Duration
	Budget  time.Duration
}

// DefaultResume is the resume policy shared by the Go, Python and TypeScript
// SDKs: 0.2 s doubling up to 5 s, for 60 s without an event. It outlasts an
// ordinary server restart.
var DefaultResume = Resume{Initial: 200 * time.Millisecond, Max: 5 * time.Second, Budget: time.Minute}

// failures is one run of consecutive failures under a policy (Backoff and
// Resume, converted): the delays so far and when the run began.
type failures struct {
	budget time.Duration
	delays *backoff.ExponentialBackOff
	since  time.Time // the run's first failure; zero before it
}

func newFailures(initial, maxDelay, budget time.Duration) *failures {
	if initial <= 0 {
		initial = DefaultBackoff.Initial
	}
	if maxDelay <= 0 {
		maxDelay = DefaultBackoff.Max
	}
	delays := &backoff.ExponentialBackOff{
		InitialInterval:     initial,
		RandomizationFactor: 0.2,
		Multiplier:          2,
		MaxInterval:         maxDelay,
	}
	delays.Reset()
	return &failures{budget: budget, delays: delays}
}

func (b Backoff) failures() *failures { return newFailures(b.Initial, b.Max, b.Budget) }
func (r Resume) failures() *failures  { return newFailures(r.Initial, r.Max, r.Budget) }

// reset ends the run: progress was made, the next failure starts a new one.
func (f *failures) reset() {
	f.delays.Reset()
	f.since = time.Time{}
}

// wait records a failure and sleeps before the next try: the next delay, or
// asked (the server's RetryInfo) when positive, at most the policy's Max and
// the budget left. False when the budget is spent or ctx ended: give up.
func (f *failures) wait(ctx context.Context, asked time.Duration) bool {
	if f.since.IsZero() {
		f.since = time.Now()
	}
	left := f.budget - time.Since(f.since)
	if left <= 0 {
		return false
	}
	d := f.delays.NextBackOff()
	if asked > 0 {
		d = asked
	}
	return sleep(ctx, min(d, f.delays.MaxInterval, left))
}

// sleep waits d; false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
