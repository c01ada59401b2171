package cluster

import "syscall"

// procAttr makes a node die with the process that started it (a test killed by its timeout).
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
