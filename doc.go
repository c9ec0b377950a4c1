// Package myxi is a real-time WebSocket server and framework whose
// application events travel through RabbitMQ (or, on a single node, an
// embedded broker). It speaks the myxi 1.x wire protocol (PROTOCOL.md), so
// pages written for the old Ruby gem and applications that push with its
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
//	err = srv.ListenAndServe(ctx) // until ctx ends, then drains
//
// Configuration is a Config struct read once by New; zero values are the
// documented defaults. The environment is read only by ConfigFromEnv.
//
// # Push path
//
// A broker delivery is decoded and encoded once, then queued to each local
// subscriber; each connection's writer goroutine writes its queue to the
// socket (several events in one frame for clients that asked for batches
// with ?batch=1). A client that lets its bounded queue fill is
// disconnected with close code 1008 instead of slowing anyone else.
//
// # Concurrency
//
// Each session has exactly two goroutines: a reader, which reads frames and
// runs that session's actions one at a time in order, and a writer, the only
// goroutine writing to the socket. Everything else (pushes, Session.Send
// from any goroutine) only appends to the session's queue and never blocks.
// A Session's methods are safe for concurrent use. Authorizers and action
// handlers run on the session's reader goroutine: a slow handler delays
// that session only. Their context ends when the session closes or the
// action times out (Limits.ActionTimeout).
//
// # Brokers
//
// The broker seam (package broker) separates "who is subscribed here" from
// "how events reach this node". broker/memory is the default; broker/rabbitmq
// binds (exchange, routing key) to one queue per node while at least one
// local session subscribes to it. Exchanges are declared as myxi 1.x did
// (direct, non-durable, not auto-deleted).
//
// # Errors
//
// An action handler returns a *ClientError to send the client an Error
// event it may see ({"error": Name, ...Details}); any other error or a
// panic is logged with the session id and the client gets InternalError
// with no details.
package myxi
