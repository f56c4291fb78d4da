# Fuzzing: libFuzzer harnesses tests/fuzz/fuzz_<target>.c, each with a seed corpus
# tests/fuzz/corpus/<target>/ and a dictionary tests/fuzz/<target>.dict. Clang only, so off by
# default: CC=clang cmake -DQVMD_FUZZ=ON (contrib/fuzz.sh does it). The harnesses compile the
# module sources themselves with -fsanitize=fuzzer,address,undefined, which leaves every other
# target of the build as it is. ctest -L fuzz runs each harness over its seed corpus once.
option(QVMD_FUZZ "Build the libFuzzer harnesses (needs clang)" OFF)
if(QVMD_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "QVMD_FUZZ needs clang: configure with CC=clang (compiler is ${CMAKE_C_COMPILER_ID})")
  endif()
  set(QVMD_FUZZ_DIR ${CMAKE_CURRENT_SOURCE_DIR}/fuzz)
  file(GLOB QVMD_FUZZ_CONFIG_SRC ${CMAKE_SOURCE_DIR}/config/*.c)
  file(GLOB QVMD_FUZZ_QMP_SRC ${CMAKE_SOURCE_DIR}/qmp/*.c)

  # qvmd_fuzzer(TARGET SOURCES src... LIBS lib...): the harness fuzz_TARGET and its seed run.
  function(qvmd_fuzzer target)
    cmake_parse_arguments(F "" "" "SOURCES;LIBS;INCLUDES" ${ARGN})
    set(name fuzz_${target})
    add_executable(${name} ${QVMD_FUZZ_DIR}/${name}.c ${F_SOURCES})
    target_include_directories(${name} PRIVATE ${QVMD_FUZZ_DIR} ${F_INCLUDES})
    target_link_libraries(${name} PRIVATE ${F_LIBS})
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined
                           -fno-sanitize-recover=all -fno-omit-frame-pointer)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
    # -runs=0: every seed once, no mutation, nothing written to the corpus.
    add_test(NAME ${name}_seeds
             COMMAND ${name} -runs=0 -dict=${QVMD_FUZZ_DIR}/${target}.dict
                     ${QVMD_FUZZ_DIR}/corpus/${target})
    set_tests_properties(${name}_seeds PROPERTIES LABELS "fuzz" TIMEOUT 300)
  endfunction()

  qvmd_fuzzer(vm SOURCES ${QVMD_FUZZ_CONFIG_SRC} INCLUDES ${CMAKE_SOURCE_DIR}/config
              LIBS PkgConfig::INIH)
  qvmd_fuzzer(daemon SOURCES ${QVMD_FUZZ_CONFIG_SRC} INCLUDES ${CMAKE_SOURCE_DIR}/config
              LIBS PkgConfig::INIH)
  qvmd_fuzzer(write SOURCES ${QVMD_FUZZ_CONFIG_SRC} INCLUDES ${CMAKE_SOURCE_DIR}/config
              LIBS PkgConfig::INIH)
  # The daemon's pieces (everything qvmd links but its main and the CLI).
  set(QVMD_FUZZ_SUPERVISOR_SRC)
  foreach(f clock protocol xalloc)
    list(APPEND QVMD_FUZZ_SUPERVISOR_SRC ${CMAKE_SOURCE_DIR}/supervisor/${f}.c)
  endforeach()
  # Everything the daemon library holds (the list lives in supervisor/qvmd/CMakeLists.txt).
  get_target_property(_qvmd_daemon_src qvmd_daemon SOURCES)
  foreach(f ${_qvmd_daemon_src})
    list(APPEND QVMD_FUZZ_SUPERVISOR_SRC ${CMAKE_SOURCE_DIR}/supervisor/qvmd/${f})
  endforeach()
  pkg_check_modules(QVMD_FUZZ_XXHASH REQUIRED IMPORTED_TARGET libxxhash)
  # control: requests through a real daemon's socket; rundir: a restarted daemon's run directory.
  foreach(t control rundir)
    qvmd_fuzzer(${t} SOURCES ${QVMD_FUZZ_SUPERVISOR_SRC} ${QVMD_FUZZ_CONFIG_SRC} ${QVMD_FUZZ_QMP_SRC}
                INCLUDES ${CMAKE_SOURCE_DIR}/supervisor ${CMAKE_SOURCE_DIR}/supervisor/qvmd
                         ${CMAKE_SOURCE_DIR}/config
                         ${CMAKE_SOURCE_DIR}/qmp
                LIBS PkgConfig::INIH PkgConfig::JSONC PkgConfig::LIBEVENT
                     PkgConfig::QVMD_FUZZ_XXHASH)
  endforeach()
  # fuzz_rundir answers adoption's input-independent scan of /proc itself (see the harness).
  target_link_options(fuzz_rundir PRIVATE -Wl,--wrap=proc_find)
  qvmd_fuzzer(qmp SOURCES ${QVMD_FUZZ_QMP_SRC} INCLUDES ${CMAKE_SOURCE_DIR}/qmp
              LIBS PkgConfig::JSONC PkgConfig::LIBEVENT)
endif()
