# pzone — run 'make help' for the targets.
GO      ?= go
BIN     ?= bin
FUZZTIME ?= 15s

.PHONY: help build test test-stress faults demo bench fuzz lint man clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build pzh and pzp into bin/ (--version names the git revision)
	$(GO) build -buildvcs=auto -o $(BIN)/ ./cmd/pzh ./cmd/pzp

test: ## vet, gofmt check, and every test with the race detector (screenshots of the dashboard go to artifacts/)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	PZONE_ARTIFACTS=$(CURDIR)/artifacts $(GO) test -race -count=1 -timeout 15m ./...

faults: ## the fault matrix (as root: network namespaces, a full disk; damaged stores anywhere), each row's figures logged
	$(GO) test -race -count=1 -timeout 15m -run '^TestFault' -v ./cmd/internal/cli

test-stress: ## the tests (race, -cpu 1,2) beside two CPU-bound processes, STRESS_RUNS times (default 1)
	GO=$(GO) bash testdata/stress.sh

demo: build ## build, then run a hub and devices on loopback: pair, sync, calls, a sleeping device woken, a friend zone, revoke, the web dashboard, shut down
	BIN=$(BIN) bash testdata/demo.sh

bench: ## figures against raw baselines (BENCH_OUT=file.json also writes JSON; BENCH_FLAGS=... e.g. -only sync,calls)
	$(GO) build -o $(BIN)/ ./cmd/pzh ./cmd/pzp ./cmd/pzbench
	$(BIN)/pzbench -pzh $(BIN)/pzh -pzp $(BIN)/pzp $(if $(BENCH_OUT),-json $(BENCH_OUT)) $(BENCH_FLAGS)

fuzz: ## run each fuzz target for FUZZTIME (default 15s)
	$(GO) test -run='^$$' -fuzz='^FuzzReadFrame$$' -fuzztime=$(FUZZTIME) ./transport
	$(GO) test -run='^$$' -fuzz='^FuzzParseToken$$' -fuzztime=$(FUZZTIME) ./pairing
	$(GO) test -run='^$$' -fuzz='^FuzzTokenBody$$' -fuzztime=$(FUZZTIME) ./pairing
	$(GO) test -run='^$$' -fuzz='^FuzzParseZoneID$$' -fuzztime=$(FUZZTIME) ./certs
	$(GO) test -run='^$$' -fuzz='^FuzzSyncFrames$$' -fuzztime=$(FUZZTIME) ./sync
	$(GO) test -run='^$$' -fuzz='^FuzzSyncFramesToDevice$$' -fuzztime=$(FUZZTIME) ./sync
	$(GO) test -run='^$$' -fuzz='^FuzzParseImportLine$$' -fuzztime=$(FUZZTIME) ./zone/localapi
	$(GO) test -run='^$$' -fuzz='^FuzzEnvelope$$' -fuzztime=$(FUZZTIME) ./zone/envelope
	$(GO) test -run='^$$' -fuzz='^FuzzParseRule$$' -fuzztime=$(FUZZTIME) ./zone/policy
	$(GO) test -run='^$$' -fuzz='^FuzzParseFriendToken$$' -fuzztime=$(FUZZTIME) ./pairing
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) ./wakeup
	$(GO) test -run='^$$' -fuzz='^FuzzCheck$$' -fuzztime=$(FUZZTIME) ./wakeup
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) ./zone/appid
	$(GO) test -run='^$$' -fuzz='^FuzzPipe$$' -fuzztime=$(FUZZTIME) ./zone/session
	$(GO) test -run='^$$' -fuzz='^FuzzStreamRead$$' -fuzztime=$(FUZZTIME) ./zone/api
	$(GO) test -run='^$$' -fuzz='^FuzzChannelFrame$$' -fuzztime=$(FUZZTIME) ./zone/api
	$(GO) test -run='^$$' -fuzz='^FuzzRespond$$' -fuzztime=$(FUZZTIME) ./pairing/cpace
	$(GO) test -run='^$$' -fuzz='^FuzzFinish$$' -fuzztime=$(FUZZTIME) ./pairing/cpace

lint: ## go vet and staticcheck (when installed)
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null; then staticcheck ./...; else echo "staticcheck not installed: skipped"; fi

man: ## write the man pages of pzh and pzp (one per command) to man/
	$(GO) run ./cmd/internal/mangen -out man

clean: ## remove build output
	rm -rf $(BIN) man
