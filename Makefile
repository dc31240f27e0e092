# normlab's set-up commands: `make run` (the main job), `make test` (the quick tier: minutes) and
# `make test-all` (every stage: what CI runs). Tiers, stages and why each test runs where it does:
# docs/testing.md.
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
CONFIGURE = cmake -DCMAKE_BUILD_TYPE=Release -DNORMLAB_BUILD_TESTS=ON -DNORMLAB_BUILD_EXAMPLES=ON -DNORMLAB_BUILD_BENCH=ON $(CMAKE_FLAGS)
CTEST = ctest --output-on-failure -j $(JOBS)
# The main job's data: the CIFAR-10 subset beside the repository, else ./data (downloaded).
SUBSET := ../shared/data/cifar10-subset
RUN_OUT := runs/compare_norms
RUN_ARGS ?= $(if $(wildcard $(SUBSET)/cifar-10-batches-bin),--data-dir $(SUBSET),--data-dir data --download) --out $(RUN_OUT)
# With the default arguments, a study already in runs/compare_norms is continued (--resume).
RESUME = $(if $(and $(filter file,$(origin RUN_ARGS)),$(wildcard $(RUN_OUT)/run.json)),--resume)

.PHONY: build-fuzz all deps build run test test-all test-cpu test-emulate test-asan test-race test-profile test-nvcc test-fuzz fuzz test-fresh gpu-check gpu-model gpu-model-fit clean

# The CPU build (make build).
all: build

# Debian packages (scripts/install-deps.sh).
deps:
	scripts/install-deps.sh

# The CPU build in build/.
build: deps
	$(CONFIGURE) -S . -B build
	cmake --build build -j $(JOBS)

# Trains the comparison (on the GPU in build-gpu/ when scripts/detect-gpu.sh finds one).
run: deps
	@$(if $(RESUME),echo "make run: $(RUN_OUT) holds a study: continuing it (--resume); remove the folder to start over";) \
	arch=$$(scripts/detect-gpu.sh); \
	if [ -n "$$arch" ]; then \
	  echo "make run: GPU build in build-gpu/ (NORMLAB_CUDA=ON, sm_$$arch)"; \
	  cmake -DCMAKE_BUILD_TYPE=Release -DNORMLAB_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=$$arch \
	        -DNORMLAB_BUILD_TESTS=OFF -DNORMLAB_BUILD_BENCH=OFF $(CMAKE_FLAGS) -S . -B build-gpu && \
	  cmake --build build-gpu -j $(JOBS) --target compare_norms && \
	  build-gpu/examples/compare_norms/compare_norms $(RUN_ARGS) $(RESUME); \
	else \
	  echo "make run: CPU build of compare_norms in build/ on $(JOBS) cores"; \
	  $(CONFIGURE) -S . -B build && cmake --build build -j $(JOBS) --target compare_norms && \
	  build/examples/compare_norms/compare_norms $(RUN_ARGS) $(RESUME); \
	fi

# ctest label selections (docs/testing.md); CTEST_ARGS adds arguments for runs by hand.
CTEST_ARGS ?=
EMULATE_CONFIGURE = $(CONFIGURE) -DNORMLAB_CUDA=EMULATE -DNORMLAB_BUILD_BENCH=OFF -S . -B build-emulate

# The quick tier: the CPU suite and the emulated CUDA suite in forward order, then the nvcc check.
test: deps
	$(EMULATE_CONFIGURE)
	cmake --build build-emulate -j $(JOBS)
	cd build-emulate && $(CTEST) -L '^quick$$' -LE '^order-(reverse|random)$$' $(CTEST_ARGS)
	NORMLAB_NVCC_OPTIONAL=1 scripts/check-nvcc.sh build-nvcc
	@echo "make test: the quick tier passed (make test-all runs every stage)"

# Every stage, both tiers: what CI runs.
test-all: test-cpu test-emulate test-asan test-race test-profile test-nvcc test-fuzz test-fresh
	@echo "make test-all: all eight stages passed"

# The CPU build's whole suite.
test-cpu: build
	cd build && $(CTEST) $(CTEST_ARGS)

# The suite on emulated cuda in forward, reverse and random thread order.
test-emulate: deps
	$(EMULATE_CONFIGURE)
	cmake --build build-emulate -j $(JOBS)
	cd build-emulate && $(CTEST) -LE '^cpu-tree$$' $(CTEST_ARGS)

# The emulated build under AddressSanitizer + UndefinedBehaviorSanitizer, forward order.
test-asan: deps
	$(CONFIGURE) -DNORMLAB_CUDA=EMULATE -DNORMLAB_SANITIZE=ON -DNORMLAB_NATIVE=OFF -DNORMLAB_BUILD_BENCH=OFF -S . -B build-asan
	cmake --build build-asan -j $(JOBS)
	cd build-asan && NORMLAB_TEST_LIGHT=1 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(CTEST) -LE '^(order-reverse|order-random|no-sanitize|cpu-tree)$$' $(CTEST_ARGS)

# The emulated CUDA kernels under ThreadSanitizer, every CUDA thread a fiber, and the planted races.
test-race: deps
	$(CONFIGURE) -DNORMLAB_CUDA=EMULATE -DNORMLAB_RACECHECK=ON -DNORMLAB_BUILD_BENCH=OFF -S . -B build-race
	cmake --build build-race -j $(JOBS)
	cd build-race && OMP_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=0 \
	  $(CTEST) -L '^(order-forward|race)$$' -LE '^(no-sanitize|no-race|dist)$$' $(CTEST_ARGS)

PROFILE_CONFIGURE = $(CONFIGURE) -DNORMLAB_CUDA=EMULATE -DNORMLAB_CUDA_PROFILE=ON -DNORMLAB_BENCH_ONEDNN=OFF -S . -B build-profile
PTXAS_SUMMARY = build-nvcc/ptxas-summary.txt
SASS_SUMMARY = build-nvcc/sass-summary.json

# cuemu's memory-traffic profiler: its own cases, the norm kernels' traffic, the GPU model's smoke
# run; bench_train_step and bench_conv for gpu-check's dry run (test-nvcc, after this stage).
test-profile: deps
	$(PROFILE_CONFIGURE)
	cmake --build build-profile -j $(JOBS) --target profile_tests gpu_model bench_train_step bench_conv
	build-profile/tests/profile_tests
	test -f $(PTXAS_SUMMARY) -a -f $(SASS_SUMMARY) || scripts/check-nvcc.sh build-nvcc
	build-profile/bench/gpu_model --batches 8 --norms bn,gn,ln --ptxas $(PTXAS_SUMMARY) --sass $(SASS_SUMMARY) \
	  > build-profile/gpu-model-smoke.txt
	@grep 'Modelled time per training step' build-profile/gpu-model-smoke.txt

# The GPU model (docs/gpu-model.md): its tables, bench/gpu_model_norms.json, and its rows beside
# the GPU run GPU_RUN; gpu-model-fit first refits bench/gpu_model_constants.json on that run.
GPU_RUN ?= docs/results/gpu-check-h200-2026-11-30
GPU_MODEL = build-profile/bench/gpu_model --batches 128,512 --norms bn,gn,ln --ptxas $(PTXAS_SUMMARY) \
  --sass $(SASS_SUMMARY) --markdown --bench-norm-json bench/gpu_model_norms.json --measured $(GPU_RUN) \
  --compare-md build-profile/model_vs_measured.md
gpu-model gpu-model-fit: deps
	$(PROFILE_CONFIGURE)
	cmake --build build-profile -j $(JOBS) --target gpu_model
	test -f $(PTXAS_SUMMARY) -a -f $(SASS_SUMMARY) || scripts/check-nvcc.sh build-nvcc
	$(GPU_MODEL) $(if $(filter gpu-model-fit,$@),--fit bench/gpu_model_constants.json) | tee build-profile/gpu-model.md

# nvcc on every kernel (sm_80, sm_90, no spills), the CUDA library with NCCL, the cuDNN benchmark.
test-nvcc: deps
	scripts/check-nvcc.sh build-nvcc
	cmake -DCMAKE_BUILD_TYPE=Release -DNORMLAB_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DNORMLAB_DIST_NCCL=ON -DNORMLAB_BUILD_BENCH=ON -DNORMLAB_BUILD_TESTS=OFF -DNORMLAB_BUILD_EXAMPLES=OFF $(CMAKE_FLAGS) -S . -B build-cuda
	cmake --build build-cuda -j $(JOBS) --target bench_norm_cuda normlab_dist
	build-cuda/bench/bench_norm_cuda --iters 20
	scripts/gpu-check.sh --dry-run --out build-nvcc/gpu-check

FUZZ_SECONDS ?= 30
FUZZ_LONG ?= 600
# The libFuzzer harnesses (clang, ASan + UBSan).
build-fuzz: deps
	CC=clang CXX=clang++ cmake -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNORMLAB_FUZZ=ON -DNORMLAB_NATIVE=OFF \
	  -DNORMLAB_BUILD_TESTS=OFF -DNORMLAB_BUILD_EXAMPLES=OFF -S . -B build-fuzz
	cmake --build build-fuzz -j $(JOBS) --target fuzzers

# Each harness FUZZ_SECONDS, side by side; `make fuzz` runs them FUZZ_LONG each.
test-fuzz: build-fuzz
	scripts/run-fuzzers.sh build-fuzz $(FUZZ_SECONDS)

# The harnesses FUZZ_LONG seconds each.
fuzz: build-fuzz
	scripts/run-fuzzers.sh build-fuzz $(FUZZ_LONG)

# A pristine Debian 12 root (mmdebstrap; needs root): install-deps, make test and a short make run.
test-fresh: deps
	scripts/test-fresh.sh

# On a GPU machine with .gpu-deps/ beside the tree (scripts/gpu-deps.sh makes it).
gpu-check:
	scripts/gpu-check.sh

# Removes every build tree.
clean:
	rm -rf build build-emulate build-asan build-race build-profile build-nvcc build-cuda build-gpu build-gpu-check build-fresh build-fuzz
