# The two commands a newcomer needs: `make run` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
BIN     := bin/appliance
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build run test test-short bench bench-density lint fuzz clean lab lab-density lab-starvation image image-test

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/appliance

# The disk image a unit is flashed with (root: mmdebstrap and chroot; see
# docs/image.md): GPT, systemd-boot, root slots A and B, the data partition;
# and its update bundle, build/appliance-VERSION.bundle, signed with
# UPDATE_KEY (a development key in build/ when unset).
image:
	mkdir -p build
	VERSION=$(VERSION) image/build.sh build/appliance.img

# Boots build/appliance.img under QEMU (root; OVMF, the i6300esb watchdog): two
# units from one image (per-unit configs from credentials), RTP through a
# forwarded port, the appliance frozen and the box reset by the watchdog, and
# after it a corrupt unit config on the data partition reported by the API.
image-test:
	APPLIANCE_IMAGE=$(CURDIR)/build/appliance.img $(GO) test -count=1 -run '^TestImageBoots$$' -v -timeout 20m ./image/

# Runs the unit on the embedded demo config: no root needed, status on http://127.0.0.1:8080.
run: build
	./$(BIN) run

# Everything: vet, format, and every test with the race detector. Tests that
# need root (network namespaces, systemd-nspawn, QEMU) run when this runs as
# root; a rig test whose tools are missing is skipped, and the run ends with
# one line naming the packages to install (internal/testutil/rig.go). CI sets
# APPLIANCE_RIGS=required, which fails such a test instead. The media tests
# run a second time on the per-packet path (media.batch_window 0).
test: lint
	@skips=$$(mktemp); \
	APPLIANCE_RIG_SKIPS=$$skips $(GO) test -race -count=1 -timeout 40m ./...; rc=$$?; \
	MEDIA_TEST_BATCH_WINDOW=0 $(GO) test -race -count=1 -timeout 5m ./media/ || rc=1; \
	pkgs=$$(sed -n 's/^pkg \([^ ]*\) .*/\1/p' $$skips | sort -u | xargs); \
	root=$$(grep -c '^root ' $$skips); \
	msg=""; \
	if [ -n "$$pkgs" ]; then msg="tools missing: apt-get install -y --no-install-recommends $$pkgs"; fi; \
	if [ "$$root" -eq 1 ]; then msg="$${msg:+$$msg; }1 needs root (sudo make test)"; fi; \
	if [ "$$root" -gt 1 ]; then msg="$${msg:+$$msg; }$$root need root (sudo make test)"; fi; \
	if [ -n "$$msg" ]; then echo "rig tests skipped: $$msg"; fi; \
	rm -f $$skips; exit $$rc

# The pair's failover scenarios, for real: two units in network namespaces,
# RTP sources and receivers, every scenario in both input modes, three runs
# each (root; under 10 minutes, 6 of them the minute-long cpu-starvation
# runs). It runs alone, after the tests, because its figures are timings.
lab: build
	./$(BIN) lab --scenario all --mode both --runs 3

# Both cores saturated for 60 s on both units: no takeover wanted.
lab-starvation: build
	./$(BIN) lab --scenario cpu-starvation --mode both --runs 3

# Power loss and hangs with 200 streams (root). Both units and the traffic
# generator share the lab machine's two cores, so each mode gets the same
# 20,000 packets/s into the pair: `dual` sends every packet to both units (50
# per stream), `vip` only to the owner (100 per stream). Not in CI: see
# docs/PERFORMANCE.md for its figures.
lab-density: build
	./$(BIN) lab --scenario power-loss,hang --streams 200 --pps 50 --mode dual --runs 3
	./$(BIN) lab --scenario power-loss,hang --streams 200 --pps 100 --mode vip --runs 3

# Unit tests only, quick, for the edit-compile loop.
test-short:
	$(GO) test -short -count=1 ./...

# Relay throughput against a plain Go relay measured in the same run, and the
# control plane at 1,000 streams (parent CPU, status document, status page, /metrics,
# heartbeat delay under API load); see docs/PERFORMANCE.md.
bench:
	$(GO) test -run '^$$' -bench '^BenchmarkRelay$$' -benchtime 5x -count 1 ./media/
	$(GO) test -run '^$$' -bench '^BenchmarkRelayHandle$$' -count 1 ./media/
	$(GO) test -run '^$$' -bench '^Benchmark(StatusDocument|Page|Metrics)$$' -count 1 ./status/
	$(GO) test -run '^$$' -bench '^BenchmarkControlPlane$$' -benchtime 1x -count 1 ./cmd/appliance/
	$(GO) test -run '^$$' -bench '^BenchmarkPageFresh$$' -benchtime 1x -count 1 ./cmd/appliance/
	$(GO) test -run '^$$' -bench '^Benchmark(RatioToHMAC|SealPair|OpenPair|HMACBaseline)$$' -count 1 ./pairnet/
	$(GO) test -run '^$$' -bench '^BenchmarkProgressOf$$' -count 1 ./media/

# Paced streams through one worker and through as many plain relays, in the same
# run; MEDIA_DENSITY=STREAMSxPPS (default 64x500) and MEDIA_DENSITY_SECONDS size it.
bench-density:
	$(GO) test -run '^$$' -bench '^BenchmarkDensity$$' -benchtime 1x -count 2 -v ./media/
	$(GO) test -run '^$$' -bench '^BenchmarkStreamRate$$' -benchtime 1x -count 1 -v ./media/

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# A short run of every fuzz target (the seed corpora also run in `make test`).
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf bin build
