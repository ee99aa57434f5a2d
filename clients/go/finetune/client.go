// Package finetune is the Go client of File Engine's FineTune service
// (fileengine.finetune.v1.FineTuneService): validate a dataset, train a model on
// it, watch the job, and serve completions from the trained model.
//
// A *Client has a method per concept, the same in the Go, Python and
// TypeScript SDKs (clients/README.md):
//
//   - ValidateDataset, UploadDataset, DatasetFromFile: a dataset from a path,
//     sent inline when small and uploaded when large;
//   - StartTraining: fills in a request id, retries UNAVAILABLE safely, and
//     returns the generated id in the error (Error.RequestID) to retry with;
//   - GetJob, ListJobs (every job, page by page), ListJobsPage, CancelJob;
//   - WatchJob: a job's events as an iterator that resumes after dropped
//     streams and server restarts;
//   - Complete, StreamComplete (the text as it comes, then the Completion);
//   - ListTiers, PromoteModel, RecordFeedback, GetTierStats.
//
// Every failed call returns an *Error. The messages and enums have short names
// here (Job, JobEvent, Completion, JobStateSucceeded, ...; EnumName gives
// "SUCCEEDED"). The generated client is embedded as FineTuneServiceClient, so
// client.FineTuneServiceClient.GetJob(ctx, req) reaches any RPC as generated,
// with the same connection, token, TLS and typed errors.
package finetune

import (
	"context"
	"crypto/tls"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	finetunev1 "github.com/fileengine/finetune/clients/go/gen/fileengine/finetune/v1"
)

// DefaultInlineLimit is the largest dataset DatasetFromFile sends inline;
// larger files go through UploadDataset.
const DefaultInlineLimit = 8 << 20

// MaxMessageBytes is the largest message the client accepts, as the server's
// default --max-message-bytes.
const MaxMessageBytes = 64 << 20

// Client talks to one FineTune server. It is safe for concurrent use; Close it
// when done. Its methods take the place of the embedded generated ones of the
// same name (GetJob, ListJobs, ...); those stay reachable through the
// FineTuneServiceClient field.
type Client struct {
	finetunev1.FineTuneServiceClient

	conn        *grpc.ClientConn
	retry       Backoff
	resume      Resume
	inlineLimit int64
}

// Option configures Dial.
type Option func(*settings)

type settings struct {
	token       string
	creds       credentials.TransportCredentials
	caFile      string
	retry       Backoff
	resume      Resume
	inlineLimit int64
	dialOptions []grpc.DialOption
}

// WithToken sends "authorization: Bearer <token>" with every call. The token is
// sent on plaintext connections too (local and in-cluster use): enable TLS when
// the network is not trusted.
func WithToken(token string) Option {
	return func(s *settings) { s.token = token }
}

// WithTLS connects over TLS with config; a nil config verifies the server
// against the system's root certificates.
func WithTLS(config *tls.Config) Option {
	return func(s *settings) {
		if config == nil {
			config = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		s.creds = credentials.NewTLS(config)
		s.caFile = ""
	}
}

// WithCAFile connects over TLS and verifies the server against the PEM
// certificates in path instead of the system's roots.
func WithCAFile(path string) Option {
	return func(s *settings) { s.caFile = path; s.creds = nil }
}

// WithRetry sets how StartTraining retries UNAVAILABLE. The default is
// DefaultBackoff.
func WithRetry(b Backoff) Option {
	return func(s *settings) { s.retry = b }
}

// WithResume sets how WatchJob resumes a dropped stream. The default is
// DefaultResume.
func WithResume(r Resume) Option {
	return func(s *settings) { s.resume = r }
}

// WithInlineLimit sets the size above which DatasetFromFile uploads a file
// instead of sending it inline (default DefaultInlineLimit).
func WithInlineLimit(bytes int64) Option {
	return func(s *settings) { s.inlineLimit = bytes }
}

// WithDialOptions passes extra options to grpc.NewClient (interceptors, keepalive, ...).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(s *settings) { s.dialOptions = append(s.dialOptions, opts...) }
}

// Dial creates a client for the server at address ("host:port"). The
// connection is plaintext unless WithTLS or WithCAFile is given; it is opened
// lazily, so Dial fails only on bad options (for example an unreadable CA file).
func Dial(address string, opts ...Option) (*Client, error) {
	s := settings{creds: insecure.NewCredentials(), retry: DefaultBackoff, resume: DefaultResume,
		inlineLimit: DefaultInlineLimit}
	for _, opt := range opts {
		opt(&s)
	}
	if s.caFile != "" {
		creds, err := credentials.NewClientTLSFromFile(s.caFile, "")
		if err != nil {
			return nil, err
		}
		s.creds = creds
	}
	dialOptions := []grpc.DialOption{
		grpc.WithTransportCredentials(s.creds),
		// The server's limit: a validation report listing many problems can exceed gRPC's 4 MiB default.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes)),
		grpc.WithChainUnaryInterceptor(typedErrorsUnary),
		grpc.WithChainStreamInterceptor(typedErrorsStream),
		grpc.WithUserAgent("finetune-go/" + Version),
	}
	if s.token != "" {
		dialOptions = append(dialOptions, grpc.WithPerRPCCredentials(bearer(s.token)))
	}
	conn, err := grpc.NewClient(address, append(dialOptions, s.dialOptions...)...)
	if err != nil {
		return nil, err
	}
	return &Client{
		FineTuneServiceClient: finetunev1.NewFineTuneServiceClient(conn),
		conn:                  conn,
		retry:                 s.retry,
		resume:                s.resume,
		inlineLimit:           s.inlineLimit,
	}, nil
}

// Close closes the connection; calls in flight fail with CANCELED.
func (c *Client) Close() error { return c.conn.Close() }

// bearer is the token as per-call credentials.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity is false so that a token also works against a local
// plaintext server; see WithToken.
func (bearer) RequireTransportSecurity() bool { return false }
