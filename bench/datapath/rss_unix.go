//go:build unix

package main

import (
	"os"
	"runtime"
	"syscall"
	"time"
)

// maxRSSKB is the process's peak resident set size in KiB.
func maxRSSKB() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return rssKB(ru.Maxrss)
}

// childMaxRSSKB is a finished child's peak resident set size in KiB.
func childMaxRSSKB(ps *os.ProcessState) int64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return rssKB(ru.Maxrss)
	}
	return 0
}

func rssKB(maxrss int64) int64 {
	if runtime.GOOS == "darwin" {
		return maxrss / 1024 // bytes there, KiB on Linux
	}
	return maxrss
}

// selfCPU is the CPU seconds (user + system) this process has used.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return (time.Duration(ru.Utime.Nano()) + time.Duration(ru.Stime.Nano())).Seconds()
}
