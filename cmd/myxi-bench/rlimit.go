package main

import (
	"fmt"
	"syscall"
)

// raiseNoFile lifts the soft RLIMIT_NOFILE to the hard limit: every client is
// an open file. It returns the limit in force afterwards.
func raiseNoFile() (soft, hard uint64, err error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, 0, fmt.Errorf("getrlimit: %v", err)
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			return r.Cur, r.Max, fmt.Errorf("setrlimit: %v", err)
		}
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			return 0, 0, fmt.Errorf("getrlimit: %v", err)
		}
	}
	return r.Cur, r.Max, nil
}

// fdReserve is the number of files the tool keeps for itself besides its
// clients (stdio, the broker connection, /proc reads, the epoll fd, ...).
const fdReserve = 64
