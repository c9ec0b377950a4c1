package main

import (
	"os"
	"testing"
)

const statusFixture = `Name:	myxi-server
Umask:	0022
State:	S (sleeping)
Pid:	4242
VmPeak:	 1300000 kB
VmHWM:	  210344 kB
VmRSS:	  180112 kB
RssAnon:	  170000 kB
Threads:	9
`

func TestStatusKB(t *testing.T) {
	if v, err := statusKB(statusFixture, "VmRSS"); err != nil || v != 180112 {
		t.Fatalf("VmRSS = %d, %v", v, err)
	}
	if v, err := statusKB(statusFixture, "VmHWM"); err != nil || v != 210344 {
		t.Fatalf("VmHWM = %d, %v", v, err)
	}
	if _, err := statusKB(statusFixture, "VmSwap"); err == nil {
		t.Fatal("missing field found")
	}
	if _, err := statusKB("VmRSS:\t12 MB\n", "VmRSS"); err == nil {
		t.Fatal("wrong unit accepted")
	}
}

func TestParseProcStat(t *testing.T) {
	// the name holds a space and a ')'
	s := "4242 (my server) x) S 4200 4190 4100 0 -1 4194560 2531 0 0 0 1234 567 8 9 20 0 9 0 123456 1300000000 45000 18446744073709551615\n"
	ps, err := parseProcStat(s)
	if err != nil {
		t.Fatal(err)
	}
	if ps.ppid != 4200 || ps.pgrp != 4190 || ps.utime != 1234 || ps.stime != 567 {
		t.Fatalf("got %+v", ps)
	}
	if _, err := parseProcStat("4242 (x) S 1 2"); err == nil {
		t.Fatal("short stat accepted")
	}
	if _, err := parseProcStat("4242 x S"); err == nil {
		t.Fatal("stat without ')' accepted")
	}
}

func TestParseProcStatOfSelf(t *testing.T) {
	s, err := readProcFile("/proc/self/stat")
	if err != nil {
		t.Skip("no /proc")
	}
	ps, err := parseProcStat(s)
	if err != nil || ps.ppid != os.Getppid() {
		t.Fatalf("own stat: %+v, %v (ppid %d)", ps, err, os.Getppid())
	}
}

func TestParseSystemStat(t *testing.T) {
	s := "cpu  100 5 50 1000 20 3 2 1 7 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nintr 1\n"
	c, err := parseSystemStat(s)
	if err != nil {
		t.Fatal(err)
	}
	// busy = user+nice+system+irq+softirq+steal (guest is inside user)
	if c.busy != 100+5+50+3+2+1 || c.total != c.busy+1000+20 {
		t.Fatalf("got %+v", c)
	}
	if _, err := parseSystemStat("intr 1\n"); err == nil {
		t.Fatal("no cpu line accepted")
	}
}

func TestListenInodes(t *testing.T) {
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:138D 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1628 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77002 1 0000000000000000 100 0 0 10 0
   2: 0100007F:138D 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 77003 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:9C40 0100007F:138D 01 00000000:00000000 00:00000000 00000000     0        0 77004 1 0000000000000000 20 4 30 10 -1
`
	got := listenInodes(tcp, 5005) // 0x138D
	if len(got) != 1 || got[0] != "77001" {
		t.Fatalf("listeners on 5005 = %v", got)
	}
	if got := listenInodes(tcp, 40000); len(got) != 0 { // 0x9C40: only an established socket
		t.Fatalf("listeners on 40000 = %v", got)
	}
}

func TestCPUBetween(t *testing.T) {
	a := sample{serverOK: true, serverTicks: 1000, machineOK: true, machine: cpuTicks{busy: 5000, total: 20000}, brokerOK: true, brokerTicks: 10}
	b := a
	a.at = a.at.Add(0)
	b.at = a.at.Add(10e9) // 10 s
	b.serverTicks = 1500  // 5 s
	b.machine = cpuTicks{busy: 5000 + 1200, total: 20000 + 2000}
	b.brokerTicks = 310
	p := cpuBetween(a, b)
	if !p.BrokerOK || p.BrokerCPU != 3 {
		t.Fatalf("broker: %+v", p)
	}
	if !p.ServerOK || p.ServerCPU != 5 || p.cores(p.ServerCPU) != 0.5 {
		t.Fatalf("server: %+v", p)
	}
	if !p.MachineOK || p.MachineCPU != 12 || p.cores(p.MachineCPU) != 1.2 {
		t.Fatalf("machine: %+v", p)
	}
	b.serverOK = false
	if cpuBetween(a, b).ServerOK {
		t.Fatal("server CPU from a failed sample")
	}
}
