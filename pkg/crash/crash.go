// Package crash holds sluice's named crash points, for fault-injection tests. In a build with
// `-tags chaos` the environment variable SLUICE_CRASH=<service>:<point>[:<nth>] makes the process
// kill itself with SIGKILL the nth time (default the first) that service reaches that point, so a
// test can stop a real service at an exact place (after its side effect, before its ack) with
// no chance to clean up. In every other build Point compiles to nothing and the variable is
// ignored.
package crash

import (
	"fmt"
	"strconv"
	"strings"
)

// EnvVar names the crash spec in a chaos build's environment.
const EnvVar = "SLUICE_CRASH"

// The router's crash points, reached by every service for every message it handles.
const (
	// AfterHandle is after the handler's side effect, before the next event is published.
	AfterHandle = "after-handle"
	// AfterPublish is after the next event is published, before the message is acked.
	AfterPublish = "after-publish"
)

// Crash points inside steps.
const (
	// MidUpload is the fetcher streaming the source's body into its upload: part of it read,
	// the object not yet stored.
	MidUpload = "mid-upload"
	// MidCopy is the validator's COPY into staging with rows already sent, not yet ended or
	// committed.
	MidCopy = "mid-copy"
	// AfterSend is the alerter after a channel accepted an alert, before the KV record of it.
	AfterSend = "after-send"
)

// Spec says where a chaos build crashes.
type Spec struct {
	Service string
	Point   string
	// Nth is which arrival at the point crashes (1 for the first).
	Nth int
}

func (s Spec) String() string { return fmt.Sprintf("%s:%s:%d", s.Service, s.Point, s.Nth) }

// Parse reads <service>:<point>[:<nth>].
func Parse(spec string) (Spec, error) {
	parts := strings.Split(spec, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return Spec{}, fmt.Errorf("%s=%q: want <service>:<point>[:<nth>]", EnvVar, spec)
	}
	s := Spec{Service: parts[0], Point: parts[1], Nth: 1}
	if len(parts) == 3 {
		n, err := strconv.Atoi(parts[2])
		if err != nil || n < 1 {
			return Spec{}, fmt.Errorf("%s=%q: nth %q must be a positive number", EnvVar, spec, parts[2])
		}
		s.Nth = n
	}
	return s, nil
}
