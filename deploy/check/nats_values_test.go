package check

import (
	"os"
	"testing"

	"sigs.k8s.io/yaml"
)

// The NATS Helm values give what sluice relies on: a three-node cluster (stream and KV at R3
// need three JetStream servers), JetStream on file storage fsynced on every write, TLS on the
// client port, and monitoring on the port KEDA's ScaledObjects read.
func TestNATSHelmValues(t *testing.T) {
	b, err := os.ReadFile(path(t, "deploy", "k8s", "nats", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.UnmarshalStrict(b, &v); err != nil {
		t.Fatal(err)
	}
	get := func(keys ...string) any {
		var cur any = v
		for _, k := range keys {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[k]
		}
		return cur
	}
	for _, c := range []struct {
		keys []string
		want any
	}{
		{[]string{"config", "cluster", "enabled"}, true},
		{[]string{"config", "cluster", "replicas"}, float64(3)},
		{[]string{"config", "jetstream", "enabled"}, true},
		{[]string{"config", "jetstream", "fileStore", "enabled"}, true},
		{[]string{"config", "jetstream", "fileStore", "pvc", "enabled"}, true},
		{[]string{"config", "jetstream", "memoryStore", "enabled"}, false},
		{[]string{"config", "jetstream", "merge", "sync_interval"}, "always"},
		{[]string{"config", "nats", "tls", "enabled"}, true},
		{[]string{"config", "monitor", "enabled"}, true},
		{[]string{"config", "monitor", "port"}, float64(8222)},
		{[]string{"natsBox", "enabled"}, false},
	} {
		if got := get(c.keys...); got != c.want {
			t.Errorf("values.yaml %v = %v, want %v", c.keys, got, c.want)
		}
	}
}
