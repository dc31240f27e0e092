# The two set-up commands: `make run` (the main job) and `make test` (every test).
# Both install the Debian dependencies first, then configure and build with CMake.
#
# make run: on a machine with nvcc and a usable GPU (scripts/detect-gpu.sh) it builds with
# NORMLAB_CUDA=ON for that GPU's architecture in build-gpu/ and trains there; anywhere else it
# builds the CPU tree build/. Either way the first lines say which and why.
#
# make test runs eight stages, each in its own build tree:
#   test-cpu       the CPU build and its full suite (in make test: inside test-fresh's clean root)
#   test-emulate   NORMLAB_CUDA=EMULATE: the suite again on device cuda, executed by cuemu under
#                  forward, reverse and random thread order
#   test-asan      the emulated build under AddressSanitizer + UndefinedBehaviorSanitizer
#   test-race      the emulated CUDA kernels under ThreadSanitizer, every CUDA thread a TSan fiber
#                  with only CUDA's happens-before edges: data races between CUDA threads fail
#   test-profile   the emulated build with cuemu's memory-traffic profiler: its own cases, the norm
#                  kernels held to their design (coalesced, each tensor moved once), bench/gpu_model
#                  on a small batch (`make gpu-model` writes the full table, batch 128 and 512)
#   test-nvcc      every kernels/cuda/*.cu compiled by nvcc for sm_80 and sm_90, failing on spills;
#                  then the NORMLAB_CUDA=ON library (for sm_90 alone: both architectures' code
#                  was just compiled and checked) with nl::dist's NCCL backend (required: the
#                  configure fails without NCCL) and the cuDNN benchmark built and run (it skips
#                  cleanly without a GPU), and scripts/gpu-check.sh --dry-run
#   test-fuzz      libFuzzer harnesses (clang, ASan+UBSan) for the CIFAR-10 and IDX readers, the
#                  checkpoint loader and archive extraction, FUZZ_SECONDS (30) each, side by side; `make fuzz`
#                  runs them longer (FUZZ_LONG, 600 s each)
#   test-fresh     a pristine Debian 12 root (mmdebstrap): install-deps, test-cpu and a short
#                  make run inside it, from the committed tree, proving the README on a new machine
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
CONFIGURE = cmake -DCMAKE_BUILD_TYPE=Release -DNORMLAB_BUILD_TESTS=ON -DNORMLAB_BUILD_EXAMPLES=ON -DNORMLAB_BUILD_BENCH=ON $(CMAKE_FLAGS)
CTEST = ctest --output-on-failure -j $(JOBS)
# The main job's data: the real CIFAR-10 subset beside the repository when it is there,
# otherwise ./data, downloading CIFAR-10 if it is missing. Override with RUN_ARGS=...
SUBSET := ../shared/data/cifar10-subset
RUN_OUT := runs/compare_norms
RUN_ARGS ?= $(if $(wildcard $(SUBSET)/cifar-10-batches-bin),--data-dir $(SUBSET),--data-dir data --download) --out $(RUN_OUT)
# With the default arguments, a study already in runs/compare_norms is continued (--resume): an
# interrupted `make run` goes on where it stopped, a finished one only writes its report again.
RESUME = $(if $(and $(filter file,$(origin RUN_ARGS)),$(wildcard $(RUN_OUT)/run.json)),--resume)

.PHONY: build-fuzz
.PHONY: all deps build run test test-cpu test-emulate test-asan test-race test-profile test-nvcc test-fuzz fuzz test-fresh gpu-check gpu-model clean

all: build

deps:
	scripts/install-deps.sh

build: deps
	$(CONFIGURE) -S . -B build
	cmake --build build -j $(JOBS)

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
	  echo "make run: CPU build in build/ on $(JOBS) cores"; \
	  $(MAKE) --no-print-directory build && build/examples/compare_norms/compare_norms $(RUN_ARGS) $(RESUME); \
	fi

# The CPU build and its whole suite run inside test-fresh (`make test-cpu` in the pristine root,
# same compiler, same packages, same configuration), so test-cpu on this machine would repeat them
# (4 minutes); it stays a target of its own for quick runs.
test: test-emulate test-asan test-race test-nvcc test-profile test-fuzz test-fresh
	@echo "make test: all eight stages passed (test-cpu inside test-fresh)"

# CTEST_EXCLUDE: a regex of tests to leave out (for quick runs by hand; make test leaves out none).
CTEST_EXCLUDE ?=
test-cpu: build
	cd build && $(CTEST) $(if $(CTEST_EXCLUDE),-E "$(CTEST_EXCLUDE)")

# The trajectory-parity test trains on the CPU device in every tree: here it would only repeat
# test-cpu's run of the same code (2.5 minutes; in make test, inside test-fresh), so it is left to that stage. The two
# whole-network tests on cuda (two training steps of every norm row against the CPU; fusion on
# and off) run in forward order only, as the resume test does: they check that the ops compose
# into the same network, while what a thread order can change is each kernel's result, which the
# op, medium-shape, gradient and norm-table tests check in all three orders (and the race stage
# under ThreadSanitizer). Reverse and random order of the two added 6 minutes of CPU. The norm
# table's finite-difference check (28 s per order) also runs in forward order only: it launches
# each variant's kernels hundreds of times at one shape to compare numbers with finite
# differences; what another order can change, each kernel's result, the table's reference test and
# "every variant on cuda agrees with the CPU" hold in all three orders.
EMULATE_EXCLUDE = trajectory parity|(two training steps of the comparison network|fusion on and off|every variant passes the finite-difference).*cuda (reverse|random)
test-emulate: deps
	$(CONFIGURE) -DNORMLAB_CUDA=EMULATE -DNORMLAB_BUILD_BENCH=OFF -S . -B build-emulate
	cmake --build build-emulate -j $(JOBS)
	cd build-emulate && $(CTEST) -E "$(EMULATE_EXCLUDE)"

# Forward order only: the emulate stage already covers the three orders; this one hunts
# memory errors, which do not depend on the order. The resume test on emulated cuda (4 minutes
# under ASan) is left to the emulate stage; its CPU twin, the same checkpoint code, runs here.
# The trajectory-parity test (6 minutes under ASan) checks numbers, not memory: its code, CPU
# training steps, runs here in the smoke run, the resume and the telemetry tests; the CPU and
# emulate stages hold it to the fixture. The benchmarks are CPU code the first stage already
# builds and runs; they stay out of the emulated and sanitized trees. NORMLAB_TEST_LIGHT=1: the
# app tests train on fewer images per epoch here (tests/helpers.h, light_tests: the app's code
# runs the same for 2 steps as for 8; the steps themselves are the op tests' job); they took 7 of
# this stage's 16 minutes. The same variable makes the data-parallel network test (dist_check
# step, 93 s under ASan) run BN per rank and SyncBN only: GN's and LN's data-parallel path is
# BN's, and their numbers are held by the CPU and emulate stages. Also left out, as in the race stage: the two whole-network tests
# (two training steps of every norm row on cuda against the CPU, 276 s under ASan; fusion on/off,
# 67 s on cuda, 11 s on the CPU) and the norm table's finite-difference check (57 s on cuda, 7 s
# on the CPU): they check numbers over many repeats
# of kernels that the op, medium-shape and norm-table tests run here once each, which is what a
# memory error needs.
ASAN_EXCLUDE = cuda (reverse|random)|resumes to bitwise.*cuda|trajectory parity|fusion on and off|every variant passes the finite-difference|two training steps of the comparison network
test-asan: deps
	$(CONFIGURE) -DNORMLAB_CUDA=EMULATE -DNORMLAB_SANITIZE=ON -DNORMLAB_NATIVE=OFF -DNORMLAB_BUILD_BENCH=OFF -S . -B build-asan
	cmake --build build-asan -j $(JOBS)
	cd build-asan && NORMLAB_TEST_LIGHT=1 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(CTEST) -E "$(ASAN_EXCLUDE)"

# Every CUDA op, gradient, golden, optimizer and fusion test on emulated cuda, with the kernels
# under ThreadSanitizer (docs/cuda-emulation.md, "Race check"), plus the planted races of
# tests/cuemu/race_cases.cu in three orders. Left out: the three whole-network runs (two training
# steps; fusion on and off over every norm row; the interrupted study), 24 minutes of CPU under
# TSan, whose kernels and shapes the op tests already cover (the fused epilogue of every row runs
# here in "norm table: every variant on cuda agrees" and "fused norm epilogue equals"); and the
# mpirun tests (dist:), whose Open MPI threads TSan cannot see (uninstrumented), while the
# SyncBatchNorm kernels they drive run here in "SyncBatchNorm in one process equals BatchNorm".
# Also left out: "gradcheck fails on a gradient perturbed by a small amount" (a check of the
# gradient checker itself, 95 s under TSan; the gradcheck tests' kernels run here) and "a two-layer
# CNN's loss falls on a fixed batch" (a training loop, 48 s; its conv, norm, pool and loss kernels
# run here in the op tests).
# Also left out: the gradcheck tests' finite differences (about 3 minutes of CPU under TSan: the
# fused norm with dropout and residual 71 s, batch_norm 37 s, group_norm 29 s), which launch each
# op's kernels at tiny shapes many times over; those forward and backward kernels run here once
# each in the medium-shape tests, "every CUDA op agrees with the CPU op forward and backward",
# the norm table's reference test and "fused norm epilogue equals", and a race needs one launch.
# Also left out: the norm table's finite-difference check (4.5 minutes of CPU under TSan), which
# launches each variant's kernels at one shape hundreds of times; "every variant on cuda agrees"
# runs the same variants' forward and backward kernels here on that shape's path (HxW 15 there, 35
# here: both the scalar path, not a multiple of 4; N 5 in both, so the same ghost slices)
# and three more shapes, plain and fused, and a race needs only one launch to show (planted:
# block_sum2's first barrier dropped fails it here, naming batch_norm_stats_kernel). The host
# side is kept single-threaded (OMP_NUM_THREADS=1): libgomp is not instrumented, so its threads
# would only bring false reports.
test-race: deps
	$(CONFIGURE) -DNORMLAB_CUDA=EMULATE -DNORMLAB_RACECHECK=ON -DNORMLAB_BUILD_BENCH=OFF -S . -B build-race
	cmake --build build-race -j $(JOBS)
	cd build-race && OMP_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=0 $(CTEST) -R "cuda forward|race check" \
	  -E "two training steps of the comparison network|fusion on and off|interrupted study resumes|dist:|every variant passes the finite-difference|gradient perturbed by a small amount|two-layer CNN's loss falls|gradcheck: "

PROFILE_CONFIGURE = $(CONFIGURE) -DNORMLAB_CUDA=EMULATE -DNORMLAB_CUDA_PROFILE=ON -DNORMLAB_BENCH_ONEDNN=OFF -S . -B build-profile
# The GPU model needs ptxas' registers per kernel: test-nvcc's report, made here when missing.
PTXAS_SUMMARY = build-nvcc/ptxas-summary.txt

test-profile: deps
	$(PROFILE_CONFIGURE)
	cmake --build build-profile -j $(JOBS) --target profile_tests gpu_model
	build-profile/tests/profile_tests
	test -f $(PTXAS_SUMMARY) || scripts/check-nvcc.sh build-nvcc
	build-profile/bench/gpu_model --batches 8 --norms bn,gn,ln --ptxas $(PTXAS_SUMMARY) > build-profile/gpu-model-smoke.txt
	@tail -1 build-profile/gpu-model-smoke.txt

# The full table of docs/kernels.md ("GPU model"): batch 128 and 512, every norm (about 12 minutes),
# and bench/gpu_model_norms.json, the model's time for each row of bench_norm_cuda, which
# scripts/gpu-check.sh prints beside the measured time (commit it when the kernels change).
gpu-model: deps
	$(PROFILE_CONFIGURE)
	cmake --build build-profile -j $(JOBS) --target gpu_model
	test -f $(PTXAS_SUMMARY) || scripts/check-nvcc.sh build-nvcc
	build-profile/bench/gpu_model --batches 128,512 --norms bn,gn,ln --ptxas $(PTXAS_SUMMARY) --markdown \
	  --bench-norm-json bench/gpu_model_norms.json | tee build-profile/gpu-model.md

test-nvcc: deps
	scripts/check-nvcc.sh build-nvcc
	cmake -DCMAKE_BUILD_TYPE=Release -DNORMLAB_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DNORMLAB_DIST_NCCL=ON -DNORMLAB_BUILD_BENCH=ON -DNORMLAB_BUILD_TESTS=OFF -DNORMLAB_BUILD_EXAMPLES=OFF $(CMAKE_FLAGS) -S . -B build-cuda
	cmake --build build-cuda -j $(JOBS) --target bench_norm_cuda normlab_dist
	build-cuda/bench/bench_norm_cuda --iters 20
	scripts/gpu-check.sh --dry-run --out build-nvcc/gpu-check

FUZZ_SECONDS ?= 30
FUZZ_LONG ?= 600
build-fuzz: deps
	CC=clang CXX=clang++ cmake -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNORMLAB_FUZZ=ON -DNORMLAB_NATIVE=OFF \
	  -DNORMLAB_BUILD_TESTS=OFF -DNORMLAB_BUILD_EXAMPLES=OFF -S . -B build-fuzz
	cmake --build build-fuzz -j $(JOBS) --target fuzzers

test-fuzz: build-fuzz
	scripts/run-fuzzers.sh build-fuzz $(FUZZ_SECONDS)

fuzz: build-fuzz
	scripts/run-fuzzers.sh build-fuzz $(FUZZ_LONG)

# Needs root (mmdebstrap, chroot, mount), as CI and the developer machines have.
test-fresh: deps
	scripts/test-fresh.sh

# On a GPU machine with .gpu-deps/ carried along (scripts/gpu-deps.sh makes it here).
gpu-check:
	scripts/gpu-check.sh

clean:
	rm -rf build build-emulate build-asan build-race build-profile build-nvcc build-cuda build-gpu build-gpu-check build-fresh build-fuzz
