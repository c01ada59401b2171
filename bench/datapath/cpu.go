package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The machine is shared, so wall-clock time swings with other people's work; CPU seconds spent
// by each side of a load (the client, PostgreSQL, the S3 server) do not, and the report shows
// them next to the times. The servers' pids come from their pid files, named by run.sh in
// BENCH_PG_PIDFILE (postmaster.pid) and BENCH_S3_PIDFILE.

// clkTck is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every Linux platform Go runs on.
const clkTck = 100

// procCPU is a process's own CPU seconds and those of its children that it has reaped.
func procCPU(pid int) (self, reaped float64, ppid int, ok bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, 0, false
	}
	// Fields after the command, which may itself hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return 0, 0, 0, false
	}
	n := func(k int) float64 { v, _ := strconv.ParseFloat(f[k], 64); return v / clkTck }
	ppid, _ = strconv.Atoi(f[1])
	// f[0] is field 3 (state): utime, stime, cutime, cstime are fields 14–17.
	return n(11) + n(12), n(13) + n(14), ppid, true
}

// treeCPU is the CPU seconds a server has used so far: the process, its children that have
// exited (PostgreSQL's backends of finished connections) and its live children.
func treeCPU(pidfile string) float64 {
	if pidfile == "" {
		return 0
	}
	b, err := os.ReadFile(pidfile)
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	root, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return 0
	}
	self, reaped, _, ok := procCPU(root)
	if !ok {
		return 0
	}
	total := self + reaped
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == root {
			continue
		}
		if s, _, ppid, ok := procCPU(pid); ok && ppid == root {
			total += s
		}
	}
	return total
}

// serverCPU samples both servers.
type serverCPU struct{ pg, s3 float64 }

func sampleServers() serverCPU {
	return serverCPU{pg: treeCPU(os.Getenv("BENCH_PG_PIDFILE")), s3: treeCPU(os.Getenv("BENCH_S3_PIDFILE"))}
}

// since fills r's server CPU with what the servers used after s was taken.
func (s serverCPU) since(r *result) {
	now := sampleServers()
	r.PGCPU, r.S3CPU = now.pg-s.pg, now.s3-s.s3
}

// load1 is the one-minute load average, so a reader can see how busy the machine was.
func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
