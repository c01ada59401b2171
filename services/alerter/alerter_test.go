package alerter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/secret"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

// The secrets the tests resolve; none may show up anywhere but at the server that needs it.
const (
	slackToken   = "xoxb-1111-SLACKSECRET-token"
	smtpPassword = "SMTPSECRET-password"
)

// syncBuffer is a log sink safe for the handler's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// env is one test's servers and the config pointing at them.
type env struct {
	slack *testkit.SlackRecorder
	smtp  *testkit.SMTPServer
	kv    jetstream.KeyValue
	js    jetstream.JetStream
	logs  *syncBuffer
	log   *slog.Logger
	cfg   config.Alerts
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ts, rec := testkit.Slack(t)
	mail := testkit.SMTP(t)
	host, port := mail.Addr()

	ns := testkit.NATS(t)
	_, js := testkit.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "sluice_alerts"})
	if err != nil {
		t.Fatalf("create kv: %v", err)
	}

	lookup := func(name string) (string, bool) {
		v, ok := map[string]string{"SLACK_TOKEN": slackToken, "SMTP_PASSWORD": smtpPassword}[name]
		return v, ok
	}
	token, password := secret.New("env:SLACK_TOKEN"), secret.New("env:SMTP_PASSWORD")
	if err := token.Resolve(lookup); err != nil {
		t.Fatal(err)
	}
	if err := password.Resolve(lookup); err != nil {
		t.Fatal(err)
	}

	logs := &syncBuffer{}
	return &env{
		slack: rec,
		smtp:  mail,
		kv:    kv,
		js:    js,
		logs:  logs,
		log:   slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		cfg: config.Alerts{
			RunURL: "https://sluice.example.com/runs/{pipeline}/{ds}/{run_id}",
			Slack: &config.Slack{
				Token:   token,
				Channel: "#data-alerts",
				// Without its trailing slash, which New must add.
				APIURL: strings.TrimSuffix(ts.GetAPIURL(), "/"),
			},
			Email: &config.Email{
				Host:     host,
				Port:     port,
				Username: "sluice",
				Password: password,
				TLS:      "none",
				From:     "sluice@example.com",
				To:       []string{"data-ops@example.com", "oncall@example.com"},
			},
		},
	}
}

func (e *env) alerter(t *testing.T, pipelines ...config.Pipeline) *Alerter {
	t.Helper()
	a, err := New(e.cfg, pipelines, e.kv, e.log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	a.now = func() time.Time { return fixedNow }
	return a
}

func pipeline(name string, channels ...config.AlertChannel) config.Pipeline {
	return config.Pipeline{Name: name, Alerts: channels}
}

func failed(pipeline, runID string) *event.Failed {
	return &event.Failed{
		Run: event.Run{
			RunID:       runID,
			Pipeline:    pipeline,
			DS:          "2024-06-01",
			RequestedAt: time.Date(2024, 6, 2, 0, 5, 0, 0, time.UTC),
		},
		Step:     "validate",
		Attempts: 3,
		Class:    "permanent",
		Error:    `contract orders: column "amount" is missing`,
	}
}

// Both test servers record a message before they answer the client, so once Handle has returned
// its counts are final: asserting that nothing more arrived needs no waiting.
func wantCounts(t *testing.T, e *env, slackPosts, emails int) {
	t.Helper()
	if got := len(e.slack.Posts()); got != slackPosts {
		t.Errorf("slack messages = %d, want %d", got, slackPosts)
	}
	if got := len(e.smtp.Messages()); got != emails {
		t.Errorf("emails = %d, want %d", got, emails)
	}
}

func handle(t *testing.T, a *Alerter, f *event.Failed) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return a.Handle(ctx, f)
}

// email is a received alert email, decoded.
type email struct {
	Subject, From string
	To            []string
	Text, HTML    string
	Headers       mail.Header
}

func parseEmail(t *testing.T, data []byte) email {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("parse email: %v", err)
	}
	var dec mime.WordDecoder
	subject, err := dec.DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatalf("decode subject: %v", err)
	}
	to, err := msg.Header.AddressList("To")
	if err != nil {
		t.Fatalf("parse To: %v", err)
	}
	out := email{Subject: subject, From: msg.Header.Get("From"), Headers: msg.Header}
	for _, a := range to {
		out.To = append(out.To, a.Address)
	}
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/alternative" {
		t.Fatalf("email Content-Type = %q (%v), want multipart/alternative", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("email part: %v", err)
		}
		var body io.Reader = p
		if strings.EqualFold(p.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			body = quotedprintable.NewReader(p)
		}
		b, err := io.ReadAll(body)
		if err != nil {
			t.Fatalf("read email part: %v", err)
		}
		text := strings.ReplaceAll(string(b), "\r\n", "\n")
		switch ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); ct {
		case "text/plain":
			out.Text = text
		case "text/html":
			out.HTML = text
		default:
			t.Errorf("unexpected email part %s", ct)
		}
	}
	return out
}

func TestHandleAlertsEveryChannelOnce(t *testing.T) {
	e := newEnv(t)
	orders := pipeline("orders", config.ChannelSlack, config.ChannelEmail)
	a := e.alerter(t, orders, pipeline("refunds", config.ChannelEmail))
	f := failed("orders", "01J0RDERS0000000000000000A")

	if err := handle(t, a, f); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	testkit.Eventually(t, 10*time.Second, "one slack message and one email", func() bool {
		return len(e.slack.Posts()) == 1 && len(e.smtp.Messages()) == 1
	})

	want := newAlert(f, e.cfg.RunURL)
	wantText, wantBlocks, err := slackMessage(want)
	if err != nil {
		t.Fatal(err)
	}
	post := e.slack.Posts()[0]
	if post.Channel != "#data-alerts" {
		t.Errorf("slack channel = %q, want #data-alerts", post.Channel)
	}
	for _, s := range []string{"orders", "validate", "2024-06-01", `column "amount" is missing`, f.RunID} {
		if !strings.Contains(post.Text, s) {
			t.Errorf("slack text %q does not contain %q", post.Text, s)
		}
	}
	if post.Text != wantText {
		t.Errorf("slack text = %q, want %q", post.Text, wantText)
	}
	wantJSON, _ := json.Marshal(wantBlocks)
	if post.Blocks != string(wantJSON) {
		t.Errorf("slack blocks = %s\nwant %s", post.Blocks, wantJSON)
	}
	if post.Token != slackToken {
		t.Error("slack request did not carry the configured token")
	}

	msg := e.smtp.Messages()[0]
	if msg.From != "sluice@example.com" || !slices.Equal(msg.To, e.cfg.Email.To) {
		t.Errorf("envelope = %s -> %v, want sluice@example.com -> %v", msg.From, msg.To, e.cfg.Email.To)
	}
	if msg.Username != "sluice" || msg.Password != smtpPassword {
		t.Error("SMTP session did not authenticate with the configured credentials")
	}
	got := parseEmail(t, msg.Data)
	if want := "[sluice] orders failed at validate for 2024-06-01"; got.Subject != want {
		t.Errorf("subject = %q, want %q", got.Subject, want)
	}
	if !slices.Equal(got.To, e.cfg.Email.To) {
		t.Errorf("To = %v, want %v", got.To, e.cfg.Email.To)
	}
	wantPlain, wantHTML, err := emailBodies(want)
	if err != nil {
		t.Fatal(err)
	}
	if got.Text != wantPlain {
		t.Errorf("text part = %q\nwant %q", got.Text, wantPlain)
	}
	if got.HTML != wantHTML {
		t.Errorf("html part = %q\nwant %q", got.HTML, wantHTML)
	}
	if !strings.Contains(got.HTML, `href="https://sluice.example.com/runs/orders/2024-06-01/01J0RDERS0000000000000000A"`) {
		t.Errorf("html part has no run link:\n%s", got.HTML)
	}

	// A redelivery, and a second replica (or a restart) with the same bucket, send nothing more.
	if err := handle(t, a, f); err != nil {
		t.Fatalf("Handle again: %v", err)
	}
	if err := handle(t, e.alerter(t, orders), f); err != nil {
		t.Fatalf("Handle on another replica: %v", err)
	}
	wantCounts(t, e, 1, 1)

	// Another run of the same pipeline and date is a new alert.
	if err := handle(t, a, failed("orders", "01J0RDERS0000000000000000B")); err != nil {
		t.Fatalf("Handle second run: %v", err)
	}
	wantCounts(t, e, 2, 2)
}

func TestHandleOnlyListedChannels(t *testing.T) {
	e := newEnv(t)
	a := e.alerter(t, pipeline("refunds", config.ChannelEmail), pipeline("quiet"))

	if err := handle(t, a, failed("refunds", "01J0REFVNDS000000000000000")); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	testkit.Eventually(t, 10*time.Second, "one email", func() bool { return len(e.smtp.Messages()) == 1 })
	if err := handle(t, a, failed("quiet", "01J0QVIET00000000000000000")); err != nil {
		t.Fatalf("Handle quiet: %v", err)
	}
	wantCounts(t, e, 0, 1)
}

func TestHandleRetriesOnlyTheFailedChannel(t *testing.T) {
	e := newEnv(t)
	a := e.alerter(t, pipeline("orders", config.ChannelSlack, config.ChannelEmail))
	f := failed("orders", "01J0RETRY00000000000000000")

	e.slack.Fail("503")
	err := handle(t, a, f)
	if err == nil || flow.IsPermanent(err) {
		t.Fatalf("Handle with Slack down = %v, want a transient error", err)
	}
	wantCounts(t, e, 0, 1)

	e.slack.Fail("")
	if err := handle(t, a, f); err != nil {
		t.Fatalf("Handle after Slack recovered: %v", err)
	}
	wantCounts(t, e, 1, 1)
}

func TestHandleEmailDown(t *testing.T) {
	e := newEnv(t)
	f := failed("orders", "01J0MAILD0WN00000000000000")

	// Nothing listens on a port just released.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := *e.cfg.Email
	down := up
	down.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	e.cfg.Email = &down
	err = handle(t, e.alerter(t, pipeline("orders", config.ChannelSlack, config.ChannelEmail)), f)
	if err == nil || flow.IsPermanent(err) {
		t.Fatalf("Handle with SMTP down = %v, want a transient error", err)
	}
	wantCounts(t, e, 1, 0)

	// The retry, here by a restarted alerter, sends the email only.
	e.cfg.Email = &up
	if err := handle(t, e.alerter(t, pipeline("orders", config.ChannelSlack, config.ChannelEmail)), f); err != nil {
		t.Fatalf("Handle after SMTP recovered: %v", err)
	}
	wantCounts(t, e, 1, 1)
}

func TestSlackErrorClasses(t *testing.T) {
	tests := []struct {
		failWith  string
		permanent bool
	}{
		{"invalid_auth", true},
		{"channel_not_found", true},
		{"not_in_channel", true},
		{"internal_error", false},
		{"ratelimited", false},
		{"500", false},
		{"429", false},
	}
	e := newEnv(t)
	a := e.alerter(t, pipeline("orders", config.ChannelSlack))
	for i, tt := range tests {
		t.Run(tt.failWith, func(t *testing.T) {
			e.slack.Fail(tt.failWith)
			err := handle(t, a, failed("orders", fmt.Sprintf("01J0SLACKERR%014d", i)))
			if err == nil {
				t.Fatal("Handle succeeded")
			}
			if got := flow.IsPermanent(err); got != tt.permanent {
				t.Errorf("IsPermanent(%v) = %v, want %v", err, got, tt.permanent)
			}
		})
	}
	wantCounts(t, e, 0, 0)
}

func TestHandleMixedFailuresStayRetryable(t *testing.T) {
	e := newEnv(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := *e.cfg.Email
	down.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	e.cfg.Email = &down
	a := e.alerter(t, pipeline("orders", config.ChannelSlack, config.ChannelEmail))

	e.slack.Fail("channel_not_found")
	err = handle(t, a, failed("orders", "01J0MIXED00000000000000000"))
	if err == nil || flow.IsPermanent(err) {
		t.Fatalf("Handle = %v, want a retryable error: email can still succeed", err)
	}
	if !strings.Contains(err.Error(), "channel_not_found") {
		t.Errorf("error %q does not report the Slack failure", err)
	}
}

func TestHandleRejects(t *testing.T) {
	e := newEnv(t)
	a := e.alerter(t, pipeline("orders", config.ChannelSlack, config.ChannelEmail))
	for name, f := range map[string]*event.Failed{
		"unknown pipeline": failed("payments", "01J0VNKNOWN000000000000000"),
		"run id with dots": failed("orders", "01J0.DOTS"),
		"empty run id":     failed("orders", ""),
	} {
		t.Run(name, func(t *testing.T) {
			if err := handle(t, a, f); !flow.IsPermanent(err) {
				t.Errorf("Handle = %v, want a permanent error", err)
			}
		})
	}
	wantCounts(t, e, 0, 0)
}

func TestNewRejectsBadConfig(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name   string
		edit   func(*config.Alerts)
		alerts []config.AlertChannel
		kv     jetstream.KeyValue
		want   string
	}{
		{"slack listed, not configured", func(c *config.Alerts) { c.Slack = nil }, []config.AlertChannel{"slack"}, e.kv, "alerts.slack is not configured"},
		{"email listed, not configured", func(c *config.Alerts) { c.Email = nil }, []config.AlertChannel{"email"}, e.kv, "alerts.email is not configured"},
		{"unknown channel", func(*config.Alerts) {}, []config.AlertChannel{"pager"}, e.kv, `unknown channel "pager"`},
		{"no kv", func(*config.Alerts) {}, []config.AlertChannel{"slack"}, nil, "no kv bucket"},
		{"unresolved token", func(c *config.Alerts) { c.Slack.Token = secret.New("env:UNSET") }, []config.AlertChannel{"slack"}, e.kv, "token env:UNSET is empty"},
		{"no slack channel", func(c *config.Alerts) { c.Slack.Channel = "" }, []config.AlertChannel{"slack"}, e.kv, "alerts.slack.channel is empty"},
		{"bad tls", func(c *config.Alerts) { c.Email.TLS = "ssl" }, []config.AlertChannel{"email"}, e.kv, `tls "ssl"`},
		{"no recipients", func(c *config.Alerts) { c.Email.To = nil }, []config.AlertChannel{"email"}, e.kv, "alerts.email.to is empty"},
		{"bad sender", func(c *config.Alerts) { c.Email.From = "sluice" }, []config.AlertChannel{"email"}, e.kv, "alerts.email.from"},
		{"password in clear", func(c *config.Alerts) { c.Email.Host = "smtp.example.com" }, []config.AlertChannel{"email"}, e.kv, "clear text"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := e.cfg
			slackCfg, emailCfg := *cfg.Slack, *cfg.Email
			cfg.Slack, cfg.Email = &slackCfg, &emailCfg
			tt.edit(&cfg)
			_, err := New(cfg, []config.Pipeline{pipeline("orders", tt.alerts...)}, tt.kv, e.log)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// A channel no pipeline lists may be left unconfigured.
	cfg := e.cfg
	cfg.Slack = nil
	if _, err := New(cfg, []config.Pipeline{pipeline("orders", "email")}, e.kv, e.log); err != nil {
		t.Errorf("New with an unused unconfigured channel: %v", err)
	}
}

func TestHTMLEscapesErrorMessage(t *testing.T) {
	e := newEnv(t)
	a := e.alerter(t, pipeline("orders", config.ChannelSlack, config.ChannelEmail))
	f := failed("orders", "01J0SCR1PT0000000000000000")
	f.Error = `bad row: <script>alert("x")</script> & <!channel>`

	if err := handle(t, a, f); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	testkit.Eventually(t, 10*time.Second, "one slack message and one email", func() bool {
		return len(e.slack.Posts()) == 1 && len(e.smtp.Messages()) == 1
	})
	got := parseEmail(t, e.smtp.Messages()[0].Data)
	if strings.Contains(got.HTML, "<script>") || !strings.Contains(got.HTML, "&lt;script&gt;") {
		t.Errorf("html part does not escape the error:\n%s", got.HTML)
	}
	if !strings.Contains(got.Text, `<script>alert("x")</script>`) {
		t.Errorf("text part should carry the error verbatim:\n%s", got.Text)
	}
	post := e.slack.Posts()[0]
	for _, s := range []string{post.Text, post.Blocks} {
		if strings.Contains(s, "<!channel>") || strings.Contains(s, "<script>") {
			t.Errorf("slack message does not escape the error: %s", s)
		}
	}
}

func TestSecretsStayOut(t *testing.T) {
	e := newEnv(t)
	a := e.alerter(t, pipeline("orders", config.ChannelSlack, config.ChannelEmail))
	var errs []error
	run := func(runID string) {
		if err := handle(t, a, failed("orders", runID)); err != nil {
			errs = append(errs, err)
		}
	}
	run("01J0SECRET0000000000000000") // success
	run("01J0SECRET0000000000000000") // deduplicated
	e.slack.Fail("invalid_auth")
	run("01J0SECRET0000000000000001")
	e.slack.Fail("503")
	run("01J0SECRET0000000000000002")
	if len(errs) != 2 {
		t.Fatalf("errors = %v, want the two Slack failures", errs)
	}

	var seen []string
	seen = append(seen, e.logs.String())
	for _, err := range errs {
		seen = append(seen, err.Error())
	}
	for _, p := range e.slack.Posts() {
		seen = append(seen, p.Text, p.Blocks)
	}
	for _, m := range e.smtp.Messages() {
		seen = append(seen, string(m.Data))
	}
	for _, s := range seen {
		for _, secret := range []string{slackToken, smtpPassword} {
			if strings.Contains(s, secret) {
				t.Errorf("secret %q leaked into %q", secret, s)
			}
		}
	}

	// And the logs say which run they are about.
	var sent int
	for line := range strings.Lines(e.logs.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] != "alert sent" {
			continue
		}
		sent++
		if rec["pipeline"] != "orders" || rec["ds"] != "2024-06-01" || rec["run_id"] == nil || rec["channel"] == nil {
			t.Errorf("log record lacks run attributes: %s", line)
		}
	}
	if sent != 4 { // slack and email for the first run, email for the other two
		t.Errorf("%d 'alert sent' records, want 4:\n%s", sent, e.logs.String())
	}
}

func TestCombine(t *testing.T) {
	transient := errors.New("slack: 503")
	permanent := flow.Permanent(errors.New("slack: channel_not_found"))
	other := flow.Permanent(errors.New("email: bad address"))
	tests := []struct {
		name          string
		errs          []error
		wantNil, perm bool
	}{
		{"none", nil, true, false},
		{"transient", []error{transient}, false, false},
		{"permanent", []error{permanent, other}, false, true},
		{"mixed", []error{permanent, transient}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := combine(tt.errs)
			if (err == nil) != tt.wantNil {
				t.Fatalf("combine = %v", err)
			}
			if err == nil {
				return
			}
			if flow.IsPermanent(err) != tt.perm {
				t.Errorf("IsPermanent(%v) = %v, want %v", err, !tt.perm, tt.perm)
			}
			for _, e := range tt.errs {
				if !strings.Contains(err.Error(), e.Error()) {
					t.Errorf("%q does not mention %q", err, e)
				}
			}
		})
	}
}

func TestSlackRateLimitWaitsForRetryAfter(t *testing.T) {
	e := newEnv(t)
	a := e.alerter(t, pipeline("orders", config.ChannelSlack, config.ChannelEmail))
	f := failed("orders", "01J0RATE000000000000000000")

	e.slack.Fail("429") // the recorder answers 429 with Retry-After: 1
	err := handle(t, a, f)
	var wait *flow.WaitError
	if !errors.As(err, &wait) || wait.Delay < time.Second {
		t.Fatalf("Handle on a 429 = %v, want a wait of at least Retry-After (1s)", err)
	}
	wantCounts(t, e, 0, 1) // email is not held back by Slack's rate limit

	e.slack.Fail("")
	if err := handle(t, a, f); err != nil {
		t.Fatalf("Handle after the wait: %v", err)
	}
	wantCounts(t, e, 1, 1)
}

// TestPipelineRoutingAndFallback: each pipeline alerts on its own channels (orders on its own
// Slack channel, events by email only), and when Slack can never deliver (channel_not_found)
// the pipeline's fallback channel, email, carries the alert instead and the run's alert succeeds.
func TestPipelineRoutingAndFallback(t *testing.T) {
	e := newEnv(t)
	orders := pipeline("orders", config.ChannelSlack)
	orders.AlertsFallback = []config.AlertChannel{config.ChannelEmail}
	orders.SlackChannel = "#orders-alerts"
	a := e.alerter(t, orders, pipeline("events", config.ChannelEmail))

	if err := handle(t, a, failed("orders", "01J0ROUTE000000000000000001")); err != nil {
		t.Fatal(err)
	}
	if err := handle(t, a, failed("events", "01J0ROUTE000000000000000002")); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, e, 1, 1)
	if p := e.slack.Posts()[0]; p.Channel != "#orders-alerts" || !strings.Contains(p.Text, "orders") {
		t.Errorf("orders' Slack alert went to %s: %q", p.Channel, p.Text)
	}
	if m := parseEmail(t, e.smtp.Messages()[0].Data); !strings.Contains(m.Subject, "events") {
		t.Errorf("the email is not about events: %q", m.Subject)
	}

	e.slack.Fail("channel_not_found")
	if err := handle(t, a, failed("orders", "01J0ROUTE000000000000000003")); err != nil {
		t.Fatalf("Handle = %v, want the fallback to deliver", err)
	}
	wantCounts(t, e, 1, 2)
	if m := parseEmail(t, e.smtp.Messages()[1].Data); !strings.Contains(m.Subject, "orders") {
		t.Errorf("the fallback email is not about orders: %q", m.Subject)
	}
	// A redelivery does not send the fallback twice.
	if err := handle(t, a, failed("orders", "01J0ROUTE000000000000000003")); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, e, 1, 2)
}
