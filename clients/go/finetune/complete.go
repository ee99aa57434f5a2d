package finetune

import (
	"context"
	"errors"
	"io"

	finetunev1 "github.com/fileengine/finetune/clients/go/gen/fileengine/finetune/v1"
)

// ErrIncompleteStream is returned by StreamCompletion when the stream ends
// without its final summary.
var ErrIncompleteStream = errors.New("finetune: completion stream ended without its summary")

// StreamCompletion runs StreamComplete: onDelta (which may be nil) receives each
// piece of text as it is generated, and the final summary is returned (its Text
// is the deltas joined, with the usage and cost). It is not retried: a
// completion is billed each time it runs. Cancel ctx to stop it.
func (c *Client) StreamCompletion(ctx context.Context, req *finetunev1.CompleteRequest, onDelta func(string)) (*finetunev1.Completion, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.StreamComplete(ctx, &finetunev1.StreamCompleteRequest{Request: req})
	if err != nil {
		return nil, err
	}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return nil, ErrIncompleteStream
		}
		if err != nil {
			return nil, err
		}
		switch item := msg.GetItem().(type) {
		case *finetunev1.StreamCompleteResponse_Delta:
			if onDelta != nil {
				onDelta(item.Delta)
			}
		case *finetunev1.StreamCompleteResponse_Completion:
			return item.Completion, nil
		}
	}
}
