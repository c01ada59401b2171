# sluice — two commands do everything on a fresh machine:
#   make demo   runs the orders and events pipelines end to end for two dates
#   make test   runs every unit and integration test against real servers
SHELL := /bin/bash
ROOT := $(CURDIR)
BIN := $(ROOT)/.sluice/bin
VENV := $(ROOT)/.venv
JAEGER_VERSION := v1.76.0
COMPOSE_VERSION := v5.6.0
# The project's own Docker engine (scripts/docker.sh): its socket, and a client config holding the
# compose plugin, both under .sluice/docker.
DOCKER_DIR := $(ROOT)/.sluice/docker
DOCKER_ENV := DOCKER_HOST=unix://$(DOCKER_DIR)/docker.sock DOCKER_CONFIG=$(DOCKER_DIR)/config
MODULES := pkg schemas cmd/sluice services/sensor services/fetcher services/validator services/partitioner services/dbtrunner services/alerter services/console deploy/check tools/versitygw
# The benchmark harnesses (bench/): modules of their own, outside go.work, run with GOWORK=off;
# vetted and version-checked with the others.
BENCH_MODULES := bench/console bench/sensor bench/datapath bench/scale
# deploy/check's tests are the infrastructure checks: they run in infra-check, not with the services'.
TEST_MODULES := $(filter-out deploy/check,$(MODULES))
GOTEST_FLAGS ?= -count=1 -timeout 35m

.PHONY: docker-engine docker-stop compose-plugin images compose-test
.PHONY: all tools build vet test chaos demo dev-env dev-env-stop check-versions fmt clean bench-sensor bench-datapath bench-console promtool chromium test-rules test-jaeger trace-demo console-screenshots infra-check bench-firstrun

all: build

## tools: what make test needs: versitygw (the local S3 server, built from tools/versitygw) and
## dbt in a pinned virtualenv, prepared at once by scripts/prepare.sh; promtool (Debian's
## prometheus package) for the alert rule tests and chromium for the console's browser test
tools: promtool chromium
	@scripts/prepare.sh versitygw dbt

## chromium: Debian's headless-capable Chromium, driven by chromedp in the console's browser test
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@command -v chromium >/dev/null || { echo "chromium missing: install Debian's chromium package" >&2; exit 1; }

promtool:
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
	@command -v promtool >/dev/null || { echo "promtool missing: install Debian's prometheus package" >&2; exit 1; }

## jaeger: the Jaeger all-in-one (v2, memory storage) built from its Go module. Its go.mod has
## replace directives, so `go install pkg@version` refuses it: it is built from a throwaway module
## that requires it. Takes long (34 min on a busy 2-core machine, from an empty module cache),
## so only trace-demo and test-jaeger need it. The Go build has no UI (its assets come from npm
## at Jaeger's release time): the query API answers, as trace-demo shows.
$(BIN)/jaeger:
	mkdir -p $(BIN)
	tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && cd $$tmp && \
		printf 'module sluice.local/jaeger\n\ngo 1.26.0\n' > go.mod && \
		GOWORK=off go get -tool github.com/jaegertracing/jaeger/cmd/jaeger@$(JAEGER_VERSION) && \
		GOWORK=off go build -o $@ github.com/jaegertracing/jaeger/cmd/jaeger

## compose-plugin: the docker compose CLI plugin, built from its Go module. Its go.mod has exclude
## directives, so `go install pkg@version` refuses it: built from a throwaway module like Jaeger
## (about 5 minutes from an empty module cache), installed in .sluice/docker/config/cli-plugins.
$(BIN)/docker-compose:
	mkdir -p $(BIN)
	tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && cd $$tmp && \
		printf 'module sluice.local/compose\n\ngo 1.26.0\n' > go.mod && \
		GOWORK=off go get -tool github.com/docker/compose/v5/cmd@$(COMPOSE_VERSION) && \
		GOWORK=off go build -trimpath -ldflags='-s -w -X github.com/docker/compose/v5/internal.Version=$(COMPOSE_VERSION)' \
			-o $@ github.com/docker/compose/v5/cmd

compose-plugin: $(BIN)/docker-compose
	mkdir -p $(DOCKER_DIR)/config/cli-plugins
	ln -sf $(BIN)/docker-compose $(DOCKER_DIR)/config/cli-plugins/docker-compose

## docker-engine / docker-stop: start (installing Debian's docker.io if dockerd is missing) and stop
## the project's own dockerd on .sluice/docker/docker.sock. `eval "$$(scripts/docker.sh env
## .sluice/docker)"` points a shell's docker and docker compose at it.
docker-engine:
	@scripts/docker.sh start $(DOCKER_DIR) >/dev/null

docker-stop:
	scripts/docker.sh stop $(DOCKER_DIR)

## images: the sluice images from the one Dockerfile and the local stand-ins of the compose stack's
## other images (scripts/images.sh; no image registry is reachable here)
images: docker-engine
	$(DOCKER_ENV) scripts/images.sh

## compose-test: the compose stack on the project's Docker engine: one date end to end through the
## CLI container, the validator scaled to 3, NATS restarted and validators SIGKILLed mid-run,
## then `docker compose down -v`; prints the image sizes
compose-test: images compose-plugin
	$(DOCKER_ENV) SLUICE_ROOT=$(ROOT) bash -c 'cd cmd/sluice && go test -tags compose -count=1 -timeout 30m -run "^TestCompose$$" -v .'

## build: every sluice binary into .sluice/bin, in one `go build`
build:
	@scripts/prepare.sh sluice services

## check-versions: every module (the benchmark harnesses' too) requires the same version of each
## shared dependency
check-versions:
	go run ./cmd/sluice/internal/checkversions $(MODULES) $(BENCH_MODULES)

## vet: go vet of every module, the benchmark harnesses and the build-tagged test files
vet:
	@for m in $(MODULES); do (cd $$m && go vet ./...) || exit 1; done
	@for m in $(BENCH_MODULES); do (cd $$m && GOWORK=off go vet ./...) || exit 1; done
	@(cd pkg && go vet -tags chaos ./crash/ ./flow/)
	@(cd cmd/sluice && go vet -tags compose,jaeger .)

## test: vet, version check, and every module's tests against real PostgreSQL, S3 and dbt,
## with the fast subset of the fault-injection suite (SLUICE_CHAOS=fast)
test: tools
	$(MAKE) --no-print-directory vet
	$(MAKE) --no-print-directory test-rules
	$(MAKE) --no-print-directory check-versions
	$(MAKE) --no-print-directory infra-check
	SLUICE_CHAOS=fast scripts/with-infra.sh $(ROOT)/.sluice/test bash -c 'set -e; for m in $(TEST_MODULES); do (cd $$m && go test $(GOTEST_FLAGS) ./...); done'
	cd pkg && go test -count=1 -tags chaos ./crash/

## infra-check: deploy/ checked offline with its ecosystems' own libraries (deploy/check): every
## .tf parsed with hcl/v2 and hclwrite-formatted, the OPA policies of deploy/policy with their rego
## tests and bad fixtures, the Terraform module wiring, kustomize builds decoded strictly into
## k8s.io/api types, ScaledObjects against KEDA's schema, NATS users against deploy/nats/auth.conf,
## docker-compose.yml through compose-go, .github/workflows through actionlint. See deploy/README.md.
infra-check:
	cd deploy/check && go test -count=1 ./...

## chaos: the whole fault-injection suite (every service killed at each crash point, NATS and
## PostgreSQL faults, S3 503s, Slack 429/down, SLA deadlines; then on a three-node JetStream
## cluster with two replicas of each service: the stream's and the lease bucket's leaders
## SIGKILLed, a node holding services' connections SIGKILLed, a node restarted with its store and
## with it wiped, after the cluster kit's own test and the R3 provisioning test); writes docs/reliability.md
chaos: tools
	SLUICE_CHAOS=full SLUICE_CHAOS_REPORT=$(ROOT)/docs/reliability.md scripts/with-infra.sh $(ROOT)/.sluice/chaos \
		bash -c 'set -e; (cd pkg && go test -count=1 -run "^(TestClusterLosesNodes|TestProvisionR3ReadsWhatItWrote)$$" -v ./testkit/cluster/ ./bus/); cd cmd/sluice && go test -count=1 -timeout 60m -run "^TestChaos(Cluster)?$$" -v .'

## bench-sensor: the sensor's memory with 10,000 waiting runs, hop latency and time to detect;
## writes the "Sensor and hops" section of bench/RESULTS.md (about 5 minutes)
bench-sensor: build
	cd bench/sensor && GOWORK=off go run . -sensor $(BIN)/sluice-sensor -results $(ROOT)/bench/RESULTS.md

## bench-datapath: psql \copy vs the validator's COPY stage, fetch → load and the seed's pandas load
## on a 1M-row orders file, and peak RSS at 1M and 10M rows; writes the "Data path" section of
## bench/RESULTS.md (about 10 minutes)
bench-datapath:
	@scripts/prepare.sh versitygw
	bench/datapath/run.sh

## bench-console: the console's grid of 1,000 runs and its run page against a static file of the
## same size, and its memory with 100 live SSE clients; writes the "Console" section of
## bench/RESULTS.md (about a minute)
bench-console:
	cd bench/console && GOWORK=off go run . -results $(ROOT)/bench/RESULTS.md

## bench-firstrun: `make demo` in a fresh clone with empty Go module, Go build and pip caches, then
## again warm; writes the "First run" section of bench/RESULTS.md (3–10 minutes; downloads)
bench-firstrun:
	bench/firstrun/run.sh

## bench-e2e: whole `sluice run`s of the orders pipeline (1k and 100k rows on an empty table, 1k on
## 1M rows of history; SIZES, HIST_SIZES, HIST_ROWS, REPS) against psql \copy + one hand-written
## MERGE in the same run; writes the "End to end" section of bench/RESULTS.md (about 5 minutes)
.PHONY: bench-e2e
bench-e2e:
	bench/e2e/run.sh

## bench-scale: generated pipelines x dates of small files (100 x 5) through a 3-node nats-server
## cluster and the six service binaries, with 1 and then 2 replicas of every service; and the
## scheduling process and the broker holding 100, 1,000 and 10,000 pipeline schedules; writes the
## "Scale" section of bench/RESULTS.md. SCALE_FLAGS passes harness flags (-pipelines, -dates, ...).
.PHONY: bench-scale
bench-scale: build
	@scripts/prepare.sh versitygw dbt
	scripts/with-infra.sh $(ROOT)/.sluice/bench/scale/infra \
		bash -c 'cd bench/scale && GOWORK=off go run . -results $(ROOT)/bench/RESULTS.md $(SCALE_FLAGS)'

## bench-airflow: sluice against Apache Airflow 3 running the seed's DAG on the same files, dbt
## project, PostgreSQL and S3: 30 small dates, 10 whose file appears while the sensors wait, one
## 999,999-row date, interleaved; installs Airflow into .sluice/airflow/venv; writes the "sluice vs
## Airflow" section of bench/RESULTS.md (bench/airflow/README.md; about 30–40 minutes)
.PHONY: bench-airflow
bench-airflow:
	bench/airflow/run.sh

## test-rules: the Prometheus alerting rules are valid and their unit tests pass
test-rules: promtool
	promtool check rules deploy/prometheus/rules/*.yml
	promtool test rules deploy/prometheus/tests/*.yml

## test-jaeger: one run through the six service processes, exported over OTLP/gRPC to a real
## Jaeger and read back through its query API
test-jaeger: tools $(BIN)/jaeger
	SLUICE_JAEGER=$(BIN)/jaeger scripts/with-infra.sh $(ROOT)/.sluice/test \
		bash -c 'cd cmd/sluice && go test -tags jaeger -count=1 -timeout 20m -run "^TestRunTraceInJaeger$$" -v .'

## trace-demo: Jaeger on 127.0.0.1, the six services as separate processes, one run of orders;
## prints the run's trace (from Jaeger's API), its dbt docs URL and the metrics endpoints
trace-demo: tools build $(BIN)/jaeger
	scripts/trace-demo.sh

## demo: the orders and events pipelines for two consecutive dates on a local PostgreSQL, S3 and dbt. It
## prepares only what it runs (sluice, versitygw, dbt, PostgreSQL; all at once) and prints how
## long each part took; no apt package, no promtool.
demo:
	@scripts/demo.sh

## console-screenshots: the console's browser test over the whole system, saving the pipelines, grid
## and run pages into docs/img for the README
console-screenshots: tools
	SLUICE_CONSOLE_SCREENSHOTS=$(ROOT)/docs/img scripts/with-infra.sh $(ROOT)/.sluice/test \
		bash -c 'cd cmd/sluice && go test -count=1 -run "^TestConsoleInABrowser$$" -v .'

## fuzz: each fuzz target of the data path for FUZZTIME (their seed corpora already run in `make test`)
FUZZTIME ?= 60s
.PHONY: fuzz
fuzz:
	cd pkg && go test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./contract
	cd pkg && go test -run '^$$' -fuzz '^FuzzSmallDecimal$$' -fuzztime $(FUZZTIME) ./contract
	cd services/partitioner && go test -run '^$$' -fuzz '^FuzzPartitionName$$' -fuzztime $(FUZZTIME) .
	cd services/partitioner && go test -run '^$$' -fuzz '^FuzzPartitionDay$$' -fuzztime $(FUZZTIME) .

fmt:
	gofmt -w $$(git ls-files '*.go')

## dev-env: what a run needs (sluice, versitygw, dbt) and throwaway PostgreSQL, S3 and the sample
## source under .sluice/dev for running sluice yourself (README, "Running it yourself"); prints
## the exports sluice.yaml needs, and only them: eval "$$(make -s dev-env)". dev-env-stop stops them.
dev-env:
	@scripts/prepare.sh sluice versitygw dbt >&2
	@scripts/dev-env.sh start

dev-env-stop:
	@scripts/dev-env.sh stop

## clean: stops the servers the demo, the tests and dev-env started and removes everything they
## created (broker store, database cluster, S3 data, logs); built tools stay
clean:
	-@scripts/dev-env.sh stop 2>/dev/null
	-@for d in .sluice/*/; do \
		[ -d "$$d/s3" ] && scripts/s3.sh stop "$$d/s3"; \
		[ -d "$$d/pg" ] && scripts/pg.sh remove "$$d/pg"; \
	done 2>/dev/null; true
	rm -rf .sluice/test .sluice/demo .sluice/trace-demo .sluice/dev .sluice/chaos .sluice/nats
