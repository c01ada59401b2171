package alerter

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/secret"
)

// snsEndpoint stands in for AWS SNS, which has no local server: it speaks SNS's Query API
// (form-encoded Publish, XML answers) as the SDK's own request and response snapshots show it,
// and records what the SDK sent. It proves the request sluice makes, not delivery by AWS.
type snsEndpoint struct {
	mu       sync.Mutex
	forms    []url.Values
	auth     []string
	failWith string // an SNS error code, or "500"
}

func startSNS(t *testing.T) (*snsEndpoint, string) {
	t.Helper()
	e := &snsEndpoint{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		w.Header().Set("Content-Type", "text/xml")
		switch e.failWith {
		case "":
		case "500":
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `<ErrorResponse><Error><Type>Receiver</Type><Code>InternalError</Code><Message>boom</Message></Error></ErrorResponse>`)
			return
		default:
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `<ErrorResponse><Error><Type>Sender</Type><Code>%s</Code><Message>no</Message></Error></ErrorResponse>`, e.failWith)
			return
		}
		e.forms = append(e.forms, r.PostForm)
		e.auth = append(e.auth, r.Header.Get("Authorization"))
		fmt.Fprint(w, `<PublishResponse><PublishResult><MessageId>94f20ce6-13c5-43a0-9a9e-ca52d816e90b</MessageId></PublishResult></PublishResponse>`)
	}))
	t.Cleanup(srv.Close)
	return e, srv.URL
}

func (e *snsEndpoint) published() []url.Values {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]url.Values(nil), e.forms...)
}

func snsConfig(t *testing.T, endpoint, topic string) *config.SNS {
	t.Helper()
	lookup := func(k string) (string, bool) {
		v, ok := map[string]string{"SNS_KEY": "AKIASLUICETEST", "SNS_SECRET": "SNSSECRET-value"}[k]
		return v, ok
	}
	key, sec := secret.New("env:SNS_KEY"), secret.New("env:SNS_SECRET")
	for _, v := range []*secret.Value{&key, &sec} {
		if err := v.Resolve(lookup); err != nil {
			t.Fatal(err)
		}
	}
	return &config.SNS{TopicARN: topic, Endpoint: endpoint, AccessKey: key, SecretKey: sec}
}

func TestSNSPublishesOncePerRun(t *testing.T) {
	e := newEnv(t)
	ep, u := startSNS(t)
	e.cfg.SNS = snsConfig(t, u, "arn:aws:sns:eu-west-1:123456789012:sluice-alerts")
	a := e.alerter(t, pipeline("orders", config.ChannelSNS))
	f := failed("orders", "01J0SNS0000000000000000000")
	for i := 0; i < 2; i++ {
		if err := handle(t, a, f); err != nil {
			t.Fatalf("Handle: %v", err)
		}
	}
	got := ep.published()
	if len(got) != 1 {
		t.Fatalf("%d publishes, want 1", len(got))
	}
	form := got[0]
	if form.Get("Action") != "Publish" || form.Get("TopicArn") != "arn:aws:sns:eu-west-1:123456789012:sluice-alerts" {
		t.Errorf("request %v", form)
	}
	if s := form.Get("Subject"); s != "[sluice] orders failed at validate for 2024-06-01" {
		t.Errorf("subject %q", s)
	}
	if m := form.Get("Message"); !strings.Contains(m, f.RunID) || !strings.Contains(m, `column "amount" is missing`) {
		t.Errorf("message does not name the run and the error:\n%s", m)
	}
	if form.Get("MessageDeduplicationId") != "" {
		t.Error("a standard topic got a deduplication id, which SNS refuses")
	}
	auth := ep.auth[0]
	if !strings.Contains(auth, "Credential=AKIASLUICETEST/") || !strings.Contains(auth, "/eu-west-1/sns/") || strings.Contains(auth, "SNSSECRET") {
		t.Errorf("request not signed for eu-west-1 with the configured key: %q", auth)
	}
}

func TestSNSFifoTopicAndErrors(t *testing.T) {
	e := newEnv(t)
	ep, u := startSNS(t)
	e.cfg.SNS = snsConfig(t, u, "arn:aws:sns:us-east-1:123456789012:sluice-alerts.fifo")
	a := e.alerter(t, pipeline("orders", config.ChannelSNS))

	ep.failWith = "NotFound"
	if err := handle(t, a, failed("orders", "01J0SNS0000000000000000001")); !flow.IsPermanent(err) {
		t.Errorf("a missing topic gave %v, want a permanent error", err)
	}
	ep.failWith = "500"
	if err := handle(t, a, failed("orders", "01J0SNS0000000000000000001")); err == nil || flow.IsPermanent(err) {
		t.Errorf("an SNS 500 gave %v, want a transient error", err)
	}
	ep.failWith = ""
	if err := handle(t, a, failed("orders", "01J0SNS0000000000000000001")); err != nil {
		t.Fatal(err)
	}
	form := ep.published()[0]
	if form.Get("MessageDeduplicationId") != "01J0SNS0000000000000000001.failed" || form.Get("MessageGroupId") != "orders" {
		t.Errorf("fifo publish %v lacks the run's deduplication id and group", form)
	}
}

func TestSNSSubject(t *testing.T) {
	if got := snsSubject("[sluice] ørders\nfailed"); got != "[sluice] ?rders?failed" {
		t.Errorf("snsSubject = %q", got)
	}
	if got := snsSubject(strings.Repeat("x", 150)); len(got) != 100 {
		t.Errorf("snsSubject kept %d characters", len(got))
	}
}
