# The two set-up commands: `make run` (the main job) and `make test` (every test).
# Both install the Debian dependencies first, configure and build.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test run clean

all: build

deps:
	scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DNORMLAB_BUILD_TESTS=ON -DNORMLAB_BUILD_EXAMPLES=ON $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

run: build
	$(BUILD)/examples/train_demo/train_demo

clean:
	rm -rf $(BUILD)
