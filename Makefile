# NovaCron: the two commands a newcomer needs.
#   make run    install what is missing, build, start a single-node novacrond
#               on the embedded SQLite store and boot a demo VM
#   make test   install what is missing, build, run the whole suite
# Everything else is a building block of those two.

BUILD      ?= build
BUILD_SAN  ?= build-san
JOBS       ?= $(shell nproc)
GUEST_DIR  := $(BUILD)/guest
CMAKE_ARGS ?=

.PHONY: all deps build guest run stop test test-unit test-san fuzz clean

all: build

deps:
	@scripts/install-deps

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_ARGS) >/dev/null
	@$(MAKE) --no-print-directory -C $(BUILD) -j$(JOBS)

guest: deps
	@scripts/build-guest-image $(GUEST_DIR)

run: build guest
	@scripts/demo start

stop:
	@scripts/demo stop

# The whole suite: unit tests, fuzz corpus replay, end-to-end tests with
# real QEMU guests and a real Prometheus, then the unit tests again under
# AddressSanitizer and UndefinedBehaviorSanitizer.
test: build guest
	@cd $(BUILD) && ctest --output-on-failure --timeout 900 -j2
	@$(MAKE) --no-print-directory test-san

test-unit: build
	@cd $(BUILD) && ctest --output-on-failure -L unit -j$(JOBS)

test-san: deps
	@cmake -S . -B $(BUILD_SAN) -DNC_ASAN=ON -DNC_UBSAN=ON -DNC_E2E=OFF \
	       -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@$(MAKE) --no-print-directory -C $(BUILD_SAN) -j$(JOBS)
	@cd $(BUILD_SAN) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    ctest --output-on-failure -L unit -j$(JOBS)

# libFuzzer builds (clang); run one with e.g. build-fuzz/bin/fuzz_qmp fuzz/corpus/qmp
fuzz: deps
	@CC=clang cmake -S . -B build-fuzz -DNC_FUZZ=ON -DNC_E2E=OFF >/dev/null
	@$(MAKE) --no-print-directory -C build-fuzz -j$(JOBS)

clean:
	rm -rf $(BUILD) $(BUILD_SAN) build-fuzz
