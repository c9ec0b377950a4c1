# Myxi: make run | make demo | make test | make bench
SHELL := /bin/bash
GO ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# An iteration count, not a duration: a -fuzztime deadline that expires while
# a worker is busy fails the run with "context deadline exceeded" (go#56238).
FUZZTIME ?= 300000x

.PHONY: run demo test test-go test-examples test-broker-outage test-cluster test-js test-e2e lint fuzz bench generate deps

run: ## the standalone server with an open "widgets" exchange, embedded broker; prints an API key and how to publish
	$(GO) run ./server -dev -exchanges widgets

demo: ## the widgets demo on http://localhost:8080 (embedded broker)
	$(GO) run ./demo

deps: ## what the tests need: Go modules and the npm devDependencies
	$(GO) mod download
	npm ci --no-audit --no-fund

test: deps lint test-go test-examples test-broker-outage test-cluster fuzz test-js test-e2e ## every test

lint:
	@test -z "$$(gofmt -l . | grep -v '^node_modules/')" || { echo "gofmt needed:"; gofmt -l . | grep -v '^node_modules/'; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

test-go: ## every Go package but examples/ (test-examples runs those) and internal/clustertest (test-cluster runs it on its own cluster)
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v -e '/examples' -e '/internal/clustertest')

test-examples: ## every program of examples/ and the README's command blocks against the real server; the page in Chromium
	$(GO) test -race -count=1 ./examples/...
	cd examples/browser && npm ci --no-audit --no-fund && npm test

test-broker-outage: ## stops and restarts RabbitMQ: runs alone, after the other Go tests
	MYXI_BROKER_STOP_TEST=1 $(GO) test -race -count=1 -run '^TestBrokerOutage$$' -v .

test-cluster: ## a fresh three-node RabbitMQ cluster on this machine (AMQP 5701-5703, never the shared node): up, the cluster tests, down
	scripts/rabbitmq-cluster/cluster.sh run -- $(GO) test -race -count=1 -timeout 5m -v ./internal/clustertest/

fuzz: ## each fuzz target for a short, bounded time
	@for target in $$($(GO) test -list '^Fuzz' ./internal/protocol | grep '^Fuzz'); do \
		$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) ./internal/protocol || exit 1; \
	done

test-js: ## the JavaScript client's unit tests, and a check that dist/ and the types are fresh
	npm test
	npm run check

test-e2e: ## the widgets demo in Chromium (Playwright), and the npm package used from Node
	cd e2e && npm ci --no-audit --no-fund && npm test

bench: ## Go benchmarks of the hot paths
	$(GO) test -run '^$$' -bench . -benchmem ./...

generate: ## rebuild client-js/dist with esbuild
	$(GO) generate ./...
