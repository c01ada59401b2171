//go:build unix

package crash

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestPointKillsOnlyAtTheNamedArrival runs this test binary again as a child that passes the
// point three times; with a chaos build the child must die by SIGKILL at the second arrival,
// without one it must exit normally.
func TestPointKillsOnlyAtTheNamedArrival(t *testing.T) {
	if os.Getenv("SLUICE_CRASH_CHILD") == "1" {
		for i := 1; i <= 3; i++ {
			Point("fetcher", "other-point")
			Point("sensor", AfterHandle)
			os.Stdout.WriteString("passed " + string(rune('0'+i)) + "\n")
			Point("fetcher", AfterHandle)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPointKillsOnlyAtTheNamedArrival$", "-test.v")
	cmd.Env = append(os.Environ(), "SLUICE_CRASH_CHILD=1", EnvVar+"=fetcher:after-handle:2")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !Enabled {
		if err != nil {
			t.Fatalf("child of a build without crash points failed: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "passed 3") {
			t.Fatalf("child did not pass the point three times:\n%s", out)
		}
		return
	}
	if !errors.As(err, &exit) {
		t.Fatalf("child exited with %v, want SIGKILL\n%s", err, out)
	}
	ws := exit.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want SIGKILL\n%s", ws, out)
	}
	if !strings.Contains(string(out), "passed 2") || strings.Contains(string(out), "passed 3") {
		t.Errorf("child did not die at the second arrival:\n%s", out)
	}
	if !strings.Contains(string(out), "sluice crash point fetcher:after-handle:2 reached") {
		t.Errorf("child did not announce the crash:\n%s", out)
	}
}
