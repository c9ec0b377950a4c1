package main

import (
	"fmt"
	"syscall"
	"time"
)

// sample is one reading of the resources the report compares between the
// start and the end of a phase.
type sample struct {
	at time.Time

	serverOK    bool
	serverErr   string
	rssKB       int64
	hwmKB       int64 // peak RSS so far
	serverTicks uint64

	toolCPU time.Duration // this process, user + system

	brokerOK    bool
	brokerTicks uint64 // RabbitMQ's CPU (the process listening on the -amqp port)

	machineOK bool
	machine   cpuTicks
}

// procTicks is the CPU time (utime + stime, clock ticks) of pid.
func procTicks(pid int) (uint64, bool) {
	stat, err := readProcFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	ps, err := parseProcStat(stat)
	if err != nil {
		return 0, false
	}
	return ps.utime + ps.stime, true
}

func takeSample(pid, brokerPID int) sample {
	s := sample{at: time.Now()}
	if brokerPID > 0 {
		s.brokerTicks, s.brokerOK = procTicks(brokerPID)
	}
	if pid > 0 {
		st, err1 := readProcFile(fmt.Sprintf("/proc/%d/status", pid))
		stat, err2 := readProcFile(fmt.Sprintf("/proc/%d/stat", pid))
		switch {
		case err1 != nil:
			s.serverErr = err1.Error()
		case err2 != nil:
			s.serverErr = err2.Error()
		default:
			rss, e1 := statusKB(st, "VmRSS")
			hwm, _ := statusKB(st, "VmHWM")
			ps, e2 := parseProcStat(stat)
			if e1 != nil || e2 != nil {
				s.serverErr = fmt.Sprint(e1, e2)
			} else {
				s.serverOK = true
				s.rssKB, s.hwmKB = rss, hwm
				s.serverTicks = ps.utime + ps.stime
			}
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.toolCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if txt, err := readProcFile("/proc/stat"); err == nil {
		if t, err := parseSystemStat(txt); err == nil {
			s.machine, s.machineOK = t, true
		}
	}
	return s
}

// phaseCPU is the CPU used between two samples.
type phaseCPU struct {
	Wall       time.Duration
	ServerOK   bool
	ServerCPU  float64 // seconds
	ToolCPU    float64
	BrokerOK   bool
	BrokerCPU  float64
	MachineOK  bool
	MachineCPU float64 // busy seconds over all cores
}

func cpuBetween(a, b sample) phaseCPU {
	p := phaseCPU{Wall: b.at.Sub(a.at)}
	p.ToolCPU = (b.toolCPU - a.toolCPU).Seconds()
	if a.serverOK && b.serverOK && b.serverTicks >= a.serverTicks {
		p.ServerOK = true
		p.ServerCPU = float64(b.serverTicks-a.serverTicks) / clkTck
	}
	if a.brokerOK && b.brokerOK && b.brokerTicks >= a.brokerTicks {
		p.BrokerOK = true
		p.BrokerCPU = float64(b.brokerTicks-a.brokerTicks) / clkTck
	}
	if a.machineOK && b.machineOK && b.machine.busy >= a.machine.busy {
		p.MachineOK = true
		p.MachineCPU = float64(b.machine.busy-a.machine.busy) / clkTck
	}
	return p
}

// cores is cpu seconds per wall second.
func (p phaseCPU) cores(cpu float64) float64 {
	if w := p.Wall.Seconds(); w > 0 {
		return cpu / w
	}
	return 0
}
