package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Reading /proc. The parsers take the file's text so that tests can feed
// them fixtures; the readers around them only open the files.

// clkTck is USER_HZ, the unit of the CPU times in /proc: 100 on Linux.
const clkTck = 100

// statusKB returns a "Name:   1234 kB" field of /proc/<pid>/status in kB.
func statusKB(status, name string) (int64, error) {
	for _, line := range strings.Split(status, "\n") {
		rest, ok := strings.CutPrefix(line, name+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %v", name, err)
		}
		if len(f) > 1 && f[1] != "kB" {
			return 0, fmt.Errorf("%s: unit %q, not kB", name, f[1])
		}
		return n, nil
	}
	return 0, fmt.Errorf("no %s in status", name)
}

// procStat is what this tool reads of /proc/<pid>/stat.
type procStat struct {
	ppid, pgrp   int
	utime, stime uint64 // clock ticks
}

// parseProcStat parses /proc/<pid>/stat. The command name (field 2) is in
// parentheses and may itself hold spaces and ')', so fields are counted from
// the last ')'.
func parseProcStat(s string) (procStat, error) {
	var ps procStat
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ps, errors.New("stat: no ')'")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); field k is f[k-3]: ppid 4, pgrp 5, utime 14, stime 15.
	if len(f) < 13 {
		return ps, fmt.Errorf("stat: %d fields after the name, want >= 13", len(f))
	}
	var err error
	num := func(k int) uint64 {
		n, e := strconv.ParseUint(f[k-3], 10, 64)
		if e != nil && err == nil {
			err = fmt.Errorf("stat field %d: %v", k, e)
		}
		return n
	}
	ps.ppid = int(num(4))
	ps.pgrp = int(num(5))
	ps.utime = num(14)
	ps.stime = num(15)
	return ps, err
}

// cpuTicks is the whole machine's CPU time from the first line of /proc/stat.
type cpuTicks struct {
	busy, total uint64 // total = busy + idle + iowait
}

// parseSystemStat parses the "cpu " line of /proc/stat: user nice system idle
// iowait irq softirq steal (guest times are already inside user and nice).
func parseSystemStat(s string) (cpuTicks, error) {
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		if len(f) < 5 {
			return cpuTicks{}, errors.New("/proc/stat: short cpu line")
		}
		var v [8]uint64
		for k := 1; k < len(f) && k <= 8; k++ {
			n, err := strconv.ParseUint(f[k], 10, 64)
			if err != nil {
				return cpuTicks{}, fmt.Errorf("/proc/stat: %v", err)
			}
			v[k-1] = n
		}
		idle := v[3] + v[4]
		busy := v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
		return cpuTicks{busy: busy, total: busy + idle}, nil
	}
	return cpuTicks{}, errors.New("/proc/stat: no cpu line")
}

// listenInodes returns the socket inodes of /proc/net/tcp{,6} text that
// listen (state 0A) on port.
func listenInodes(netTCP string, port int) []string {
	var out []string
	want := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(netTCP, "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[0] == "sl" {
			continue
		}
		if strings.HasSuffix(f[1], want) && f[3] == "0A" {
			out = append(out, f[9])
		}
	}
	return out
}

func readProcFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}

// findListenerPID returns the pid of the process that holds a socket
// listening on the TCP port (0 when none is found).
func findListenerPID(port int) (int, error) {
	var inodes []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		s, err := readProcFile(f)
		if err != nil {
			continue
		}
		inodes = append(inodes, listenInodes(s, port)...)
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("nothing listens on port %d", port)
	}
	want := map[string]bool{}
	for _, in := range inodes {
		want["socket:["+in+"]"] = true
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	self := os.Getpid()
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == self {
			continue
		}
		fds, err := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name()))
			if err == nil && want[link] {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("port %d listens, but no process visible here holds the socket", port)
}

// processName is the comm of pid, for the report.
func processName(pid int) string {
	s, err := readProcFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(s)
}

// readTail returns the last n lines of a file (for a failed spawn).
func readTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
