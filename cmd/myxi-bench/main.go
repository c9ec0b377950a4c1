// Command myxi-bench is Myxi's load tool (issue 5): it opens N WebSocket
// clients spread over C routing keys of one exchange, publishes R events/s
// for D through RabbitMQ exactly as an application does, and reports
// connections, deliveries expected vs received (any loss fails the run),
// latency percentiles, and the server's RSS and CPU from /proc, ending with
// one line "RESULT {json}".
//
//	go run ./cmd/myxi-bench -scenario S1 -spawn "go run ./server -exchanges bench"
//
// See README.md beside this file for the scenarios and what the report means.
// It only targets loopback addresses, and every loop in it is bounded in
// count and time (-timeout caps the whole run).
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
