package finetune_test

// Tokens and TLS against the real server: secured is a harness started with
// --secure, so the server requires a bearer token with the RPC's role and
// speaks TLS (certificate for "localhost" and "127.0.0.1", signed by the CA in
// secured.CAFile) through the same cuttable proxy.

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/fileengine/finetune/clients/go/finetune"
)

// dialSecured connects to the secure harness's proxy.
func dialSecured(t *testing.T, opts ...finetune.Option) *finetune.Client {
	t.Helper()
	client, err := finetune.Dial(secured.Address, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// validateSample validates the sample dataset and checks the report.
func validateSample(t *testing.T, client *finetune.Client) {
	t.Helper()
	report, err := client.ValidateDataset(testContext(t), finetune.Path(secured.SampleDataset), nil)
	if err != nil {
		t.Fatal(err)
	}
	if report.GetTraining().GetExamples() != 13 || report.GetErrorCount() != 0 {
		t.Errorf("report: %d examples, %d errors; want 13, 0",
			report.GetTraining().GetExamples(), report.GetErrorCount())
	}
}

func TestSecureValidateWithTokenOverTLS(t *testing.T) {
	if !secured.TLS {
		t.Fatal("the secure harness does not speak TLS")
	}
	t.Run("WithCAFile", func(t *testing.T) {
		validateSample(t, dialSecured(t, finetune.WithCAFile(secured.CAFile), finetune.WithToken(secured.Token)))
	})
	t.Run("WithTLS", func(t *testing.T) {
		pem, err := os.ReadFile(secured.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			t.Fatalf("no certificate in %s", secured.CAFile)
		}
		validateSample(t, dialSecured(t, finetune.WithTLS(&tls.Config{RootCAs: roots}), finetune.WithToken(secured.Token)))
	})
}

// Train with the full token and watch to the end while the harness cuts the
// connection: the resumed WatchJob goes out on a new TLS connection, with the
// token again (the server refuses it otherwise), and no event is lost or repeated.
func TestSecureTrainWatchThroughCut(t *testing.T) {
	ctx := testContext(t)
	client := dialSecured(t, finetune.WithCAFile(secured.CAFile), finetune.WithToken(secured.Token))
	training, err := client.DatasetFromFile(ctx, secured.SampleDataset)
	if err != nil {
		t.Fatal(err)
	}
	started, err := client.StartTraining(ctx, &finetune.StartTrainingRequest{Training: training, Suffix: "go-sdk-tls"})
	if err != nil {
		t.Fatal(err)
	}
	events := watchThroughCut(t, ctx, client, secured, started.GetJob().GetId())
	t.Logf("%d events over TLS through a cut, model %s", len(events),
		events[len(events)-1].GetJob().GetFineTunedModel())
}

// A refusal carries ErrorInfo: the reason, and the method and role concerned.
func TestSecureWithoutValidTokenIsUnauthenticated(t *testing.T) {
	for _, c := range []struct {
		name, reason string
		opts         []finetune.Option
	}{
		{"no token", "TOKEN_MISSING", []finetune.Option{finetune.WithCAFile(secured.CAFile)}},
		{"wrong token", "TOKEN_INVALID", []finetune.Option{finetune.WithCAFile(secured.CAFile), finetune.WithToken("ft_not-a-token")}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, client := testContext(t), dialSecured(t, c.opts...)
			_, err := client.ValidateDataset(ctx, nil, nil)
			assertRefusal(t, err, codes.Unauthenticated, c.reason, "ValidateDataset", "read")
			// A stream is refused the same way, and WatchJob does not retry it.
			var got []error
			for _, err := range client.WatchJob(ctx, "job-1", 0).Events() {
				got = append(got, err)
			}
			if len(got) != 1 {
				t.Fatalf("WatchJob yielded %v, want UNAUTHENTICATED alone", got)
			}
			assertRefusal(t, got[0], codes.Unauthenticated, c.reason, "WatchJob", "read")
		})
	}
}

// assertRefusal checks that err is the service's refusal of method for want.
func assertRefusal(t *testing.T, err error, code codes.Code, reason, method, role string) {
	t.Helper()
	fe := asError(t, err)
	if fe.Code != code || fe.Reason != reason || fe.Domain != finetune.ErrorDomain {
		t.Errorf("%s: %v (domain %q), want %v %s", method, fe, fe.Domain, code, reason)
	}
	if fe.Metadata["method"] != method || fe.Metadata["role"] != role {
		t.Errorf("%s: metadata %v, want method %s, role %s", method, fe.Metadata, method, role)
	}
}

// The read token may validate but not train: PERMISSION_DENIED naming the role.
func TestSecureReadTokenCannotTrain(t *testing.T) {
	ctx := testContext(t)
	client := dialSecured(t, finetune.WithCAFile(secured.CAFile), finetune.WithToken(secured.ReadToken))
	validateSample(t, client)

	training, err := client.DatasetFromFile(ctx, secured.SampleDataset)
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.StartTraining(ctx, &finetune.StartTrainingRequest{Training: training})
	assertRefusal(t, err, codes.PermissionDenied, "ROLE_MISSING", "StartTraining", "train")
	if fe := asError(t, err); !strings.Contains(fe.Message, "train role") {
		t.Errorf("StartTraining with the read token: %v, want a message naming the train role", fe)
	}
}

// Only a client that speaks TLS and trusts the CA gets through.
func TestSecureNeedsTLSAndTheCA(t *testing.T) {
	ctx := testContext(t)
	for name, opts := range map[string][]finetune.Option{
		"plaintext":        {finetune.WithToken(secured.Token)},
		"the system roots": {finetune.WithTLS(nil), finetune.WithToken(secured.Token)},
	} {
		_, err := dialSecured(t, opts...).ValidateDataset(ctx, finetune.Path(secured.SampleDataset), nil)
		if fe := asError(t, err); fe.Code != codes.Unavailable {
			t.Errorf("%s: %v, want UNAVAILABLE", name, fe)
		}
	}
	if _, err := finetune.Dial(secured.Address, finetune.WithCAFile(filepath.Join(t.TempDir(), "missing.pem"))); err == nil {
		t.Error("Dial with a missing CA file succeeded")
	}
}
