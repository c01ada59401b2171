// Package bus connects sluice to NATS JetStream and provisions what the services share: the
// events stream, the KV buckets and every durable consumer. Provisioning needs admin
// credentials and runs once (`sluice provision`, or the CLI's embedded server at its start);
// services only bind to what exists. The embedded server itself lives in the sluice CLI
// (cmd/sluice/internal/embedded), so service binaries do not link nats-server.
package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

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
	// Replicas is how many servers store each stream and KV bucket (nats.replicas; 0 is 1).
	// With R3 on a three-node cluster an acknowledged write is on two servers' disks.
	Replicas int
}

// Webhook buckets of the sensor (push mode).
const (
	// MarkBucket holds a mark per <pipeline>.<ds> whose file a webhook announced.
	MarkBucket = "sluice_sensor_marks"
	// HookIDBucket remembers accepted webhook ids for twice the webhook timestamp tolerance:
	// inside that window a replayed push is refused.
	HookIDBucket = "sluice_webhook_ids"
	// HookIDTTL is how long an accepted webhook id is remembered (twice the sensor's
	// 5-minute timestamp tolerance).
	HookIDTTL = 10 * time.Minute
	// MarkTTL is how long a mark is kept: reruns of a ds within it skip the source check.
	MarkTTL = 30 * 24 * time.Hour
)

// Buckets are the KV buckets sluice uses, as provisioned.
func Buckets() []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{
		// Leases carry a per-key TTL, so the broker expires the lease of a holder that died.
		{Bucket: LeaseBucket, Description: "one active run per pipeline", Storage: jetstream.FileStorage, LimitMarkerTTL: time.Minute},
		{Bucket: RunBucket, Description: "run state", Storage: jetstream.FileStorage, History: 1, TTL: 90 * 24 * time.Hour},
		{Bucket: AlertBucket, Description: "alerts sent, for deduplication", Storage: jetstream.FileStorage, TTL: 30 * 24 * time.Hour},
		{Bucket: ScheduleBucket, Description: "schedule state per pipeline", Storage: jetstream.FileStorage, History: 1},
		{Bucket: MarkBucket, Description: "sources announced by webhooks", Storage: jetstream.FileStorage, History: 1, TTL: MarkTTL},
		{Bucket: HookIDBucket, Description: "webhook ids seen, against replays", Storage: jetstream.FileStorage, History: 1, TTL: HookIDTTL},
	}
}

// StreamConfig is the events stream as provisioned.
func StreamConfig(o Options) jetstream.StreamConfig {
	if o.Dedup == 0 {
		o.Dedup = 10 * time.Minute
	}
	return jetstream.StreamConfig{
		Name:        o.Stream,
		Description: "sluice run events",
		Subjects:    []string{event.StreamSubjects(o.SubjectPrefix)},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      30 * 24 * time.Hour,
		Duplicates:  o.Dedup,
		AllowMsgTTL: true,
		// Pipelines' cron schedules are messages in this stream that the server fires
		// (Nats-Schedule); a schedule replaces its previous version by a subject rollup.
		AllowMsgSchedules: true,
		AllowRollup:       true,
	}
}

// Provision creates or updates the events stream, the log stream, the KV buckets and every service's durable
// consumer (Consumers), idempotently. It needs credentials that may manage streams and
// consumers: `sluice provision` runs it with the admin user, and the CLI's embedded server at
// its start; services only bind (BindConsumer, js.KeyValue).
func Provision(ctx context.Context, js jetstream.JetStream, o Options) error {
	events := StreamConfig(o)
	events.Replicas = max(o.Replicas, 1)
	if _, err := js.CreateOrUpdateStream(ctx, events); err != nil {
		return fmt.Errorf("provision stream %s: %w", o.Stream, err)
	}
	logs := logstream.StreamConfig(o.Stream, o.SubjectPrefix, o.Logs)
	logs.Replicas = max(o.Replicas, 1)
	if _, err := js.CreateOrUpdateStream(ctx, logs); err != nil {
		return fmt.Errorf("provision stream %s: %w", logs.Name, err)
	}
	for _, b := range Buckets() {
		b.Replicas = max(o.Replicas, 1)
		if _, err := js.CreateOrUpdateKeyValue(ctx, b); err != nil {
			return fmt.Errorf("provision kv %s: %w", b.Bucket, err)
		}
		if b.Replicas > 1 {
			if err := leaderReads(ctx, js, "KV_"+b.Bucket); err != nil {
				return fmt.Errorf("provision kv %s: %w", b.Bucket, err)
			}
		}
	}
	for _, c := range Consumers(o) {
		if _, err := js.CreateOrUpdateConsumer(ctx, o.Stream, c.Config); err != nil {
			return fmt.Errorf("provision consumer %s: %w", c.Config.Durable, err)
		}
	}
	return nil
}

// leaderReads turns direct gets off for a replicated KV bucket's stream, so every read goes to
// its leader. nats.go creates buckets with allow_direct, and then any replica answers a Get: a
// follower that has not yet applied the last write answers with the value before it (on a
// three-node cluster, about one read in five right after a write). Every writer of sluice's
// buckets (run state, lease, schedule state) reads, then compare-and-sets on the revision it
// read, so a stale read is a failed write; retried at once it meets the same follower and gives
// up ("too much contention"). A KV handle looks at allow_direct when it binds, so services bind
// after provisioning, as they do.
func leaderReads(ctx context.Context, js jetstream.JetStream, stream string) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	cfg := s.CachedInfo().Config
	if !cfg.AllowDirect {
		return nil
	}
	cfg.AllowDirect = false
	_, err = js.UpdateStream(ctx, cfg)
	return err
}

// Durable consumer names. Each service pulls only from its own.
const (
	SensorConsumer      = "sensor"
	FetcherConsumer     = "fetcher"
	ValidatorConsumer   = "validator"
	PartitionerConsumer = "partitioner"
	DBTRunnerConsumer   = "dbtrunner"
	// The alerter has one consumer per kind it reports on, so a backlog of one kind never
	// holds up another.
	AlerterConsumer          = "alerter"
	AlerterSLAConsumer       = "alerter-sla"
	AlerterCompletedConsumer = "alerter-completed"
	// The sensor's scheduler reads the broker's schedule ticks, and run ends (completed,
	// failed) so the next interval follows a run's end.
	TickConsumer = "scheduler"
	EndConsumer  = "scheduler-ends"
)

// Consumer is a durable consumer of the events stream and the service that pulls from it.
type Consumer struct {
	Service string
	Config  jetstream.ConsumerConfig
}

// Consumers are every durable consumer of the events stream, in flow order.
func Consumers(o Options) []Consumer {
	return []Consumer{
		{"sensor", ConsumerConfig(o, SensorConsumer, event.KindRequested)},
		{"sensor", schedulerConsumer(TickConsumer, event.TickFilter(o.SubjectPrefix))},
		{"sensor", schedulerConsumer(EndConsumer, event.Filter(o.SubjectPrefix, event.KindCompleted), event.Filter(o.SubjectPrefix, event.KindFailed))},
		{"fetcher", ConsumerConfig(o, FetcherConsumer, event.KindAvailable)},
		{"validator", ConsumerConfig(o, ValidatorConsumer, event.KindLanded)},
		{"partitioner", ConsumerConfig(o, PartitionerConsumer, event.KindValidated)},
		{"dbtrunner", ConsumerConfig(o, DBTRunnerConsumer, event.KindPartitioned)},
		{"alerter", ConsumerConfig(o, AlerterConsumer, event.KindFailed)},
		{"alerter", ConsumerConfig(o, AlerterSLAConsumer, event.KindSLAMissed)},
		{"alerter", ConsumerConfig(o, AlerterCompletedConsumer, event.KindCompleted)},
	}
}

func schedulerConsumer(name string, filters ...string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: name, Description: "sluice " + name, FilterSubjects: filters,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: -1,
		// A new deployment starts from now: the first tick it publishes covers what was due.
		DeliverPolicy: jetstream.DeliverNewPolicy,
	}
}

// BindConsumer returns the provisioned durable consumer name of stream. A missing consumer
// is an error saying to provision; a refused request is reported by the connection (Connect).
func BindConsumer(ctx context.Context, js jetstream.JetStream, stream, name string) (jetstream.Consumer, error) {
	c, err := js.Consumer(ctx, stream, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("stream %s has no consumer %s: run `sluice provision` first", stream, name)
	}
	return c, err
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

// RequestTimeout bounds one attempt of a broker operation made under a longer context (a
// step's, whose deadline is minutes away). A request is never answered when the server it went
// through, or the leader that was to answer it, dies (a cluster node lost); the client does not
// resend it, so without a bound the step would wait for its own deadline.
const RequestTimeout = 10 * time.Second

// ElectionWait is how long a broker operation keeps trying while the broker is unavailable: a
// stream whose leader was lost answers nothing until its replicas elect another (seconds).
const ElectionWait = 30 * time.Second

// Retry runs op, one broker operation, each attempt bounded by RequestTimeout, again while the
// broker is unavailable (Unavailable) for up to ElectionWait. A node lost mid-run then costs the
// step a pause, not one of its pipeline's retries, which a whole election could use up. op must
// be safe to repeat: an attempt that timed out may have been applied (sluice's are idempotent:
// message ids, expected revisions, creates that tolerate the key existing).
func Retry(ctx context.Context, op func(context.Context) error) error {
	give := time.Now().Add(ElectionWait)
	for {
		actx, cancel := context.WithTimeout(ctx, RequestTimeout)
		err := op(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !Unavailable(err) || time.Now().After(give) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Unavailable reports an error of a broker that did not answer: no server or stream leader
// responded, or the request's time ran out (the server that carried it died).
func Unavailable(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded)
}

// IsNotFound reports a missing key or bucket.
func IsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrBucketNotFound)
}

// KeyValue binds to a provisioned KV bucket; a missing one is an error saying to provision.
func KeyValue(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("KV bucket %s does not exist: run `sluice provision` first", bucket)
	}
	return kv, err
}
