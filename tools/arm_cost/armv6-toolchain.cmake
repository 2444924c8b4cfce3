# CMake toolchain file for the C dependencies built with CMake (libopus, through
# opusic-sys) when tools/arm_cost/run.sh cross-builds for ARMv6 (Raspberry Pi Zero W).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR arm)
# run.sh sets ARM_COST_CC to the cross gcc of the target being built
if(DEFINED ENV{ARM_COST_CC})
  set(CMAKE_C_COMPILER $ENV{ARM_COST_CC})
else()
  set(CMAKE_C_COMPILER arm-linux-gnueabihf-gcc)
endif()
# libopus's CMake builds its NEON intrinsics files whenever arm_neon.h exists, without
# adding -mfpu=neon for them, which fails with -mfpu=vfp. The ARM1176 has no NEON, so
# tell the header check it is absent (opus then builds its plain C code only).
set(HAVE_ARM_NEON_H "" CACHE INTERNAL "no NEON on ARMv6")
