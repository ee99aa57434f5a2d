package finetune_test

// The service itself speaks plaintext and ignores tokens, so these tests check
// the connection options against a bare gRPC endpoint that records what it
// receives and answers every call with one fixed status: TLS verification
// (WithCAFile, WithTLS), the bearer token, and the decoding of error details
// the service only sends in situations a test cannot provoke (RetryInfo on an
// upstream rate limit).

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/fileengine/finetune/clients/go/finetune"
	finetunev1 "github.com/fileengine/finetune/clients/go/gen/fileengine/finetune/v1"
)

// endpoint is a gRPC server that answers every call with rateLimited and
// remembers the last authorization header it saw.
type endpoint struct {
	address       string
	authorization chan string
}

var rateLimited = func() *status.Status {
	st, err := status.New(codes.ResourceExhausted, "rate limited upstream").WithDetails(
		&errdetails.ErrorInfo{Reason: "UPSTREAM_RATE_LIMITED", Domain: finetune.ErrorDomain,
			Metadata: map[string]string{"provider": "openai"}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(3 * time.Second)},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "model", Description: "unknown model"}}},
	)
	if err != nil {
		panic(err)
	}
	return st
}()

func startEndpoint(t *testing.T, opts ...grpc.ServerOption) *endpoint {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &endpoint{address: listener.Addr().String(), authorization: make(chan string, 16)}
	handler := func(_ any, stream grpc.ServerStream) error {
		md, _ := metadata.FromIncomingContext(stream.Context())
		e.authorization <- firstOf(md.Get("authorization"))
		_ = stream.RecvMsg(&emptypb.Empty{}) // the request's fields are kept as unknown ones
		return rateLimited.Err()
	}
	server := grpc.NewServer(append(opts, grpc.UnknownServiceHandler(handler))...)
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	return e
}

// received is the authorization header of the next call that reached e.
func (e *endpoint) received(t *testing.T) string {
	t.Helper()
	select {
	case a := <-e.authorization:
		return a
	case <-time.After(30 * time.Second): // a safety net: the call has already returned
		t.Fatal("no call reached the endpoint")
		return ""
	}
}

func firstOf(values []string) string {
	if len(values) == 0 {
		return ""
	}
	return values[0]
}

func callEndpoint(t *testing.T, address string, opts ...finetune.Option) error {
	t.Helper()
	client, err := finetune.Dial(address, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err = client.GetJob(ctx, &finetunev1.GetJobRequest{JobId: "job-1"})
	return err
}

func TestTokenIsSentAsBearerAndDetailsAreDecoded(t *testing.T) {
	e := startEndpoint(t)
	err := callEndpoint(t, e.address, finetune.WithToken("s3cret"))
	if got := e.received(t); got != "Bearer s3cret" {
		t.Errorf("authorization = %q, want %q", got, "Bearer s3cret")
	}
	fe := asError(t, err)
	if fe.Code != codes.ResourceExhausted || fe.Reason != "UPSTREAM_RATE_LIMITED" || fe.Domain != finetune.ErrorDomain ||
		fe.Metadata["provider"] != "openai" || fe.RetryDelay != 3*time.Second ||
		len(fe.FieldViolations) != 1 || fe.FieldViolations[0].Field != "model" {
		t.Errorf("decoded error = %+v", fe)
	}
	if want := "finetune: ResourceExhausted (UPSTREAM_RATE_LIMITED): rate limited upstream"; fe.Error() != want {
		t.Errorf("Error() = %q, want %q", fe.Error(), want)
	}

	_ = callEndpoint(t, e.address)
	if got := e.received(t); got != "" {
		t.Errorf("authorization without WithToken = %q, want none", got)
	}
}

func TestTLSVerifiesTheServer(t *testing.T) {
	cert, caFile := selfSignedCertificate(t)
	e := startEndpoint(t, grpc.Creds(credentials.NewServerTLSFromCert(&cert)))

	// Trusting the CA: the call reaches the endpoint, with the token.
	err := callEndpoint(t, e.address, finetune.WithCAFile(caFile), finetune.WithToken("t"))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("with the CA file: %v, want the endpoint's answer", err)
	}
	if got := e.received(t); got != "Bearer t" {
		t.Errorf("authorization over TLS = %q", got)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	if err := callEndpoint(t, e.address, finetune.WithTLS(&tls.Config{RootCAs: pool})); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("WithTLS(config with the CA): %v, want the endpoint's answer", err)
	} else {
		e.received(t)
	}

	// The system roots do not know the certificate; plaintext cannot talk to TLS.
	if err := callEndpoint(t, e.address, finetune.WithTLS(nil)); status.Code(err) != codes.Unavailable {
		t.Errorf("with the system roots: %v, want UNAVAILABLE", err)
	}
	if err := callEndpoint(t, e.address); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext: %v, want UNAVAILABLE", err)
	}
	if _, err := finetune.Dial(e.address, finetune.WithCAFile(filepath.Join(t.TempDir(), "missing.pem"))); err == nil {
		t.Error("Dial with a missing CA file succeeded")
	}
}

// selfSignedCertificate makes a certificate for 127.0.0.1 and writes it as a
// PEM CA file.
func selfSignedCertificate(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "finetune test"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, caFile
}

// deadAddress is a local address nothing listens on: every call fails with UNAVAILABLE.
func deadAddress(t *testing.T) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := listener.Addr().String()
	_ = listener.Close()
	return address
}

// StartTraining retries UNAVAILABLE a bounded number of times, always with the
// same generated request id.
func TestStartTrainingRetriesWithTheSameRequestID(t *testing.T) {
	var requestIDs []string
	record := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		requestIDs = append(requestIDs, req.(*finetunev1.StartTrainingRequest).GetRequestId())
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	client, err := finetune.Dial(deadAddress(t),
		finetune.WithRetry(finetune.Backoff{Attempts: 2, Initial: time.Millisecond}),
		finetune.WithDialOptions(grpc.WithUnaryInterceptor(record)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	_, err = client.StartTraining(t.Context(), &finetunev1.StartTrainingRequest{})
	if fe := asError(t, err); fe.Code != codes.Unavailable {
		t.Errorf("error = %v, want UNAVAILABLE after the retries", err)
	}
	if len(requestIDs) != 3 || requestIDs[0] == "" || requestIDs[1] != requestIDs[0] || requestIDs[2] != requestIDs[0] {
		t.Errorf("request ids of the attempts = %q, want 3 times the same generated one", requestIDs)
	}
}

// A watch that cannot reconnect gives up after its retries with the last error.
func TestWatchGivesUpAfterItsRetries(t *testing.T) {
	attempts := 0
	count := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
		streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		attempts++
		return streamer(ctx, desc, cc, method, opts...)
	}
	client, err := finetune.Dial(deadAddress(t),
		finetune.WithRetry(finetune.Backoff{Attempts: 3, Initial: time.Millisecond}),
		finetune.WithDialOptions(grpc.WithStreamInterceptor(count)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	var got []error
	for ev, err := range client.Watch(t.Context(), "job-1", 0) {
		if ev != nil {
			t.Fatalf("event from nowhere: %v", ev)
		}
		got = append(got, err)
	}
	if len(got) != 1 || status.Code(got[0]) != codes.Unavailable || attempts != 4 {
		t.Errorf("watch yielded %v after %d attempts, want one UNAVAILABLE after 4", got, attempts)
	}
}
