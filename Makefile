# rewind: build, test, run and benchmark.
#
#   make build    bin/rewind
#   make deps     install the Debian packages tests and benchmarks drive, and
#                 build SeaweedFS into /var/cache/rewind (once, ~7 minutes)
#   make test     deps, build, go vet, go test -race with released hugemem
#                 buffers poisoned (integration tests use bin/rewind)
#   make run      serve ./var/rewind, importing a sample disk when it is empty
#   make bench    benchmarks against restic, borg, nbdkit and qemu-nbd
#   make lint     gofmt and go vet
#   make fuzz     every fuzz target for FUZZTIME each
#   make clean    remove build and benchmark outputs (never ./var)

# Go lives in /usr/local/go on CI and on most Debian hosts; make it found
# even when the caller's PATH lacks it.
export PATH := /usr/local/go/bin:$(PATH):/usr/sbin:/sbin

GO          ?= go
BIN         := bin/rewind
TESTTIMEOUT ?= 60m
FUZZTIME    ?= 10s

# make run
DATA  ?= var/rewind
NBD   ?= 127.0.0.1:10809
HTTP  ?= 127.0.0.1:8080
MOUNT ?= var/mnt

# make bench SECTIONS="ingest nbd fuse" (default: all)
SECTIONS ?=

.PHONY: all build deps test run bench lint fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/rewind

deps:
	@scripts/deps.sh

test: deps build
	$(GO) vet ./...
	$(GO) test -race -tags hugemempoison -count=1 -timeout $(TESTTIMEOUT) ./...

# A daemon that was killed leaves its FUSE mount at MOUNT disconnected,
# where mkdir fails ("Transport endpoint is not connected"); serve
# cleans such a mount up, so that failure is left to it.
run: deps build
	@mkdir -p $(DATA)
	@mkdir -p $(MOUNT) 2>/dev/null || true
	@if [ -z "$$(ls -A $(DATA))" ]; then \
		echo "run: $(DATA) is empty: importing a sample disk as volume 'sample'"; \
		scripts/sample-disk.sh $(DATA)/../sample.img && \
		$(BIN) --data $(DATA) import sample $(DATA)/../sample.img || exit 1; \
	fi
	$(BIN) --data $(DATA) serve --nbd $(NBD) --http $(HTTP) --mount $(MOUNT)

bench: deps build
	bench/run.sh $(SECTIONS)

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

clean:
	rm -rf bin tmp bench/results
