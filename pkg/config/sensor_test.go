package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sluice-etl/sluice/pkg/config"
)

func TestSensorDefaultsAndWebhookSecret(t *testing.T) {
	text := good + `    sensor:
      poke_interval: 10s
      backoff: 2
      soft_fail: true
      ready_status: [200, 204]
      webhook:
        secret: env:HOOK_SECRET
  - name: plain
    source:
      url: http://api.local/plain/{ds}.csv
`
	vars := map[string]string{"HOOK_SECRET": "whsec_c2VjcmV0"}
	for k, v := range secrets {
		vars[k] = v
	}
	cfg, err := config.Load(write(t, text), env(vars))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := cfg.Pipeline("orders")
	s := p.Sensor
	if s.MaxInterval != 100*time.Second || s.MaxWait() != 100*time.Second || s.JitterShare() != 0.1 || !s.SoftFail ||
		len(s.ReadyStatus) != 2 || s.Webhook.MaxBody != 64<<10 || s.Webhook.Secret.Reveal() != "whsec_c2VjcmV0" {
		t.Errorf("orders sensor = %+v", s)
	}
	plain, _ := cfg.Pipeline("plain")
	if plain.Sensor.Backoff != 1 || plain.Sensor.MaxWait() != time.Minute || plain.Sensor.Webhook != nil {
		t.Errorf("plain sensor = %+v", plain.Sensor)
	}
	found := false
	for _, v := range cfg.Secrets() {
		found = found || v == "whsec_c2VjcmV0"
	}
	if !found {
		t.Error("the webhook secret is not among the secrets redacted from logs")
	}
}

func TestBadSensorSettingsNameTheLine(t *testing.T) {
	for _, tc := range []struct{ sensor, lease, want string }{
		{"backoff: 0.5", "", "sluice.yaml:18: pipelines[0].sensor.backoff: 0.5 must be between 1"},
		{"max_interval: 1s", "", "pipelines[0].sensor.max_interval: 1s is shorter than the poke interval (1m0s)"},
		{"jitter: 1", "", "pipelines[0].sensor.jitter: 1 must be at least 0 and less than 1"},
		{"ready_status: [200, 999]", "", "pipelines[0].sensor.ready_status: 999 is not an HTTP status code"},
		{"webhook: {max_body: 10}", "", "pipelines[0].sensor.webhook.secret: is required"},
		{"webhook: {secret: plaintext}", "", "pipelines[0].sensor.webhook.secret"},
		{"webhook: {secret: env:X, max_body: 9999999}", "", "pipelines[0].sensor.webhook.max_body: 9999999 must be between 1 and 1048576"},
		{"backoff: 2\n      max_interval: 5m", "ttl: 3m", "pipelines[0].lease.ttl: 3m0s must be longer than the sensor's longest wait (max_interval 5m0s)"},
	} {
		text := good + "    sensor:\n      " + tc.sensor + "\n"
		if tc.lease != "" {
			text += "    lease:\n      " + tc.lease + "\n"
		}
		_, err := config.Load(write(t, text), env(secrets))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("sensor %q: got %v, want %q", tc.sensor, err, tc.want)
		}
	}
}
