//go:build chaos && unix

package crash

import (
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
)

// Enabled reports whether this build has crash points.
const Enabled = true

var (
	armed *Spec
	hits  atomic.Int64
)

// The chaos build reads its spec once at start: this is test-only code in a test-only build,
// the one place in pkg that reads the environment, because a crash point must be chosen without
// any change to the service under test. A bad spec stops the process: a chaos case that would
// silently never crash proves nothing.
func init() {
	v := os.Getenv(EnvVar)
	if v == "" {
		return
	}
	s, err := Parse(v)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sluice crash:", err)
		os.Exit(2)
	}
	armed = &s
}

// Point kills the process with SIGKILL when SLUICE_CRASH names service and point and this is
// the nth arrival there. It announces the crash on stderr first, so a test can tell the crash
// it asked for from any other death.
func Point(service, point string) {
	s := armed
	if s == nil || s.Service != service || s.Point != point {
		return
	}
	if hits.Add(1) != int64(s.Nth) {
		return
	}
	fmt.Fprintf(os.Stderr, "sluice crash point %s reached: SIGKILL\n", s)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is asynchronous: nothing after the point may run
}
