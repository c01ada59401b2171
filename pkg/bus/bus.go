// Package bus connects sluice to NATS JetStream: it starts the embedded server of the local
// topology, connects to an external one otherwise, and provisions (idempotently, at every start)
// the events stream, the KV buckets and the durable consumers every service shares.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/logstream"
)

// KV bucket names.
const (
	LeaseBucket = "sluice_leases"
	RunBucket   = "sluice_runs"
	AlertBucket = "sluice_alerts"
	// ScheduleBucket holds each pipeline's schedule state: the last interval requested, the
	// run it became, and whether the pipeline is paused.
	ScheduleBucket = "sluice_schedules"
)

// Options are the broker settings taken from config.
type Options struct {
	Stream        string
	SubjectPrefix string
	// Dedup is the stream's duplicate window: a step republishing after a crash within it is
	// dropped by the server (Nats-Msg-Id is <run id>.<event>).
	Dedup time.Duration
	// Logs bounds the log stream (logstream.StreamName(Stream)) that runs' log records go to.
	Logs logstream.Limits
}

// Embedded starts a JetStream server storing in dir and listening on listen (host:port).
func Embedded(dir, listen string) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("nats listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats listen port %q: %w", portStr, err)
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "sluice-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s did not become ready (is the port in use?)", listen)
	}
	return ns, nil
}

// Connect dials url with reconnects, naming the connection after the service.
func Connect(url, name string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("nats reconnected") }),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// Provision creates or updates the events stream, the log stream and the KV buckets. It is safe to call from
// every service at every start.
func Provision(ctx context.Context, js jetstream.JetStream, o Options) error {
	if o.Dedup == 0 {
		o.Dedup = 10 * time.Minute
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        o.Stream,
		Description: "sluice run events",
		Subjects:    []string{o.SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      30 * 24 * time.Hour,
		Duplicates:  o.Dedup,
		AllowMsgTTL: true,
		// Pipelines' cron schedules are messages in this stream that the server fires
		// (Nats-Schedule); a schedule replaces its previous version by a subject rollup.
		AllowMsgSchedules: true,
		AllowRollup:       true,
	})
	if err != nil {
		return fmt.Errorf("provision stream %s: %w", o.Stream, err)
	}
	logs := logstream.StreamConfig(o.Stream, o.SubjectPrefix, o.Logs)
	if _, err := js.CreateOrUpdateStream(ctx, logs); err != nil {
		return fmt.Errorf("provision stream %s: %w", logs.Name, err)
	}
	buckets := []jetstream.KeyValueConfig{
		// Leases carry a per-key TTL, so the broker expires the lease of a holder that died.
		{Bucket: LeaseBucket, Description: "one active run per pipeline", Storage: jetstream.FileStorage, LimitMarkerTTL: time.Minute},
		{Bucket: RunBucket, Description: "run state", Storage: jetstream.FileStorage, History: 1, TTL: 90 * 24 * time.Hour},
		{Bucket: AlertBucket, Description: "alerts sent, for deduplication", Storage: jetstream.FileStorage, TTL: 30 * 24 * time.Hour},
		{Bucket: ScheduleBucket, Description: "schedule state per pipeline", Storage: jetstream.FileStorage, History: 1},
	}
	for _, b := range buckets {
		if _, err := js.CreateOrUpdateKeyValue(ctx, b); err != nil {
			return fmt.Errorf("provision kv %s: %w", b.Bucket, err)
		}
	}
	return nil
}

// ConsumerConfig is the durable consumer a step uses: replicas of a service share it.
func ConsumerConfig(o Options, step string, consumes event.Kind) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       step,
		Description:   "sluice " + step,
		FilterSubject: event.Filter(o.SubjectPrefix, consumes),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		// Retries are counted by the plumbing (per pipeline policy); the broker's cap only ends
		// a message that never gets that far (its handler's process dies or hangs every time),
		// and flow.WatchMaxDeliveries fails its run. Waiting runs are redelivered until their
		// sensor timeout, so the sensor's consumer has no cap.
		MaxDeliver:    maxDeliver(consumes),
		MaxAckPending: 10000,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// MaxDeliveries is how often the broker delivers one message to a step (except the sensor's)
// before giving up on it: far above any retry policy (config allows at most 50 retries), so it
// only ends crash loops. Waits (a Slack Retry-After) count as deliveries too.
const MaxDeliveries = 100

func maxDeliver(consumes event.Kind) int {
	if consumes == event.KindRequested {
		return -1
	}
	return MaxDeliveries
}

// IsNotFound reports a missing key or bucket.
func IsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrBucketNotFound)
}
