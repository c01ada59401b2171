package check

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/secret"
)

// productionConfig is the sluice.yaml of the production overlay's ConfigMap, parsed and
// validated by sluice's own config package (strict: an unknown key fails with its line).
func productionConfig(t *testing.T, objs []Object) (*config.Config, map[string]string) {
	t.Helper()
	var text string
	env := map[string]string{}
	for _, o := range objs {
		if o.Kind() != "ConfigMap" {
			continue
		}
		data, _ := o.Doc["data"].(map[string]any)
		switch o.Name() {
		case "sluice-config":
			text, _ = data["sluice.yaml"].(string)
		case "sluice-env":
			for k, v := range data {
				env[k] = fmt.Sprint(v)
			}
		}
	}
	if text == "" {
		t.Fatal("the production overlay has no ConfigMap sluice-config with sluice.yaml")
	}
	cfg, err := config.Parse("sluice-config/sluice.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, env
}

// Every container finds each reference of the config (env:NAME) in its environment: its own
// variables, its Secrets and the sluice-env ConfigMap; resolving fails otherwise, as the
// service would at start.
func TestProductionConfigResolvesInEveryContainer(t *testing.T) {
	objs := production(t)
	d := decoder(t)
	for _, o := range objs {
		if o.Kind() != "Deployment" && o.Kind() != "Job" {
			continue
		}
		cfg, shared := productionConfig(t, objs)
		obj, err := d.Decode(o)
		if err != nil {
			t.Fatal(err)
		}
		containers := podContainers(t, obj)
		env := map[string]string{}
		for k, v := range shared {
			env[k] = v
		}
		for _, e := range containers[0].Env {
			env[e.Name] = e.Value
			if e.ValueFrom != nil {
				env[e.Name] = "from-secret-" + e.ValueFrom.SecretKeyRef.Name
			}
		}
		lookup := secret.Lookup(func(name string) (string, bool) { v, ok := env[name]; return v, ok })
		if err := cfg.Resolve(lookup); err != nil {
			t.Errorf("%s: %v", o, err)
		}
	}
}

// The acceptance test of the scaling: `sluice provision`'s NATS step (bus.Provision with the
// production config's options) runs against a real JetStream server, and every service of the
// production overlay has one ScaledObject whose nats-jetstream triggers name exactly the
// durable consumers that service pulls from, on the configured stream, in the account the
// permission file puts the users in; a service that pulls from none (the console) has none.
func TestEveryServiceScaledOnItsOwnConsumers(t *testing.T) {
	objs := production(t)
	cfg, _ := productionConfig(t, objs)
	opts := app.BusOptions(cfg)
	// Production stores the stream and buckets on three servers; this one server stands in for
	// the cluster, which refuses replicas > 1, and consumer names do not depend on replication.
	if opts.Replicas != 3 {
		t.Errorf("production config: nats.replicas %d, want 3 (R3 on the three-node NATS of values.yaml)", opts.Replicas)
	}
	opts.Replicas = 1

	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.Provision(ctx, js, opts); err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, opts.Stream)
	if err != nil {
		t.Fatal(err)
	}
	owner := map[string]string{}
	for _, c := range bus.Consumers(opts) {
		owner[c.Config.Durable] = c.Service
	}
	provisioned := map[string][]string{} // service -> its consumers, as they exist on the server
	names := stream.ConsumerNames(ctx)
	for name := range names.Name() {
		svc, ok := owner[name]
		if !ok {
			t.Errorf("provisioning made consumer %s, which bus.Consumers assigns to no service", name)
			continue
		}
		provisioned[svc] = append(provisioned[svc], name)
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	if len(provisioned) == 0 {
		t.Fatal("provisioning made no consumers")
	}

	// auth.conf's users sit in an authorization block (ParseNATSAuth reads only that), which
	// NATS puts in its global account.
	if _, err := ParseNATSAuth(path(t, "deploy", "nats", "auth.conf")); err != nil {
		t.Fatal(err)
	}
	const account = "$G"

	scaled := map[string][]string{}
	for _, o := range objs {
		if o.Kind() != "ScaledObject" {
			continue
		}
		spec := o.Doc["spec"].(map[string]any)
		target := spec["scaleTargetRef"].(map[string]any)["name"].(string)
		svc := strings.TrimPrefix(target, "sluice-")
		if o.Name() != target {
			t.Errorf("ScaledObject %s scales %s; name it after its Deployment", o.Name(), target)
		}
		if _, dup := scaled[svc]; dup {
			t.Errorf("two ScaledObjects scale %s", target)
		}
		scaled[svc] = []string{}
		for _, tr := range spec["triggers"].([]any) {
			tm := tr.(map[string]any)
			md := tm["metadata"].(map[string]any)
			if tm["type"] != "nats-jetstream" {
				t.Errorf("%s: trigger type %v", o, tm["type"])
				continue
			}
			for key, want := range map[string]string{"stream": opts.Stream, "account": account, "natsServerMonitoringEndpoint": "nats-headless.nats.svc.cluster.local:8222"} {
				if md[key] != want {
					t.Errorf("%s: %s is %v, want %s", o, key, md[key], want)
				}
			}
			for _, key := range []string{"lagThreshold", "activationLagThreshold"} {
				if n, err := strconv.Atoi(fmt.Sprint(md[key])); err != nil || n < 0 || key == "lagThreshold" && n == 0 {
					t.Errorf("%s: %s %v is not a count", o, key, md[key])
				}
			}
			scaled[svc] = append(scaled[svc], fmt.Sprint(md["consumer"]))
		}
		if svc == "dbtrunner" {
			if max, _ := spec["maxReplicaCount"].(float64); max < 1 || max > 2 {
				t.Errorf("dbt-runner's maxReplicaCount %v: it is capped by the database at 2", spec["maxReplicaCount"])
			}
		}
	}
	for _, m := range []map[string][]string{scaled, provisioned} {
		for _, list := range m {
			sort.Strings(list)
		}
	}
	if !reflect.DeepEqual(scaled, provisioned) {
		t.Errorf("ScaledObjects' consumers per service:\n  %v\nconsumers sluice provision makes per service:\n  %v", scaled, provisioned)
	}
	for svc := range deployments(t, objs) {
		svc = strings.TrimPrefix(svc, "sluice-")
		if _, ok := scaled[svc]; !ok && len(provisioned[svc]) > 0 {
			t.Errorf("service %s pulls from %v but has no ScaledObject", svc, provisioned[svc])
		}
	}
}
