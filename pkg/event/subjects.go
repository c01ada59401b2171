package event

import "strings"

// Every subject sluice uses is built, and parsed, here. <prefix> is the deployment's subject
// prefix (nats.subject_prefix, one token), so each shape has a fixed number of tokens:
//
//	<prefix>.<pipeline>.<kind>.<ds>               an event of a run               Subject, ParseSubject
//	<prefix>.<pipeline>.schedule                  a pipeline's message schedule   ScheduleSubject
//	<prefix>.<pipeline>.tick                      where that schedule fires       TickSubject, ParseTick
//	<prefix>.<pipeline>.deadline.<ds>.<run id>    a run's SLA deadline            DeadlineSubject
//	logs.<prefix>.<pipeline>.<ds>.<service>       a service's log records of a run LogSubject, ParseLogSubject
//	$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>                 MaxDeliveriesAdvisory
//	$KV.<bucket>.<key>                            a key of a KV bucket            KVSubject
//
// A deadline has five tokens, so no consumer of a run's events (<prefix>.*.<kind>.*) sees one.

// Subject is the subject of an event: <prefix>.<pipeline>.<kind>.<ds>.
func Subject(prefix, pipeline string, kind Kind, ds string) string {
	return prefix + "." + pipeline + "." + string(kind) + "." + ds
}

// Filter is the subject filter matching one kind for every pipeline and date.
func Filter(prefix string, kind Kind) string { return prefix + ".*." + string(kind) + ".*" }

// RunFilter matches every event of one pipeline's date.
func RunFilter(prefix, pipeline, ds string) string { return prefix + "." + pipeline + ".*." + ds }

// StreamSubjects matches everything the events stream holds: events, schedules, ticks, deadlines.
func StreamSubjects(prefix string) string { return prefix + ".>" }

// ParseSubject reads an event's subject; ok is false for any other subject.
func ParseSubject(subject string) (pipeline string, kind Kind, ds string, ok bool) {
	t := strings.Split(subject, ".")
	if len(t) != 4 {
		return "", "", "", false
	}
	return t[1], Kind(t[2]), t[3], true
}

// ScheduleSubject holds a pipeline's message schedule: <prefix>.<pipeline>.schedule.
func ScheduleSubject(prefix, pipeline string) string { return prefix + "." + pipeline + ".schedule" }

// TickSubject is where a pipeline's schedule fires: <prefix>.<pipeline>.tick.
func TickSubject(prefix, pipeline string) string { return prefix + "." + pipeline + ".tick" }

// TickFilter matches every pipeline's ticks.
func TickFilter(prefix string) string { return prefix + ".*.tick" }

// ParseTick returns the pipeline a tick is for; ok is false for any other subject.
func ParseTick(subject string) (pipeline string, ok bool) {
	t := strings.Split(subject, ".")
	if len(t) != 3 || t[2] != "tick" {
		return "", false
	}
	return t[1], true
}

// DeadlineSubject holds a run's SLA deadline: <prefix>.<pipeline>.deadline.<ds>.<run id>.
func DeadlineSubject(prefix, pipeline, ds, runID string) string {
	return prefix + "." + pipeline + ".deadline." + ds + "." + runID
}

// LogSubject is where a service's log records of one run's date go:
// logs.<prefix>.<pipeline>.<ds>.<service>.
func LogSubject(prefix, pipeline, ds, service string) string {
	return "logs." + prefix + "." + pipeline + "." + ds + "." + service
}

// LogFilter matches every service's log records of one pipeline's date.
func LogFilter(prefix, pipeline, ds string) string {
	return "logs." + prefix + "." + pipeline + "." + ds + ".*"
}

// LogsAll matches every log record of a deployment (the log stream's subjects).
func LogsAll(prefix string) string { return "logs." + prefix + ".>" }

// ParseLogSubject reads a log record's subject; ok is false for any other subject.
func ParseLogSubject(subject string) (pipeline, ds, service string, ok bool) {
	t := strings.Split(subject, ".")
	if len(t) != 5 || t[0] != "logs" {
		return "", "", "", false
	}
	return t[2], t[3], t[4], true
}

// MaxDeliveriesAdvisory is where the broker announces that it stopped delivering a message of
// consumer (of stream) after its max deliveries.
func MaxDeliveriesAdvisory(stream, consumer string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + stream + "." + consumer
}

// KVSubject is the subject of key in the KV bucket.
func KVSubject(bucket, key string) string { return "$KV." + bucket + "." + key }
