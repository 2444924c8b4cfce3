# CMake toolchain for the C code of the ARMv6 receiver (libopus through opusic-sys):
# Zig's clang for arm-linux-musleabihf on the ARM1176JZF-S (scripts/build-pi.sh).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR arm)
get_filename_component(_here "${CMAKE_CURRENT_LIST_DIR}" ABSOLUTE)
set(CMAKE_C_COMPILER "${_here}/zig-cc-armv6")
set(CMAKE_AR "${_here}/zig-ar" CACHE FILEPATH "archiver")
set(CMAKE_RANLIB "${_here}/zig-ranlib" CACHE FILEPATH "ranlib")
# libopus builds its NEON intrinsics files (for run-time dispatch) whenever arm_neon.h
# exists. The ARM1176 has no NEON, and scripts/build-pi.sh proves every function of the
# binary is ARMv6 code, so tell the header check it is absent: plain C code only.
set(HAVE_ARM_NEON_H "" CACHE INTERNAL "no NEON on ARMv6")
