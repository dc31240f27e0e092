# The two set-up commands: `make run` (the main job) and `make test` (every test).
# Both install the Debian dependencies first, configure and build.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
# The main job's data: the real CIFAR-10 subset beside the repository when it is there,
# otherwise ./data, downloading CIFAR-10 if it is missing. Override with RUN_ARGS=...
SUBSET := ../shared/data/cifar10-subset
RUN_ARGS ?= $(if $(wildcard $(SUBSET)/cifar-10-batches-bin),--data-dir $(SUBSET),--data-dir data --download) --out runs/compare_norms

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
	$(BUILD)/examples/compare_norms/compare_norms $(RUN_ARGS)

clean:
	rm -rf $(BUILD)
