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

// UploadChunkSize is the size of the chunks UploadFile sends.
const UploadChunkSize = 1 << 20

// DatasetFromFile returns the JSONL file at path as a DatasetSource for
// ValidateDataset or StartTraining: its bytes inline when it is at most the
// inline limit (WithInlineLimit, 8 MiB by default), otherwise the dataset_id of
// the file uploaded with UploadFile. Reuse the result to validate and then
// train without uploading twice.
func (c *Client) DatasetFromFile(ctx context.Context, path string) (*finetunev1.DatasetSource, error) {
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
		return &finetunev1.DatasetSource{
			Source:   &finetunev1.DatasetSource_Content{Content: content},
			FileName: name,
		}, nil
	}
	uploaded, err := c.UploadFile(ctx, path)
	if err != nil {
		return nil, err
	}
	return &finetunev1.DatasetSource{
		Source:   &finetunev1.DatasetSource_DatasetId{DatasetId: uploaded.GetDatasetId()},
		FileName: name,
	}, nil
}

// ValidateFile validates the dataset at path (sent as DatasetFromFile does) and
// returns the report. req may be nil; otherwise it sets the other fields (model,
// epochs, validation dataset, ...) and its training is ignored. A dataset with
// errors is not a failed call: the report lists them (ErrorCount, Problems).
func (c *Client) ValidateFile(ctx context.Context, path string, req *finetunev1.ValidateDatasetRequest) (*finetunev1.ValidationReport, error) {
	training, err := c.DatasetFromFile(ctx, path)
	if err != nil {
		return nil, err
	}
	full := &finetunev1.ValidateDatasetRequest{}
	if req != nil {
		full = proto.CloneOf(req)
	}
	full.Training = training
	resp, err := c.ValidateDataset(ctx, full)
	if err != nil {
		return nil, err
	}
	return resp.GetReport(), nil
}

// UploadFile streams the file at path through UploadDataset in UploadChunkSize
// chunks. The header announces the file's SHA-256 and size, so bytes that
// change on the way fail with DATA_LOSS instead of being stored. Uploading the
// same bytes again is cheap and returns the same dataset_id.
func (c *Client) UploadFile(ctx context.Context, path string) (*finetunev1.UploadDatasetResponse, error) {
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
	stream, err := c.UploadDataset(ctx)
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
