package finetune

import (
	"context"
	"errors"
	"io"
	"iter"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	finetunev1 "github.com/fileengine/finetune/clients/go/gen/fileengine/finetune/v1"
)

// ErrWatchEnded is yielded by JobWatch.Events when the server kept ending the
// stream before the job finished until the resume budget ran out.
var ErrWatchEnded = errors.New("finetune: watch stream ended before the job finished")

// JobWatch follows a job's events: range over Events; Job, Resumes and
// LastSequence tell where it is (safe to call from any goroutine, as is Stop).
// Events is ranged over once; a second range yields nothing.
type JobWatch struct {
	client  *Client
	ctx     context.Context
	cancel  context.CancelFunc
	jobID   string
	started atomic.Bool
	stopped atomic.Bool
	job     atomic.Pointer[Job]
	pending *Job // the latest stream's snapshot, until an event shows it
	resumes atomic.Int64
	last    atomic.Uint64 // the last sequence yielded
}

// WatchJob follows the events of the job jobID after sequence after (0: from
// the first event) until the job ends; nothing is sent before the range over
// Events begins.
//
//	w := client.WatchJob(ctx, jobID, 0)
//	for ev, err := range w.Events() {
//		if err != nil {
//			return err
//		}
//		fmt.Println(ev.GetSequence(), ev.GetMessage())
//	}
//	fmt.Println(finetune.EnumName(w.Job().GetState()))
//
// The generated call is client.FineTuneServiceClient.WatchJob.
func (c *Client) WatchJob(ctx context.Context, jobID string, after uint64) *JobWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &JobWatch{client: c, ctx: ctx, cancel: cancel, jobID: jobID}
	w.last.Store(after)
	return w
}

// Job is the latest snapshot of the job the watch has received (each stream
// opens with one, each state change carries one): nil before the first event,
// the final snapshot after the last. Its state is never behind the events
// yielded, and can be ahead of them while they are replayed (watching a
// finished job from 0, say).
func (w *JobWatch) Job() *Job { return w.job.Load() }

// offer makes job the Job when it is at least as recent: a snapshot shows the
// job after its event LastSequence, and a later one replaces an earlier.
func (w *JobWatch) offer(job *Job) {
	if current := w.job.Load(); job != nil && (current == nil || job.GetLastSequence() >= current.GetLastSequence()) {
		w.job.Store(job)
	}
}

// Resumes counts the times the watch called WatchJob again after a dropped
// stream.
func (w *JobWatch) Resumes() int { return int(w.resumes.Load()) }

// LastSequence is the sequence of the last event yielded (after, before the
// first): the position to watch from again.
func (w *JobWatch) LastSequence() uint64 { return w.last.Load() }

// Stop ends the watch: Events ends at once, without an error, and the stream
// is closed. The job goes on (CancelJob cancels it). Call it, or range Events
// to its end, to release the watch.
func (w *JobWatch) Stop() {
	w.stopped.Store(true)
	w.cancel()
}

// Events yields each event of the job once, in sequence order. The last event
// is the JobEventKindStateChanged one whose Job is in a terminal state (see
// Terminal); if the job had already ended with no events after after, there
// are none. Heartbeats and the stream's opening snapshot are not yielded
// (GetJob returns the job).
//
// When the stream drops (UNAVAILABLE, which is also how grpc-go reports a cut
// connection, or a clean end before the job's terminal event), the watch calls
// WatchJob again with after_sequence = LastSequence, after a backoff, and goes
// on (WithResume; DefaultResume survives a restart of the server).
//
// On failure Events yields one (nil, err) and stops: an *Error (anything but
// UNAVAILABLE at once, UNAVAILABLE once the budget is spent), ErrWatchEnded,
// or ctx's error when ctx ends. After Stop it ends without an error. Breaking
// out of the loop closes the stream.
func (w *JobWatch) Events() iter.Seq2[*JobEvent, error] {
	return func(yield func(*JobEvent, error) bool) {
		if w.started.Swap(true) {
			return
		}
		defer w.cancel()
		failed := w.client.resume.failures()
		for {
			progressed, done, err := w.follow(yield)
			switch {
			case done, w.stopped.Load():
				return
			case w.ctx.Err() != nil:
				yield(nil, w.ctx.Err())
				return
			case !resumable(err):
				yield(nil, err)
				return
			}
			if progressed {
				failed.reset()
			}
			if !failed.wait(w.ctx, 0) {
				switch {
				case w.stopped.Load():
				case w.ctx.Err() != nil:
					yield(nil, w.ctx.Err())
				default:
					yield(nil, err) // the budget is spent
				}
				return
			}
			w.resumes.Add(1)
		}
	}
}

// follow reads one WatchJob stream from LastSequence. done means the iteration
// is over: the job ended or the consumer stopped. Otherwise err says why the
// stream ended, and progressed whether it yielded anything first.
func (w *JobWatch) follow(yield func(*JobEvent, error) bool) (progressed, done bool, err error) {
	stream, err := w.client.FineTuneServiceClient.WatchJob(w.ctx,
		&finetunev1.WatchJobRequest{JobId: w.jobID, AfterSequence: w.last.Load()})
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
			w.pending = item.Snapshot
		case *finetunev1.WatchJobResponse_Event:
			ev := item.Event
			if ev.GetSequence() <= w.last.Load() {
				continue // already yielded before a resume
			}
			if w.ctx.Err() != nil {
				// Messages already received can still arrive after a cancellation: stop now.
				return progressed, false, w.ctx.Err()
			}
			w.last.Store(ev.GetSequence())
			w.offer(w.pending)
			w.offer(ev.GetJob())
			w.pending = nil
			progressed = true
			if !yield(ev, nil) {
				return true, true, nil
			}
			if ev.GetKind() == JobEventKindStateChanged && Terminal(ev.GetJob().GetState()) {
				return true, true, nil
			}
		}
	}
}

// resumable reports whether a watch that failed with err may call WatchJob again.
func resumable(err error) bool {
	return errors.Is(err, ErrWatchEnded) || status.Code(err) == codes.Unavailable
}

// Watch follows a job's events; see WatchJob and JobWatch.Events.
//
// Deprecated: use WatchJob(ctx, jobID, after).Events(), whose JobWatch also
// has the latest Job, the Resumes and a Stop; Watch goes in 0.3.0.
func (c *Client) Watch(ctx context.Context, jobID string, after uint64) iter.Seq2[*JobEvent, error] {
	return c.WatchJob(ctx, jobID, after).Events()
}
