//go:build !unix

package main

import "os"

// Peak RSS and CPU time are unknown off Unix; the report then shows zeros.
func maxRSSKB() int64                         { return 0 }
func childMaxRSSKB(ps *os.ProcessState) int64 { return 0 }
func selfCPU() float64                        { return 0 }
