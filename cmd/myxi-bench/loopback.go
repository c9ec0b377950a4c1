package main

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// This tool only ever talks to the machine it runs on: every target address
// must be a loopback one, checked before anything is dialed.

// isLoopbackHost reports whether host (without port) is "localhost" or a
// loopback IP literal (127.0.0.0/8, ::1). Other names are refused rather than
// resolved: a name could point anywhere.
func isLoopbackHost(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

func checkWSURL(raw string, sourceIPs int) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("-url %q: %v", raw, err)
	}
	if u.Scheme != "ws" {
		return fmt.Errorf("-url %q: the scheme must be ws:// (loopback, no TLS)", raw)
	}
	host := u.Hostname()
	if !isLoopbackHost(host) {
		return fmt.Errorf("-url host %q is not a loopback address: this tool only targets 127.0.0.0/8, ::1 or localhost", host)
	}
	if _, err := urlPort(u); err != nil {
		return fmt.Errorf("-url %q: %v", raw, err)
	}
	if sourceIPs > 1 {
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || ip.To4() == nil) {
			return fmt.Errorf("-source-ips %d needs an IPv4 loopback -url host (127.x.y.z or localhost), not %q", sourceIPs, host)
		}
	}
	return nil
}

func checkAMQPURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("-amqp: %v", err)
	}
	if u.Scheme != "amqp" {
		return fmt.Errorf("-amqp %q: the scheme must be amqp:// (loopback, no TLS)", u.Redacted())
	}
	if !isLoopbackHost(u.Hostname()) {
		return fmt.Errorf("-amqp host %q is not a loopback address: this tool only targets 127.0.0.0/8, ::1 or localhost", u.Hostname())
	}
	return nil
}

// urlPort is the TCP port of a ws:// URL (80 when none is written).
func urlPort(u *url.URL) (int, error) {
	p := u.Port()
	if p == "" {
		return 80, nil
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("bad port %q", p)
	}
	return n, nil
}

// dialTarget rewrites "localhost:port" to "127.0.0.1:port" so that the
// connection is IPv4 and can be bound to a 127.0.0.N source address.
func dialTarget(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || !strings.EqualFold(host, "localhost") {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// sourceAddrs lists the n loopback source addresses 127.0.0.1 .. 127.0.0.n.
func sourceAddrs(n int) []net.IP {
	ips := make([]net.IP, n)
	for i := range n {
		ips[i] = net.IPv4(127, 0, 0, byte(i+1))
	}
	return ips
}
