# Script mode (cmake -P), run after each build of a Catch2 test program: turns the tier and stage
# tags that each TEST_CASE declares into ctest LABELS for one registration of that program
# (docs/testing.md, "Tiers and stages"). Catch2 2.x's catch_discover_tests knows no tags, so this
# asks the program itself, once per tag: `--list-test-names-only "<spec>[tag]"`.
#
#   -D TEST_EXECUTABLE=...   the Catch2 program
#   -D TEST_SPEC=...         the registration's spec, OR-terms separated by commas (empty: every
#                            visible test, as catch_discover_tests without TEST_SPEC)
#   -D TEST_SUFFIX=...       the registration's name suffix (" [cuda forward]")
#   -D BASE_LABELS=...       labels every test of the registration gets ("cuda;order-forward")
#   -D ON_CUDA=ON|OFF        the registration runs on device cuda: [cuda-no-sanitize] counts
#   -D CUEMU_DEVICE=...      cuemu's device profile for the registration (NORMLAB_CUEMU_DEVICE)
#   -D OUT=...               the ctest file to write
set(tags quick full no-sanitize no-race cpu-tree)
if(ON_CUDA)
  list(APPEND tags cuda-no-sanitize)
endif()

set(names "")
foreach(tag ${tags})
  if(TEST_SPEC STREQUAL "")
    set(spec "[${tag}]~[.]")
  else()
    string(REPLACE "," "[${tag}]," spec "${TEST_SPEC}")
    set(spec "${spec}[${tag}]")
  endif()
  execute_process(COMMAND "${TEST_EXECUTABLE}" --list-test-names-only "${spec}"
                  OUTPUT_VARIABLE out RESULT_VARIABLE rc)
  # Catch2 returns the number of tests listed; only a crash or a missing program is an error.
  if(NOT rc MATCHES "^[0-9]+$")
    message(FATAL_ERROR "${TEST_EXECUTABLE} --list-test-names-only failed: ${rc}")
  endif()
  set(label ${tag})
  if(tag STREQUAL "cuda-no-sanitize")
    set(label no-sanitize)
  endif()
  string(REPLACE ";" "\\;" out "${out}")
  string(REPLACE "\n" ";" lines "${out}")
  foreach(name IN LISTS lines)
    if(name STREQUAL "")
      continue()
    endif()
    string(MD5 key "${name}")
    if(NOT DEFINED labels_${key})
      list(APPEND names "${name}")
      set(labels_${key} ${BASE_LABELS})
    endif()
    list(APPEND labels_${key} ${label})
  endforeach()
endforeach()

set(text "")
foreach(name IN LISTS names)
  string(MD5 key "${name}")
  string(APPEND text "set_tests_properties([==[${name}${TEST_SUFFIX}]==] PROPERTIES LABELS [==[${labels_${key}}]==])\n")
  if(NOT CUEMU_DEVICE STREQUAL "")
    # Here rather than through catch_discover_tests, whose PROPERTIES keep one value per property.
    string(APPEND text "set_tests_properties([==[${name}${TEST_SUFFIX}]==] PROPERTIES ENVIRONMENT "
                       "[==[NORMLAB_TEST_DEVICE=cuda;NORMLAB_CUEMU_DEVICE=${CUEMU_DEVICE}]==])\n")
  endif()
endforeach()
file(WRITE "${OUT}" "${text}")
