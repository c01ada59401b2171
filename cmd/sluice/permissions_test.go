package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/pkg/trigger"
	"github.com/sluice-etl/sluice/services/alerter"
	"github.com/sluice-etl/sluice/services/fetcher"
)

// natsUsers are the users of deploy/nats/auth.conf.
var natsUsers = []string{"admin", "sensor", "fetcher", "validator", "partitioner", "dbtrunner", "alerter", "console"}

// authServer starts a JetStream server whose config includes the exact permission file the
// compose stack and the Helm values use, deploy/nats/auth.conf, read by the server's own config
// parser. Each user's password is a fresh random value in the variable the file names.
func authServer(t *testing.T) (*server.Server, map[string]string) {
	t.Helper()
	return authServerWith(t, "")
}

// authServerWith is authServer on a copy of auth.conf whose block of user edit lacks the
// subjects drop (edit "": the file as it is).
func authServerWith(t *testing.T, edit string, drop ...string) (*server.Server, map[string]string) {
	t.Helper()
	passwords := map[string]string{}
	for _, u := range natsUsers {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		passwords[u] = hex.EncodeToString(b)
		t.Setenv("SLUICE_NATS_"+strings.ToUpper(u)+"_PASSWORD", passwords[u])
	}
	dir := t.TempDir()
	file := filepath.Join(testkit.RepoRoot(t), "deploy", "nats", "auth.conf")
	if edit != "" {
		// A copy of the file with the named user's lines for drop removed.
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		start := strings.Index(text, "user: "+edit+"\n")
		end := start + strings.Index(text[start:], "\n    }\n")
		block := text[start:end]
		for _, d := range drop {
			line := "            \"" + d + "\"\n"
			if !strings.Contains(block, line) {
				t.Fatalf("auth.conf: user %s has no %s", edit, d)
			}
			block = strings.Replace(block, line, "", 1)
		}
		file = filepath.Join(dir, "auth.conf")
		if err := os.WriteFile(file, []byte(text[:start]+block+text[end:]), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rel, err := filepath.Rel(dir, file)
	if err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("listen: \"127.0.0.1:-1\"\njetstream {\n  store_dir: %q\n}\ninclude %q\n", filepath.Join(dir, "js"), rel)
	return testkit.NATSFromConfig(t, dir, conf), passwords
}

// connectAs connects as user the way sluice does (its inbox prefix, its error reporting).
func connectAs(t *testing.T, ns *server.Server, user, password string) *bus.Conn {
	t.Helper()
	c, err := bus.Connect(ns.ClientURL(), bus.ConnectOptions{Name: "test-" + user, Who: user, Inbox: "_INBOX_" + user,
		Auth: bus.Auth{User: user, Password: password}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(c.NC.Close)
	return c
}

// noRefusals fails if the server refused anything to c so far.
func noRefusals(t *testing.T, c *bus.Conn) {
	t.Helper()
	if err := c.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.Refused:
		t.Fatalf("refused: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
}

// mustRefuse runs op and waits for the server to refuse subject to c.
func mustRefuse(t *testing.T, c *bus.Conn, subject string, op func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { _ = op(ctx) }() // a request fails when cancelled; a plain publish never fails
	for {
		select {
		case err := <-c.Refused:
			var r *bus.RefusedError
			if errors.As(err, &r) && r.Subject == subject {
				return
			}
			t.Logf("also refused: %v", err)
		case <-ctx.Done():
			t.Fatalf("the server did not refuse %s", subject)
		}
	}
}

// serviceStep is what one service does on the bus for one run: the consumers it pulls from,
// the events it publishes and the buckets it writes.
type serviceStep struct {
	user      string
	consumers map[string]event.Kind // durable -> a kind it consumes
	produces  []string              // subjects it publishes (besides failed)
	buckets   []string              // KV buckets it reads and writes
}

var serviceSteps = []serviceStep{
	{"sensor", map[string]event.Kind{bus.SensorConsumer: event.KindRequested, bus.EndConsumer: event.KindCompleted},
		[]string{"etl.orders.available.2026-11-25", "etl.orders.requested.2026-11-26", "etl.orders.tick", "etl.orders.schedule",
			"etl.orders.deadline.2026-11-25.01ABC"},
		[]string{bus.LeaseBucket, bus.RunBucket, bus.ScheduleBucket, bus.MarkBucket, bus.HookIDBucket}},
	{"fetcher", map[string]event.Kind{bus.FetcherConsumer: event.KindAvailable}, []string{"etl.orders.landed.2026-11-25"},
		[]string{bus.LeaseBucket, bus.RunBucket}},
	{"validator", map[string]event.Kind{bus.ValidatorConsumer: event.KindLanded}, []string{"etl.orders.validated.2026-11-25"},
		[]string{bus.LeaseBucket, bus.RunBucket}},
	{"partitioner", map[string]event.Kind{bus.PartitionerConsumer: event.KindValidated}, []string{"etl.orders.partitioned.2026-11-25"},
		[]string{bus.LeaseBucket, bus.RunBucket}},
	{"dbtrunner", map[string]event.Kind{bus.DBTRunnerConsumer: event.KindPartitioned}, []string{"etl.orders.completed.2026-11-25"},
		[]string{bus.LeaseBucket, bus.RunBucket}},
	{"alerter", map[string]event.Kind{bus.AlerterConsumer: event.KindFailed, bus.AlerterSLAConsumer: event.KindSLAMissed,
		bus.AlerterCompletedConsumer: event.KindCompleted}, nil,
		[]string{bus.LeaseBucket, bus.RunBucket, bus.AlertBucket}},
}

// TestPermissionFile shows, against deploy/nats/auth.conf itself, that each service's user can
// do its own step and nothing the issue names as forbidden.
func TestPermissionFile(t *testing.T) {
	ns, pw := authServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := connectAs(t, ns, "admin", pw["admin"])
	opts := bus.Options{Stream: "SLUICE", SubjectPrefix: "etl"}
	if err := bus.Provision(ctx, admin.JS, opts); err != nil {
		t.Fatalf("admin provisions: %v", err)
	}
	publish := func(subject string) {
		t.Helper()
		if _, err := admin.JS.Publish(ctx, subject, []byte(`{}`)); err != nil {
			t.Fatalf("admin publishes %s: %v", subject, err)
		}
	}

	for _, s := range serviceSteps {
		t.Run(s.user+" does its step", func(t *testing.T) {
			c := connectAs(t, ns, s.user, pw[s.user])
			for durable, kind := range s.consumers {
				publish(event.Subject("etl", "orders", kind, "2026-11-25"))
				cons, err := bus.BindConsumer(ctx, c.JS, "SLUICE", durable)
				if err != nil {
					t.Fatalf("bind %s: %v", durable, err)
				}
				if _, err := cons.Info(ctx); err != nil {
					t.Fatalf("consumer info %s: %v", durable, err)
				}
				msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
				if err != nil {
					t.Fatalf("pull %s: %v", durable, err)
				}
				// A deferrable wait (the sensor's poke) is a nak with delay; a long step an
				// in-progress ack; the end a (confirmed) ack.
				if err := msg.InProgress(); err != nil {
					t.Fatal(err)
				}
				if err := msg.NakWithDelay(10 * time.Millisecond); err != nil {
					t.Fatal(err)
				}
				if msg, err = cons.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
					t.Fatalf("pull %s again: %v", durable, err)
				}
				if err := msg.DoubleAck(ctx); err != nil {
					t.Fatalf("ack %s: %v", durable, err)
				}
				// The max-deliveries watcher of its consumer.
				sub, err := c.NC.QueueSubscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.SLUICE."+durable, "sluice-"+durable, func(*nats.Msg) {})
				if err != nil {
					t.Fatal(err)
				}
				_ = sub.Unsubscribe()
			}
			for i, subject := range append([]string{"etl.orders.failed.2026-11-25"}, s.produces...) {
				m := &nats.Msg{Subject: subject, Data: []byte(`{}`)}
				if _, err := c.JS.PublishMsg(ctx, m, jetstream.WithMsgID(fmt.Sprintf("%s-%d", s.user, i))); err != nil {
					t.Fatalf("publish %s: %v", subject, err)
				}
			}
			stream, err := c.JS.Stream(ctx, "SLUICE")
			if err != nil {
				t.Fatalf("stream info: %v", err)
			}
			if _, err := stream.GetMsg(ctx, 1); err != nil {
				t.Fatalf("read a message by sequence (max-deliveries advisory): %v", err)
			}
			for _, b := range s.buckets {
				kv, err := c.JS.KeyValue(ctx, b)
				if err != nil {
					t.Fatalf("bind kv %s: %v", b, err)
				}
				rev, err := kv.Put(ctx, "orders.2026-11-25", []byte(`{}`))
				if err != nil {
					t.Fatalf("put %s: %v", b, err)
				}
				if _, err := kv.Update(ctx, "orders.2026-11-25", []byte(`{"v":2}`), rev); err != nil {
					t.Fatalf("update %s: %v", b, err)
				}
				if _, err := kv.Get(ctx, "orders.2026-11-25"); err != nil {
					t.Fatalf("get %s: %v", b, err)
				}
				if err := kv.Delete(ctx, "orders.2026-11-25"); err != nil {
					t.Fatalf("delete key in %s: %v", b, err)
				}
			}
			// Every process follows the run-state bucket for its metrics.
			runs, err := c.JS.KeyValue(ctx, bus.RunBucket)
			if err != nil {
				t.Fatal(err)
			}
			w, err := runs.WatchAll(ctx)
			if err != nil {
				t.Fatalf("watch runs: %v", err)
			}
			<-w.Updates()
			_ = w.Stop()
			if err := c.NC.Publish("logs.etl.orders.2026-11-25."+s.user, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			noRefusals(t, c)
		})
	}

	t.Run("validator may not publish partitioned", func(t *testing.T) {
		c := connectAs(t, ns, "validator", pw["validator"])
		mustRefuse(t, c, "etl.orders.partitioned.2026-11-25", func(ctx context.Context) error {
			_, err := c.JS.Publish(ctx, "etl.orders.partitioned.2026-11-25", []byte(`{}`))
			return err
		})
	})
	t.Run("fetcher may not read the validator's consumer", func(t *testing.T) {
		c := connectAs(t, ns, "fetcher", pw["fetcher"])
		mustRefuse(t, c, "$JS.API.CONSUMER.INFO.SLUICE.validator", func(ctx context.Context) error {
			_, err := c.JS.Consumer(ctx, "SLUICE", bus.ValidatorConsumer)
			return err
		})
		mustRefuse(t, c, "$JS.API.CONSUMER.MSG.NEXT.SLUICE.validator", func(ctx context.Context) error {
			_, err := c.NC.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT.SLUICE.validator", []byte(`{"batch":1,"expires":1000000000}`))
			return err
		})
		mustRefuse(t, c, "$JS.ACK.SLUICE.validator.1.1.1.1.1", func(ctx context.Context) error {
			return c.NC.Publish("$JS.ACK.SLUICE.validator.1.1.1.1.1", nil)
		})
	})
	for _, user := range natsUsers[1:] {
		t.Run(user+" may not create a stream, delete a bucket or change a consumer", func(t *testing.T) {
			c := connectAs(t, ns, user, pw[user])
			mustRefuse(t, c, "$JS.API.STREAM.CREATE.EVIL", func(ctx context.Context) error {
				_, err := c.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "EVIL", Subjects: []string{"evil.>"}})
				return err
			})
			mustRefuse(t, c, "$JS.API.STREAM.DELETE.KV_sluice_runs", func(ctx context.Context) error {
				return c.JS.DeleteKeyValue(ctx, bus.RunBucket)
			})
			mustRefuse(t, c, "$JS.API.STREAM.DELETE.SLUICE", func(ctx context.Context) error {
				return c.JS.DeleteStream(ctx, "SLUICE")
			})
			mustRefuse(t, c, "$JS.API.CONSUMER.DELETE.SLUICE.fetcher", func(ctx context.Context) error {
				return c.JS.DeleteConsumer(ctx, "SLUICE", bus.FetcherConsumer)
			})
			cfg := bus.ConsumerConfig(bus.Options{Stream: "SLUICE", SubjectPrefix: "etl"}, bus.FetcherConsumer, event.KindAvailable)
			cfg.MaxDeliver = 1
			mustRefuse(t, c, "$JS.API.CONSUMER.CREATE.SLUICE.fetcher.etl.*.available.*", func(ctx context.Context) error {
				_, err := c.JS.UpdateConsumer(ctx, "SLUICE", cfg)
				return err
			})
		})
	}
	// The buckets and the stream are all still there.
	for _, b := range bus.Buckets() {
		if _, err := admin.JS.KeyValue(ctx, b.Bucket); err != nil {
			t.Errorf("bucket %s: %v", b.Bucket, err)
		}
	}
}

// TestPermissionFileGrantsWhatServicesNeed checks bus.Needs, the subjects each service's code
// uses, against what the server says deploy/nats/auth.conf lets each user do.
func TestPermissionFileGrantsWhatServicesNeed(t *testing.T) {
	ns, pw := authServer(t)
	opts := bus.Options{Stream: "SLUICE", SubjectPrefix: "etl"}
	for _, svc := range allServices {
		c := connectAs(t, ns, svc.Name, pw[svc.Name])
		needs := bus.Needs(svc.Name, opts, []string{"orders", "refunds"}, "_INBOX_"+svc.Name)
		if err := c.CheckPermissions(context.Background(), svc.Name, needs); err != nil {
			t.Errorf("%s: %v", svc.Name, err)
		}
	}
	// And the check sees a missing grant: the fetcher does not need what the validator does.
	c := connectAs(t, ns, "fetcher", pw["fetcher"])
	err := c.CheckPermissions(context.Background(), "fetcher", bus.Needs("validator", opts, []string{"orders"}, "_INBOX_fetcher"))
	var r *bus.RefusedError
	if !errors.As(err, &r) || !strings.Contains(r.Subject, "validator") {
		t.Errorf("the fetcher's user passes the validator's needs: %v", err)
	}
}

const startConfig = `pipelines:
  - name: orders
    source:
      url: http://127.0.0.1:1/data/{ds}.csv
`

// startAs starts service alone as user with password against ns, the way its binary does.
func startAs(t *testing.T, ns *server.Server, svc app.Service, user, password string) error {
	t.Helper()
	path := testConfig{natsAuth: true, rest: startConfig}.write(t)
	cfg := loadConfig(t, path, map[string]string{"NATS_URL": ns.ClientURL(), "NATS_USER": user, "NATS_PASSWORD": password, "PG_URL": "postgres://unused"})
	ctx, cancel := context.WithCancel(context.Background())
	st, err := app.Start(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), app.Options{}, svc)
	if err == nil {
		cancel()
		_ = st.Wait()
		return nil
	}
	cancel()
	return err
}

// TestServiceStartFailsOnRefusedCredentials: a service whose credentials are wrong, or lack a
// permission it needs, stops at start with one line naming the service, the user and the
// subject, from the server's refusal (not a timeout).
func TestServiceStartFailsOnRefusedCredentials(t *testing.T) {
	provision := func(t *testing.T, ns *server.Server, pw map[string]string) {
		admin := connectAs(t, ns, "admin", pw["admin"])
		if err := bus.Provision(context.Background(), admin.JS, bus.Options{Stream: "SLUICE", SubjectPrefix: "etl"}); err != nil {
			t.Fatal(err)
		}
	}
	oneLine := func(t *testing.T, err error, want ...string) {
		t.Helper()
		if err == nil {
			t.Fatal("the service started")
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") {
			t.Errorf("more than one line: %q", msg)
		}
		for _, w := range want {
			if !strings.Contains(msg, w) {
				t.Errorf("error %q does not say %q", msg, w)
			}
		}
	}

	t.Run("wrong password", func(t *testing.T) {
		ns, pw := authServer(t)
		provision(t, ns, pw)
		err := startAs(t, ns, alerter.Service, "alerter", pw["alerter"]+"x")
		oneLine(t, err, "alerter", "nats user alerter", "authorization violation")
		if strings.Contains(err.Error(), pw["alerter"]) {
			t.Errorf("the error shows the password: %v", err)
		}
	})
	t.Run("the user of another service", func(t *testing.T) {
		ns, pw := authServer(t)
		provision(t, ns, pw)
		err := startAs(t, ns, alerter.Service, "fetcher", pw["fetcher"])
		var r *bus.RefusedError
		if !errors.As(err, &r) {
			t.Fatalf("not refused by the server: %v", err)
		}
		// Its very first request: the replies to the alerter's inbox are not the fetcher's to read.
		oneLine(t, err, "alerter", "nats user fetcher", `subscribe to "_INBOX_alerter.`)
	})
	t.Run("a publish permission it needs later is missing", func(t *testing.T) {
		ns, pw := authServerWith(t, "fetcher", "etl.*.landed.*")
		provision(t, ns, pw)
		err := startAs(t, ns, fetcher.Service, "fetcher", pw["fetcher"])
		var r *bus.RefusedError
		if !errors.As(err, &r) {
			t.Fatalf("not refused: %v", err)
		}
		oneLine(t, err, "fetcher", "nats user fetcher", `publish to "etl.orders.landed.`)
	})
	t.Run("a consumer permission is missing and the server cannot be asked", func(t *testing.T) {
		ns, pw := authServerWith(t, "alerter", "$SYS.REQ.USER.INFO", "$JS.API.CONSUMER.INFO.SLUICE.alerter-sla")
		provision(t, ns, pw)
		err := startAs(t, ns, alerter.Service, "alerter", pw["alerter"])
		var r *bus.RefusedError
		if !errors.As(err, &r) {
			t.Fatalf("not refused by the server: %v", err)
		}
		oneLine(t, err, "alerter", "nats user alerter", `publish to "$JS.API.CONSUMER.INFO.SLUICE.alerter-sla"`)
	})
	t.Run("nothing provisioned", func(t *testing.T) {
		ns, pw := authServer(t)
		err := startAs(t, ns, alerter.Service, "alerter", pw["alerter"])
		oneLine(t, err, "sluice provision")
	})
}

// TestConsolePermissions does, as the console user, what services/console does on the bus (its
// reads in read.go and live.go, its actions through pkg/trigger), and shows it may not take a
// service's messages.
func TestConsolePermissions(t *testing.T) {
	ns, pw := authServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := connectAs(t, ns, "admin", pw["admin"])
	opts := bus.Options{Stream: "SLUICE", SubjectPrefix: "etl"}
	if err := bus.Provision(ctx, admin.JS, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.JS.Publish(ctx, "etl.orders.available.2026-11-25", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.JS.Publish(ctx, "logs.etl.orders.2026-11-25.fetcher", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	c := connectAs(t, ns, "console", pw["console"])
	if _, err := c.NC.Subscribe("logs.etl.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	// read.go's readStream on both streams: an unnamed consumer that acks nothing, deleted after.
	for _, r := range []struct{ stream, filter string }{{"SLUICE", "etl.orders.*.2026-11-25"}, {"SLUICE_LOGS", "logs.etl.orders.2026-11-25.*"}} {
		s, err := c.JS.Stream(ctx, r.stream)
		if err != nil {
			t.Fatalf("stream %s: %v", r.stream, err)
		}
		cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{FilterSubject: r.filter, AckPolicy: jetstream.AckNonePolicy,
			InactiveThreshold: 30 * time.Second, MemoryStorage: true, Replicas: 1})
		if err != nil {
			t.Fatalf("read %s: %v", r.stream, err)
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(3*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for range batch.Messages() {
			n++
		}
		if n != 1 {
			t.Errorf("read %d messages of %s, want 1 (%v)", n, r.stream, batch.Error())
		}
		if err := s.DeleteConsumer(ctx, cons.CachedInfo().Name); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []string{bus.RunBucket, bus.ScheduleBucket, bus.LeaseBucket, bus.AlertBucket} {
		kv, err := c.JS.KeyValue(ctx, b)
		if err != nil {
			t.Fatalf("kv %s: %v", b, err)
		}
		lister, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatalf("list %s: %v", b, err)
		}
		for range lister.Keys() {
		}
	}
	// The actions: a trigger (requested, queued state) and pause/unpause (schedule state, tick).
	runs, err := runstate.New(ctx, c.JS)
	if err != nil {
		t.Fatal(err)
	}
	req := trigger.New(c.JS, runs, noop.NewTracerProvider(), opts)
	if _, err := req.Request(ctx, trigger.Request{Pipeline: "orders", DS: "2026-11-26", Trigger: "console"}); err != nil {
		t.Fatalf("trigger: %v", err)
	}
	p := &config.Pipeline{Name: "orders"}
	for _, paused := range []bool{true, false} {
		if _, err := trigger.SetPaused(ctx, c.JS, "etl", p, paused, "unpause"); err != nil {
			t.Fatalf("pause %v: %v", paused, err)
		}
	}
	noRefusals(t, c)

	mustRefuse(t, c, "$JS.API.CONSUMER.MSG.NEXT.SLUICE.fetcher", func(ctx context.Context) error {
		_, err := c.NC.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT.SLUICE.fetcher", []byte(`{"batch":1,"expires":1000000000}`))
		return err
	})
	mustRefuse(t, c, "etl.orders.available.2026-11-25", func(ctx context.Context) error {
		_, err := c.JS.Publish(ctx, "etl.orders.available.2026-11-25", []byte(`{}`))
		return err
	})
	mustRefuse(t, c, "$KV.sluice_leases.orders", func(ctx context.Context) error {
		kv, err := c.JS.KeyValue(ctx, bus.LeaseBucket)
		if err != nil {
			return err
		}
		_, err = kv.Put(ctx, "orders", []byte(`{}`))
		return err
	})
}
