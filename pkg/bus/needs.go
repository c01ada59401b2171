package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-etl/sluice/pkg/event"
)

// Need is one subject a service needs the server to allow its user: to publish to, or to
// subscribe to.
type Need struct {
	// Op is "publish to" or "subscribe to", as RefusedError says it.
	Op      string
	Subject string
}

// produces are the events each service publishes besides `failed`, which every one may.
var produces = map[string][]event.Kind{
	"sensor":      {event.KindRequested, event.KindAvailable},
	"fetcher":     {event.KindLanded},
	"validator":   {event.KindValidated},
	"partitioner": {event.KindPartitioned},
	"dbtrunner":   {event.KindCompleted},
}

// buckets are the KV buckets each service reads and writes besides leases and run state, which
// the shared plumbing of every service uses.
var buckets = map[string][]string{
	"sensor":  {ScheduleBucket, MarkBucket, HookIDBucket},
	"alerter": {AlertBucket},
}

// Needs lists what service needs of the broker to do its step, with concrete subjects (the
// pipelines' names and an example date), for checking a user's permissions at start. It is the
// code's side of deploy/nats/auth.conf: the permission tests check the file grants all of it.
func Needs(service string, o Options, pipelines []string, inbox string) []Need {
	pub := func(s ...string) []Need {
		out := make([]Need, len(s))
		for i, x := range s {
			out[i] = Need{"publish to", x}
		}
		return out
	}
	const ds = "2000-01-01"
	var n []Need
	for _, c := range Consumers(o) {
		if c.Service != service {
			continue
		}
		d := c.Config.Durable
		n = append(n, pub("$JS.API.CONSUMER.INFO."+o.Stream+"."+d, "$JS.API.CONSUMER.MSG.NEXT."+o.Stream+"."+d,
			"$JS.ACK."+o.Stream+"."+d+".1.1.1.1.1")...)
		n = append(n, Need{"subscribe to", event.MaxDeliveriesAdvisory(o.Stream, d)})
	}
	n = append(n, pub("$JS.API.STREAM.INFO."+o.Stream, "$JS.API.STREAM.MSG.GET."+o.Stream)...)
	for _, p := range pipelines {
		n = append(n, pub(event.Subject(o.SubjectPrefix, p, event.KindFailed, ds), event.LogSubject(o.SubjectPrefix, p, ds, service))...)
		for _, k := range produces[service] {
			n = append(n, pub(event.Subject(o.SubjectPrefix, p, k, ds))...)
		}
		if service == "sensor" {
			// The pipeline's broker schedule, its ticks, and SLA deadlines of the runs it requests.
			n = append(n, pub(event.ScheduleSubject(o.SubjectPrefix, p), event.TickSubject(o.SubjectPrefix, p),
				event.DeadlineSubject(o.SubjectPrefix, p, ds, "run"))...)
		}
	}
	if service == "sensor" || service == "alerter" {
		n = append(n, pub("$JS.API.STREAM.PURGE."+o.Stream)...) // a removed schedule, a met SLA deadline
	}
	if service == "sensor" {
		// A run that takes the lease leaves the lease queue: its entry is purged (lease/queue.go).
		n = append(n, pub("$JS.API.STREAM.PURGE.KV_"+LeaseBucket)...)
	}
	for _, b := range append([]string{LeaseBucket, RunBucket}, buckets[service]...) {
		n = append(n, pub("$JS.API.STREAM.INFO.KV_"+b, "$JS.API.DIRECT.GET.KV_"+b+"."+event.KVSubject(b, "key"), event.KVSubject(b, "key"))...)
	}
	// Every process follows the run-state bucket for its metrics (an ordered consumer).
	n = append(n, pub("$JS.API.CONSUMER.CREATE.KV_"+RunBucket+".c.$KV."+RunBucket+".>", "$JS.API.CONSUMER.DELETE.KV_"+RunBucket+".c",
		"$JS.FC.KV_"+RunBucket+".1.1")...)
	if inbox != "" {
		n = append(n, Need{"subscribe to", inbox + ".reply"})
	}
	return n
}

// userInfo is the part of the server's $SYS.REQ.USER.INFO answer sluice reads.
type userInfo struct {
	Data *struct {
		User        string `json:"user"`
		Permissions *struct {
			Publish   *subjectPermission `json:"publish"`
			Subscribe *subjectPermission `json:"subscribe"`
		} `json:"permissions"`
	} `json:"data"`
	Error *struct {
		Description string `json:"description"`
	} `json:"error"`
}

type subjectPermission struct {
	Allow []string `json:"allow"`
	Deny  []string `json:"deny"`
}

func (p *subjectPermission) allows(subject string) bool {
	if p == nil {
		return true
	}
	if len(p.Allow) > 0 && !matchesAny(p.Allow, subject) {
		return false
	}
	return !matchesAny(p.Deny, subject)
}

func matchesAny(patterns []string, subject string) bool {
	for _, p := range patterns {
		if SubjectMatches(p, subject) {
			return true
		}
	}
	return false
}

// SubjectMatches reports whether a NATS subject pattern (tokens, `*` for one token, `>` for one
// or more at the end) matches subject.
func SubjectMatches(pattern, subject string) bool {
	pt, st := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, p := range pt {
		if p == ">" {
			return len(st) > i
		}
		if i >= len(st) || (p != "*" && p != st[i]) {
			return false
		}
	}
	return len(pt) == len(st)
}

// ErrCannotCheck says the server did not tell the user's permissions (no system account, or
// the user may not ask): start-up then finds refusals as they happen.
var ErrCannotCheck = errors.New("the server does not tell this user's permissions")

// CheckPermissions asks the server what c's user may do ($SYS.REQ.USER.INFO) and returns a
// *RefusedError for the first need it does not allow.
func (c *Conn) CheckPermissions(ctx context.Context, who string, needs []Need) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	type answer struct {
		m   *nats.Msg
		err error
	}
	got := make(chan answer, 1)
	go func() {
		m, err := c.NC.RequestWithContext(ctx, "$SYS.REQ.USER.INFO", nil)
		got <- answer{m, err}
	}()
	var a answer
	select {
	case a = <-got:
	case err := <-c.Refused:
		var r *RefusedError
		if errors.As(err, &r) && r.Subject == "$SYS.REQ.USER.INFO" {
			cancel()
			<-got
			return ErrCannotCheck
		}
		cancel()
		<-got
		return err
	}
	if a.err != nil {
		return fmt.Errorf("%w: %v", ErrCannotCheck, a.err)
	}
	var info userInfo
	if err := json.Unmarshal(a.m.Data, &info); err != nil || info.Data == nil {
		return ErrCannotCheck
	}
	if info.Data.Permissions == nil {
		return nil // no restrictions
	}
	perms := info.Data.Permissions
	for _, n := range needs {
		p := perms.Publish
		if n.Op == "subscribe to" {
			p = perms.Subscribe
		}
		if !p.allows(n.Subject) {
			return &RefusedError{Who: who, User: info.Data.User, Op: n.Op, Subject: n.Subject}
		}
	}
	return nil
}
