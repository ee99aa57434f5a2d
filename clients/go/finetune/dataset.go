package finetune

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/proto"

	finetunev1 "github.com/fileengine/finetune/clients/go/gen/fileengine/finetune/v1"
)

// UploadChunkSize is the size of the chunks UploadDataset sends.
const UploadChunkSize = 1 << 20

// Dataset is what ValidateDataset checks: a file, Path, or a source already
// made, Source.
type Dataset interface {
	source(ctx context.Context, c *Client) (*DatasetSource, error)
}

// Path is the JSONL file at a path as a Dataset, sent as DatasetFromFile sends
// it: inline up to the inline limit, uploaded above.
//
//	client.ValidateDataset(ctx, finetune.Path("training-data.jsonl"), nil)
type Path string

func (p Path) source(ctx context.Context, c *Client) (*DatasetSource, error) {
	return c.DatasetFromFile(ctx, string(p))
}

type source struct{ src *DatasetSource }

func (s source) source(context.Context, *Client) (*DatasetSource, error) { return s.src, nil }

// Source is a DatasetSource (from DatasetFromFile, say, to validate and then
// train without sending the file twice) as a Dataset.
func Source(src *DatasetSource) Dataset { return source{src} }

// DatasetFromFile returns the JSONL file at path as a DatasetSource for
// ValidateDataset (through Source) or StartTraining: its bytes inline when it
// is at most the inline limit (WithInlineLimit, 8 MiB by default), otherwise
// the dataset_id of the file uploaded with UploadDataset. Reuse the result to
// validate and then train without uploading twice.
func (c *Client) DatasetFromFile(ctx context.Context, path string) (*DatasetSource, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	name := filepath.Base(path)
	if info.Size() <= c.inlineLimit {
		content, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		return &DatasetSource{Source: &finetunev1.DatasetSource_Content{Content: content}, FileName: name}, nil
	}
	uploaded, err := c.UploadDataset(ctx, path)
	if err != nil {
		return nil, err
	}
	return &DatasetSource{
		Source:   &finetunev1.DatasetSource_DatasetId{DatasetId: uploaded.GetDatasetId()},
		FileName: name,
	}, nil
}

// ValidateDataset validates dataset (a Path or a Source) as training data and
// returns the report. opts may be nil; otherwise it sets the other fields
// (model, epochs, validation dataset, accepted problems, ...) and its Training
// is ignored. A dataset with errors is not a failed call: the report lists
// them (ErrorCount, Problems). The generated call is
// client.FineTuneServiceClient.ValidateDataset.
func (c *Client) ValidateDataset(ctx context.Context, dataset Dataset, opts *ValidateDatasetRequest) (*ValidationReport, error) {
	req := &ValidateDatasetRequest{}
	if opts != nil {
		req = proto.CloneOf(opts)
	}
	// opts' Training is ignored; with no dataset the server refuses the call (a field violation).
	req.Training = nil
	if dataset != nil {
		training, err := dataset.source(ctx, c)
		if err != nil {
			return nil, err
		}
		req.Training = training
	}
	resp, err := c.FineTuneServiceClient.ValidateDataset(ctx, req)
	return resp.GetReport(), err
}

// ValidateFile validates the dataset at path; see ValidateDataset.
//
// Deprecated: use ValidateDataset(ctx, Path(path), req); ValidateFile goes in 0.3.0.
func (c *Client) ValidateFile(ctx context.Context, path string, req *ValidateDatasetRequest) (*ValidationReport, error) {
	return c.ValidateDataset(ctx, Path(path), req)
}

// UploadFile uploads the file at path; see UploadDataset.
//
// Deprecated: use UploadDataset, its new name; UploadFile goes in 0.3.0.
func (c *Client) UploadFile(ctx context.Context, path string) (*UploadDatasetResponse, error) {
	return c.UploadDataset(ctx, path)
}

// UploadDataset stores the file at path on the server, streamed in
// UploadChunkSize chunks, and returns its dataset_id (for DatasetSource) and
// size. The header announces the file's SHA-256 and size, so bytes that change
// on the way fail with DATA_LOSS instead of being stored. Uploading the same
// bytes again is cheap and returns the same dataset_id (AlreadyPresent). The
// generated streaming call is client.FineTuneServiceClient.UploadDataset.
func (c *Client) UploadDataset(ctx context.Context, path string) (*UploadDatasetResponse, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()

	// The header comes first, so the file is read twice: once to hash it, once to send it.
	hash := sha256.New()
	size, err := io.Copy(hash, f)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}

	// Cancelling the context on a local failure aborts the upload: nothing is stored.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.FineTuneServiceClient.UploadDataset(ctx)
	if err != nil {
		return nil, err
	}
	msg := &finetunev1.UploadDatasetRequest{Header: &finetunev1.UploadDatasetHeader{
		FileName:  filepath.Base(path),
		Sha256:    hex.EncodeToString(hash.Sum(nil)),
		SizeBytes: uint64(size),
	}}
	buf := make([]byte, UploadChunkSize)
	for {
		n, readErr := io.ReadFull(f, buf)
		if readErr != nil && readErr != io.EOF && readErr != io.ErrUnexpectedEOF {
			return nil, readErr
		}
		if n > 0 || msg.Header != nil {
			msg.Chunk = buf[:n]
			// Send encodes msg before returning, so buf can be reused.
			err := stream.Send(msg)
			if errors.Is(err, io.EOF) {
				break // the server ended the stream: CloseAndRecv returns its status
			}
			if err != nil {
				return nil, err
			}
			msg = &finetunev1.UploadDatasetRequest{}
		}
		if readErr != nil {
			break
		}
	}
	return stream.CloseAndRecv()
}
