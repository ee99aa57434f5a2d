package finetune

import (
	"context"
	"errors"
	"io"
	"iter"
	"time"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	finetunev1 "github.com/fileengine/finetune/clients/go/gen/fileengine/finetune/v1"
)

// ErrWatchEnded is returned by Watch when the server kept ending the stream
// before the job finished until the resume budget ran out.
var ErrWatchEnded = errors.New("finetune: watch stream ended before the job finished")

// Resume bounds how Watch resumes a dropped stream: it waits about Initial
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

// backoff is the delay sequence of one run of failures.
func (r Resume) backoff() *backoff.ExponentialBackOff {
	if r.Initial <= 0 {
		r.Initial = DefaultResume.Initial
	}
	if r.Max <= 0 {
		r.Max = DefaultResume.Max
	}
	b := &backoff.ExponentialBackOff{
		InitialInterval:     r.Initial,
		RandomizationFactor: 0.2,
		Multiplier:          2,
		MaxInterval:         r.Max,
	}
	b.Reset()
	return b
}

// Watch follows a job's events after sequence after (0: from the first event)
// until the job ends, yielding each event exactly once, in sequence order. The
// last event is the JOB_EVENT_KIND_STATE_CHANGED one whose Job is in a terminal
// state (see Terminal); if the job had already ended with no events after
// after, there are none.
//
// When the stream drops (UNAVAILABLE, which is also how grpc-go reports a cut
// connection, or a clean end before the job's terminal event), Watch calls
// WatchJob again with after_sequence = the last sequence yielded, after a
// backoff, and goes on (WithResume; DefaultResume survives a restart of the
// server). Heartbeats and the stream's opening snapshot are not yielded
// (GetJob returns the snapshot).
//
// On failure Watch yields one (nil, err) and stops: an *Error (anything but
// UNAVAILABLE at once, UNAVAILABLE once the budget is spent), ErrWatchEnded,
// or ctx's error when ctx ends. Breaking out of the loop closes the stream.
//
//	for ev, err := range client.Watch(ctx, jobID, 0) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(ev.GetSequence(), ev.GetMessage())
//	}
func (c *Client) Watch(ctx context.Context, jobID string, after uint64) iter.Seq2[*finetunev1.JobEvent, error] {
	return func(yield func(*finetunev1.JobEvent, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w := watch{client: c, jobID: jobID, last: after}
		delays := c.resume.backoff()
		var failingSince time.Time // the first failure since the last event
		for {
			progressed, done, err := w.follow(ctx, yield)
			switch {
			case done:
				return
			case ctx.Err() != nil:
				yield(nil, ctx.Err())
				return
			case !resumable(err):
				yield(nil, err)
				return
			}
			if progressed {
				delays.Reset()
			}
			if progressed || failingSince.IsZero() {
				failingSince = time.Now()
			}
			left := c.resume.Budget - time.Since(failingSince)
			if left <= 0 {
				yield(nil, err)
				return
			}
			if !sleep(ctx, min(delays.NextBackOff(), delays.MaxInterval, left)) {
				yield(nil, ctx.Err())
				return
			}
		}
	}
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

// watch is one Watch call's position in the job's event log.
type watch struct {
	client *Client
	jobID  string
	last   uint64 // the last sequence yielded
}

// follow reads one WatchJob stream from w.last. done means the iteration is
// over: the job ended or the consumer stopped. Otherwise err says why the
// stream ended, and progressed whether it yielded anything first.
func (w *watch) follow(ctx context.Context, yield func(*finetunev1.JobEvent, error) bool) (progressed, done bool, err error) {
	stream, err := w.client.WatchJob(ctx, &finetunev1.WatchJobRequest{JobId: w.jobID, AfterSequence: w.last})
	if err != nil {
		return false, false, err
	}
	finished := false // the snapshot shows a job that has already ended
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			// A clean end is final only for a finished job; before that it is a drop.
			return progressed, finished, ErrWatchEnded
		}
		if err != nil {
			return progressed, false, err
		}
		switch item := msg.GetItem().(type) {
		case *finetunev1.WatchJobResponse_Snapshot:
			finished = Terminal(item.Snapshot.GetState())
		case *finetunev1.WatchJobResponse_Event:
			ev := item.Event
			if ev.GetSequence() <= w.last {
				continue // already yielded before a resume
			}
			if ctx.Err() != nil {
				// Messages already received can still arrive after a cancellation: stop now.
				return progressed, false, ctx.Err()
			}
			w.last = ev.GetSequence()
			progressed = true
			if !yield(ev, nil) {
				return true, true, nil
			}
			if ev.GetKind() == finetunev1.JobEventKind_JOB_EVENT_KIND_STATE_CHANGED && Terminal(ev.GetJob().GetState()) {
				return true, true, nil
			}
		}
	}
}

// resumable reports whether a watch that failed with err may call WatchJob again.
func resumable(err error) bool {
	return errors.Is(err, ErrWatchEnded) || status.Code(err) == codes.Unavailable
}
