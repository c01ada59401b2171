package sensor_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/services/sensor"
)

// A webhook signing key shorter than 24 bytes after decoding fails the sensor at start:
// "whsec_" alone is a key of zero bytes, which anyone could sign with.
func TestShortWebhookSecretFailsAtStart(t *testing.T) {
	for secret, want := range map[string]string{
		"whsec_": "webhook signing key is 0 bytes (after decoding); it must be at least 24",
		"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 16)): "is 16 bytes",
		"short-shared-secret": "is 19 bytes",
	} {
		ns := testkit.NATS(t)
		path := filepath.Join(t.TempDir(), "sluice.yaml")
		if err := os.WriteFile(path, []byte(configHead+pipeline("orders", "http://127.0.0.1:1", hookSensor, "      ttl: 2m")), 0o600); err != nil {
			t.Fatal(err)
		}
		vars := map[string]string{"NATS_URL": ns.ClientURL(), "PG_URL": "postgres://unused", "HOOK_SECRET": secret}
		cfg, err := config.Load(path, func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		st, err := app.Start(ctx, cfg, telemetry.Logger(&bytes.Buffer{}, slog.LevelInfo), app.Options{HTTPAddr: "127.0.0.1:0", Provision: true}, sensor.Service)
		if err == nil {
			cancel()
			_ = st.Wait()
			t.Fatalf("secret %q: the sensor started", secret)
		}
		cancel()
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "sensor.webhook.secret (env:HOOK_SECRET)") || strings.Contains(err.Error(), secret) && secret != "whsec_" {
			t.Fatalf("secret %q: %v, want it to say %q and name the reference only", secret, err, want)
		}
	}
	if _, err := sensor.SigningKey("whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 24))); err != nil {
		t.Fatalf("a 24-byte key: %v", err)
	}
}

// Anyone who reaches the webhook can send rejected requests: they are logged with bounded
// fields and at most 20 a minute, then counted.
func TestRejectedPushesAreLoggedBoundedAndRateLimited(t *testing.T) {
	src := newSource(t)
	secret, _ := newSecret(t)
	e := startSensor(t, pipeline("orders", src.URL, hookSensor, "      ttl: 2m"), map[string]string{"HOOK_SECRET": secret})
	longID := strings.Repeat("x", 4000)
	for i := 0; i < 50; i++ {
		if status, _ := (push{id: longID, ts: time.Now(), body: body("2026-11-25")}).send(t, e, "orders"); status != 401 {
			t.Fatalf("unsigned push answered %d", status)
		}
	}
	var lines []string
	for _, l := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(l, "webhook rejected") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 20 {
		t.Fatalf("%d rejection lines for 50 rejected pushes, want 20", len(lines))
	}
	for _, l := range lines {
		if len(l) > 1000 || strings.Contains(l, longID[:200]) {
			t.Fatalf("rejection line of %d bytes: %.300s", len(l), l)
		}
	}
}

// The poke count is of the source's checks only: deliveries that waited behind another run's
// lease did not ask the source. A file there at the first poke reads "after 1 poke(s)".
func TestPokesCountOnlyChecksOfTheSource(t *testing.T) {
	src := newSource(t)
	e := startSensor(t, pipeline("orders", src.URL, "      poke_interval: 50ms", "      ttl: 5s"), nil)
	ctx := context.Background()
	other := "01JQ00000000000000000OTHER"
	if _, err := e.stack.Router.Leases().Acquire(ctx, "orders", other, "2026-11-23", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	src.set("2026-11-24", http.StatusOK)
	run := e.request(t, "orders", "2026-11-24")
	testkit.Eventually(t, 10*time.Second, "the run waits behind the lease a few times", func() bool {
		rec := e.state(t, "orders", "2026-11-24", run)
		return rec.Span != nil && len(rec.Span.Waits) >= 4
	})
	if err := e.stack.Router.Leases().Release(ctx, "orders", other); err != nil {
		t.Fatal(err)
	}
	av := e.await(t, run, event.KindAvailable, 10*time.Second).(*event.Available)
	if av.Pokes != 1 || src.count("2026-11-24") != 1 {
		t.Fatalf("available after %d poke(s), source asked %d time(s); want 1 and 1", av.Pokes, src.count("2026-11-24"))
	}
}
