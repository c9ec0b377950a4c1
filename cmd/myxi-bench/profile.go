package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// startCPUProfile profiles this tool (not the server: profile that with its
// own pprof endpoint) into path; the returned func stops and closes it.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("-cpuprofile: %v", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("-cpuprofile: %v", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
