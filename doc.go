// Package myxi is a real-time WebSocket server and framework whose
// application events travel through RabbitMQ (or, on a single node, an
// embedded broker). It speaks the myxi 1.x wire protocol (docs/PROTOCOL.md),
// so pages written for the old Ruby gem and applications that push with its
// push_event keep working.
//
// # Model
//
// Clients connect by WebSocket and send JSON actions (Subscribe,
// Unsubscribe, ListSubscriptions, Ping, and the application's own, such as
// Authenticate); the server sends JSON events. An application defines
// exchanges, each with an authorizer deciding which session may subscribe
// to which routing key, and pushes events to an exchange and routing key:
// every subscribed session on every node sharing the broker receives them.
//
//	srv, err := myxi.New(myxi.Config{
//		Exchanges: map[string]myxi.AuthorizeFunc{"widgets": canSeeWidget},
//		Actions:   map[string]myxi.ActionHandler{"Authenticate": authenticate},
//	})
//	...
//	go func() { errc <- srv.ListenAndServe(ctx) }() // until ctx ends, then drains
//	if err := srv.WaitReady(ctx); err != nil { ... } // a port in use, say
//	err = srv.Push(ctx, "widgets", "42", "WidgetQtyChanged", map[string]int{"quantity": 5})
//
// Configuration is a Config struct read once by New, which refuses
// invalid values with an error naming the field; zero values are the
// documented defaults. The environment is read only by ConfigFromEnv.
//
// # Push path
//
// A broker delivery is checked and encoded once (an invalid or oversized
// event is dropped and counted), then queued to each local subscriber's
// bounded send queue; the connection's writer writes the queue to the
// socket (several events in one frame for clients that asked for batches
// with ?batch=1). A client that lets its queue fill is disconnected with
// close code 1008 instead of slowing anyone else.
//
// # History and recovery
//
// Config.History gives exchanges a history: Push then records the event
// (Historian.Append, confirmed) instead of publishing it live, and the
// broker feeds each node the recorded events in order, with their
// positions. Each node keeps the tail of each history in memory
// (internal/history, bounded by History.MaxAge and MaxBytes) and delivers
// recorded events live from there. A Subscribe with "since" is answered
// from that tail: replayed events, then live ones, with no gap and no
// duplicate, or "recovered": false when the tail no longer holds what the
// client missed (docs/PROTOCOL.md, docs/history.md).
//
// # Goroutines
//
// Per session:
//
//   - The reader (started by the upgrade handler, it lives as long as the
//     session) parses the client's frames, charges each to the rate limit,
//     and hands each admitted action to the node's action pool, waiting
//     until it is done: a session's actions run one at a time, in order.
//     They are built-in actions, the exchanges' authorizers for a
//     Subscribe, and the application's action handlers. A slow handler
//     delays that session only. When the connection ends, the reader
//     removes the session's subscriptions and runs its OnClose callbacks.
//   - The writer is a token, not a fixed goroutine. Whoever has an event
//     for the session (the fan-out, a reply, Session.Send) takes the token
//     when it is free and nothing else is pending, and writes the frame
//     itself with one non-blocking write(2), no deadline needed. Otherwise
//     (a writer holds the token, something is queued, a ping is due, or
//     that write would block) the frame is queued, and a writer goroutine
//     started with the token writes everything pending, each blocking
//     flush within WriteTimeout, gives the token back and exits. Only the
//     token's holder writes to the socket (gorilla's Upgrader does the
//     handshake and nothing after it), so there is exactly one writer at
//     a time and exactly one Close frame.
//   - A keepalive timer (time.AfterFunc) asks the writer for a ping every
//     PingInterval.
//   - A replay runs inside the Subscribe that asked for it, while the
//     session's reader waits:
//     it queues the missed events while the send queue is under half full,
//     waits for the writer to take them, and hands the subscription to the
//     live stream once nothing is left. The session's next action waits.
//
// Per node: the action pool (package internal/runpool): one goroutine per
// action running at that moment, each kept for 10 s to take the next one,
// so that the deep stacks that decoding and handlers need belong to these
// few goroutines rather than to every idle session's reader (when the
// readers ran actions themselves, copying their growing stacks took a
// fifth of the node's CPU while 19,500 clients connected, and the grown
// stacks over a quarter of its memory once they were idle);
// GOMAXPROCS-1 fan-out workers that take chunks of a key with many
// subscribers; the broker's goroutines (broker/rabbitmq: a supervisor that
// reconnects and one consumer that fans each event out to the send
// queues, never waiting on a client; per history exchange, one reader
// that feeds the stream's records to the node's index, which fans each
// out the same way); the periodic re-authorization loop,
// which runs the exchanges' authorizers off the readers, at most
// ReauthorizeConcurrency sessions at once. Session.Reauthorize runs them
// on the caller's goroutine (auth/jwtauth calls it when a token expires).
//
// # Locks
//
// Lock order: a session's subscription lock (held across the broker round
// trip of a Subscribe, so that one session's Subscribe and Unsubscribe of a
// key never overtake each other; it blocks only that session's reader,
// re-authorization and cleanup), then the hub's per-key bind lock (held
// across Bind and Unbind for that key), then the hub's shard and
// subscriber locks, then a history index's lock (held while a record is
// fanned out and while a Subscribe with since is decided, so that no
// record falls between a replay and the live stream), then the broker's
// own. Fan-out takes only the hub's read locks, or the index's lock, and
// a send queue's lock.
//
// # Time limits
//
// Limits.WriteTimeout is a write deadline on each blocking flush to a
// socket; a client that does not take the bytes in time is dropped.
// Limits.ActionTimeout bounds each action's context (its authorizers, the
// handler and the broker binds of a Subscribe), each session's periodic
// re-authorization, and the unbinds when a session ends. A client silent
// for two PingIntervals is closed with 4000. After its Close frame, the
// server waits at most a second for the client's before dropping the
// connection.
//
// # Brokers
//
// The broker seam (package broker) separates "who is subscribed here" from
// "how events reach this node". broker/memory is the default; broker/rabbitmq
// binds (exchange, routing key) to one queue per node while at least one
// local session subscribes to it. Exchanges are declared as myxi 1.x did
// (direct, non-durable, not auto-deleted).
//
// # Exposure
//
// Only what a browser needs is public: the WebSocket endpoints, /myxi.js,
// /healthz, /readyz and a status page saying ready or not. Metrics are
// served on Config.MetricsAddr (ListenAndServe, Serve) or wherever the
// application mounts MetricsHandler. Sessions keep only the handshake
// headers named in Config.KeepHeaders.
//
// # Errors
//
// An action handler returns a *ClientError to send the client an Error
// event it may see ({"error": Name, "message": Message, ...Details}); any
// other error or a panic is logged with the session id and the client gets
// InternalError with no details.
package myxi
