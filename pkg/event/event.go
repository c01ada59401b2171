// Package event defines the messages sluice's services exchange over JetStream: one Go type per
// event kind, the subject each is published on, and the run header every event carries.
package event

import (
	"fmt"
	"time"
)

// Kind names an event; it is the third token of the subject.
type Kind string

const (
	KindRequested   Kind = "requested"
	KindAvailable   Kind = "available"
	KindLanded      Kind = "landed"
	KindValidated   Kind = "validated"
	KindPartitioned Kind = "partitioned"
	KindCompleted   Kind = "completed"
	KindFailed      Kind = "failed"
	KindSLAMissed   Kind = "sla_missed"
)

// Kinds lists every event kind in flow order.
var Kinds = []Kind{KindRequested, KindAvailable, KindLanded, KindValidated, KindPartitioned, KindCompleted, KindFailed, KindSLAMissed}

// Event is implemented by every event type.
type Event interface {
	Kind() Kind
	Header() *Run
}

// Run is the header every event carries: which run of which pipeline for which date, the lease's
// fencing token once the sensor holds it, and the steps done so far.
type Run struct {
	RunID       string       `json:"run_id"`
	Pipeline    string       `json:"pipeline"`
	DS          string       `json:"ds"`
	Fence       uint64       `json:"fence,omitempty"`
	Trigger     string       `json:"trigger,omitempty"`
	RequestedAt time.Time    `json:"requested_at"`
	Steps       []StepResult `json:"steps,omitempty"`
}

// Header returns the run header; every event type embeds Run and so gets this method.
func (r *Run) Header() *Run { return r }

// StepResult records one finished step of a run.
type StepResult struct {
	Step       string    `json:"step"`
	StartedAt  time.Time `json:"started_at"`
	DurationMS int64     `json:"duration_ms"`
	Attempts   int       `json:"attempts"`
	// LeaseAt and Pokes describe the sensor's wait: when the run took the pipeline's lease (its
	// turn came) and how many times it asked the source for the file after that.
	LeaseAt time.Time `json:"lease_at,omitzero"`
	Pokes   int       `json:"pokes,omitempty"`
}

// Object is the raw file landed in object storage.
type Object struct {
	Bucket    string `json:"bucket"`
	Key       string `json:"key"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	VersionID string `json:"version_id,omitempty"`
	SourceURL string `json:"source_url"`
}

// Requested asks for a run of a pipeline for one ds.
type Requested struct {
	Run
}

// Available says the source has the file for ds.
type Available struct {
	Run
	URL string `json:"url"`
	// Pokes counts the source checks since the run took the lease (not the waits for its turn).
	Pokes int `json:"pokes"`
	// LeaseAt is when the run took the pipeline's lease.
	LeaseAt time.Time `json:"lease_at,omitzero"`
}

// Landed says the raw file is in object storage.
type Landed struct {
	Run
	Object Object `json:"object"`
}

// Quarantine is what the validator set aside instead of loading: rows that broke the contract,
// within the pipeline's max_bad_rows, listed in the rejects file RejectsKey (in the landed
// object's bucket). Both are absent when every row loaded.
type Quarantine struct {
	Rejected   int64  `json:"rejected,omitempty"`
	RejectsKey string `json:"rejects_key,omitempty"`
}

// Validated says the file met its contract and the staging table holds the ds slice.
type Validated struct {
	Run
	Object       Object `json:"object"`
	StagingTable string `json:"staging_table"`
	Rows         int64  `json:"rows"`
	Quarantine
}

// Partitioned says the target partition for ds exists.
type Partitioned struct {
	Run
	Object       Object `json:"object"`
	StagingTable string `json:"staging_table"`
	Rows         int64  `json:"rows"`
	Table        string `json:"table"`
	Partition    string `json:"partition"`
	Quarantine
}

// ModelResult is one dbt node's outcome.
type ModelResult struct {
	Node         string  `json:"node"`
	Status       string  `json:"status"`
	Seconds      float64 `json:"seconds"`
	RowsAffected int64   `json:"rows_affected"`
}

// Completed says the run upserted its rows into the target.
type Completed struct {
	Run
	Object    Object `json:"object"`
	Table     string `json:"table"`
	Partition string `json:"partition"`
	Staged    int64  `json:"staged"`
	Inserted  int64  `json:"inserted"`
	Updated   int64  `json:"updated"`
	Unchanged int64  `json:"unchanged"`
	// Partitions says where the rows went: the ds's partition first, then each partition that
	// lost rows to it or kept a newer version.
	Partitions []PartitionRows `json:"partitions,omitempty"`
	Models     []ModelResult   `json:"models,omitempty"`
	DocsKey    string          `json:"docs_key,omitempty"`
	Quarantine
}

// PartitionRows is what one run did to one partition of the target.
type PartitionRows struct {
	Partition string `json:"partition"`
	Inserted  int64  `json:"inserted,omitempty"`  // new keys, into the ds's partition
	Updated   int64  `json:"updated,omitempty"`   // newer versions of rows already in it
	MovedIn   int64  `json:"moved_in,omitempty"`  // newer versions of rows stored in another partition
	MovedOut  int64  `json:"moved_out,omitempty"` // rows replaced by the ds's newer version
	Unchanged int64  `json:"unchanged,omitempty"` // rows whose stored version is as new or newer
}

// Failed says a step failed for good.
type Failed struct {
	Run
	Step     string       `json:"step"`
	Attempts int          `json:"attempts"`
	Class    FailureClass `json:"class"`
	Error    string       `json:"error"`
}

// FailureClass says why a step failed for good.
type FailureClass string

const (
	// ClassPermanent is an error that can never succeed on retry (bad data, a contract
	// violation): the run fails at once.
	ClassPermanent FailureClass = "permanent"
	// ClassTransient is an error whose retries are spent.
	ClassTransient FailureClass = "transient"
	// ClassTimeout is a step that passed its deadline on its last attempt.
	ClassTimeout FailureClass = "timeout"
	// ClassFenced is a run that lost its lease: a newer run holds the pipeline.
	ClassFenced FailureClass = "fenced"
)

// SLAMissed says the run's deadline passed before it completed.
type SLAMissed struct {
	Run
	Deadline time.Time `json:"deadline"`
}

func (*Requested) Kind() Kind   { return KindRequested }
func (*Available) Kind() Kind   { return KindAvailable }
func (*Landed) Kind() Kind      { return KindLanded }
func (*Validated) Kind() Kind   { return KindValidated }
func (*Partitioned) Kind() Kind { return KindPartitioned }
func (*Completed) Kind() Kind   { return KindCompleted }
func (*Failed) Kind() Kind      { return KindFailed }
func (*SLAMissed) Kind() Kind   { return KindSLAMissed }

// New returns an empty event of the given kind, to decode into.
func New(k Kind) (Event, error) {
	switch k {
	case KindRequested:
		return &Requested{}, nil
	case KindAvailable:
		return &Available{}, nil
	case KindLanded:
		return &Landed{}, nil
	case KindValidated:
		return &Validated{}, nil
	case KindPartitioned:
		return &Partitioned{}, nil
	case KindCompleted:
		return &Completed{}, nil
	case KindFailed:
		return &Failed{}, nil
	case KindSLAMissed:
		return &SLAMissed{}, nil
	}
	return nil, fmt.Errorf("unknown event kind %q", k)
}

// ParseDS parses an execution date. Everything that builds names, keys or SQL from a ds uses
// the parsed date, never the raw text.
func ParseDS(ds string) (time.Time, error) {
	t, err := time.Parse(time.DateOnly, ds)
	if err != nil {
		return time.Time{}, fmt.Errorf("execution date %q is not YYYY-MM-DD", ds)
	}
	return t, nil
}

// Step names a step of a run, after the service that performs it.
type Step string

const (
	StepSensor      Step = "sensor"
	StepFetcher     Step = "fetcher"
	StepValidator   Step = "validator"
	StepPartitioner Step = "partitioner"
	StepDBTRunner   Step = "dbtrunner"
	StepAlerter     Step = "alerter"
)

// Steps lists the steps in flow order: each consumes the event the one before produces.
var Steps = []Step{StepSensor, StepFetcher, StepValidator, StepPartitioner, StepDBTRunner, StepAlerter}
