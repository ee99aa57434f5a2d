package finetune

import (
	"context"
	"errors"
	"io"
	"iter"
	"sync/atomic"

	finetunev1 "github.com/fileengine/finetune/clients/go/gen/fileengine/finetune/v1"
)

// ErrIncompleteStream is yielded by CompletionStream.Text when the stream ends
// without its final summary.
var ErrIncompleteStream = errors.New("finetune: completion stream ended without its summary")

// Complete asks a tier (or a model) for one answer and returns it with its
// accounting. It is not retried: a completion is billed each time it runs.
// The generated call is client.FineTuneServiceClient.Complete.
func (c *Client) Complete(ctx context.Context, req *CompleteRequest) (*Completion, error) {
	resp, err := c.FineTuneServiceClient.Complete(ctx, req)
	return resp.GetCompletion(), err
}

// CompletionStream is a streamed completion: range over Text for the pieces
// of text as they are generated, then Completion is the summary. It is not
// safe to range over Text from two goroutines; Stop may be called from any.
type CompletionStream struct {
	client     *Client
	ctx        context.Context
	cancel     context.CancelFunc
	req        *CompleteRequest
	started    atomic.Bool
	stopped    atomic.Bool
	completion atomic.Pointer[Completion]
}

// StreamComplete starts streaming the answer to req; nothing is sent before
// the range over Text begins.
//
//	stream := client.StreamComplete(ctx, req)
//	for text, err := range stream.Text() {
//		if err != nil {
//			return err
//		}
//		fmt.Print(text)
//	}
//	fmt.Println(stream.Completion().GetCostUsd())
//
// It is not retried: a completion is billed each time it runs. The generated
// call is client.FineTuneServiceClient.StreamComplete.
func (c *Client) StreamComplete(ctx context.Context, req *CompleteRequest) *CompletionStream {
	ctx, cancel := context.WithCancel(ctx)
	return &CompletionStream{client: c, ctx: ctx, cancel: cancel, req: req}
}

// Text yields each piece of text, in order; joined, they are the
// Completion's Text. On failure it yields one ("", err) and stops: an *Error,
// ErrIncompleteStream, or ctx's error. After Stop it ends without an error.
// A stream is ranged over once; a second range yields nothing.
func (s *CompletionStream) Text() iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		if s.started.Swap(true) {
			return
		}
		defer s.cancel()
		stream, err := s.client.FineTuneServiceClient.StreamComplete(s.ctx,
			&finetunev1.StreamCompleteRequest{Request: s.req})
		for err == nil {
			var msg *finetunev1.StreamCompleteResponse
			msg, err = stream.Recv()
			if err != nil || s.stopped.Load() {
				break
			}
			switch item := msg.GetItem().(type) {
			case *finetunev1.StreamCompleteResponse_Delta:
				if !yield(item.Delta, nil) {
					return
				}
			case *finetunev1.StreamCompleteResponse_Completion:
				s.completion.Store(item.Completion)
				return
			}
		}
		if s.stopped.Load() {
			return
		}
		if err == io.EOF {
			err = ErrIncompleteStream
		}
		yield("", err)
	}
}

// Completion is the final summary (text, model, tier, usage, cost, ...) once
// Text has ended; nil before, and after a failure or Stop.
func (s *CompletionStream) Completion() *Completion { return s.completion.Load() }

// Stop cancels the stream (and the upstream request): Text ends at once,
// without an error. Call it, or range Text to its end, to release the stream.
func (s *CompletionStream) Stop() {
	s.stopped.Store(true)
	s.cancel()
}

// StreamCompletion streams the answer to req: onDelta (which may be nil)
// receives each piece of text, and the final summary is returned. Cancel ctx
// to stop it.
//
// Deprecated: use StreamComplete, which yields the text and then has the
// Completion; StreamCompletion goes in 0.3.0.
func (c *Client) StreamCompletion(ctx context.Context, req *CompleteRequest, onDelta func(string)) (*Completion, error) {
	stream := c.StreamComplete(ctx, req)
	for text, err := range stream.Text() {
		if err != nil {
			return nil, err
		}
		if onDelta != nil {
			onDelta(text)
		}
	}
	return stream.Completion(), nil
}
