# Warnings are errors everywhere; generated protobuf code gets the same flags.
add_compile_options(-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
                    -Wmissing-prototypes -Wno-unused-parameter
                    -Wpointer-arith -Wformat=2 -Wvla)
add_compile_definitions(_GNU_SOURCE)
set(CMAKE_C_FLAGS_RELEASE "-O2 -DNDEBUG")
set(CMAKE_C_FLAGS_DEBUG "-O1 -g -fno-omit-frame-pointer")
