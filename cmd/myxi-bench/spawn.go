package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// -spawn: the tool starts the server itself (sh -c COMMAND, in a process
// group of its own), waits until its port listens, samples the process that
// holds the listening socket (the real server, also under `go run`), and
// stops the whole group at the end.

type spawned struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error
}

// spawnServer starts the -spawn command; env is added to its environment.
func spawnServer(command, amqpURL string, port int, logPath string, env []string) (*spawned, error) {
	if logPath == "" {
		logPath = filepath.Join(os.TempDir(), fmt.Sprintf("myxi-bench-server-%d.log", os.Getpid()))
	}
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Env = env
	return spawnCmd(cmd, amqpURL, port, logPath)
}

// spawnFloor starts this binary's floor-server subcommand (see floor.go).
func spawnFloor(fc *floorConfig, port int, logPath string) (*spawned, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this executable to start the floor server: %w", err)
	}
	if logPath == "" {
		logPath = filepath.Join(os.TempDir(), fmt.Sprintf("myxi-bench-floor-%d.log", os.Getpid()))
	}
	return spawnCmd(exec.Command(exe, fc.args()...), fc.AMQP, port, logPath)
}

// spawnCmd starts cmd in a process group of its own with RABBITMQ_URL and
// MYXI_PORT set (after this process's environment and cmd.Env), its output
// to logPath.
func spawnCmd(cmd *exec.Cmd, amqpURL string, port int, logPath string) (*spawned, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("spawn log: %w", err)
	}
	cmd.Env = append(append(os.Environ(), cmd.Env...), "RABBITMQ_URL="+amqpURL, "MYXI_PORT="+strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %q: %w", cmd.String(), err)
	}
	s := &spawned{cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		logf.Close()
		close(s.exited)
	}()
	return s, nil
}

// portBusy reports whether something accepts connections on 127.0.0.1:port.
func portBusy(port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 500*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// waitReady waits until the spawned server's port accepts connections and
// returns the pid that listens there (checked to be in the spawned group).
func (s *spawned) waitReady(ctx context.Context, port int, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		select {
		case <-s.exited:
			return 0, fmt.Errorf("the spawned server exited (%v); its log %s ends with:\n%s", s.waitErr, s.logPath, readTail(s.logPath, 20))
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if !portBusy(port) {
			continue
		}
		pid, err := findListenerPID(port)
		if err != nil {
			return 0, err
		}
		if !s.owns(pid) {
			return 0, fmt.Errorf("port %d is held by pid %d (%s), which the spawned command did not start", port, pid, processName(pid))
		}
		return pid, nil
	}
	return 0, fmt.Errorf("the spawned server did not listen on port %d within %v; see %s", port, d, s.logPath)
}

// owns reports whether pid is in the spawned process group.
func (s *spawned) owns(pid int) bool {
	st, err := readProcFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	ps, err := parseProcStat(st)
	return err == nil && ps.pgrp == s.cmd.Process.Pid
}

// alive reports whether the spawned command is still running.
func (s *spawned) alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the group and gives every process in it (the server
// under `go run` is a grandchild) grace to end, then SIGKILLs what is left.
func (s *spawned) stop(grace time.Duration) {
	pgid := s.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
	}
}
