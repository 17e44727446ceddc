# Tollgate. `make run` starts the whole stack; `make test` runs every test.
.PHONY: build run test fuzz bench clean

BIN := bin

build:
	go build -o $(BIN)/ ./edge/cmd/edge ./ledgerd/cmd/ledgerd ./analytics/cmd/analytics ./bench/cmd/bench ./bench/cmd/devstack

run: build
	$(BIN)/devstack up -bin-dir $(BIN) -repo .

test:
	bash deploy/dev/test.sh

fuzz:
	bash deploy/dev/fuzz.sh $(or $(FUZZTIME),60s)

# The load harness (bench/README.md): the upstream direct vs a bare forwarder vs the full edge,
# in alternating rounds, then a money check. Results go to bench/results/. About 8 minutes (the slow-stream targets wait for TIME_WAIT to drain);
# SOAK=1 adds a 10-minute soak of the edge.
comma := ,
BENCH_SCENARIOS := nonstream,stream20,mixed,slow,settle$(if $(SOAK),$(comma)soak)
bench: build
	$(BIN)/bench compare -repo . -bin-dir $(BIN) -scenarios $(BENCH_SCENARIOS)

clean:
	rm -rf $(BIN)
