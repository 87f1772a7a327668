# rk_protoc_c(OUT_VAR file.proto ...): runs protoc-c into the build dir and
# returns the generated .c files. Generated code is never committed.
find_program(PROTOC_C NAMES protoc-c protoc-gen-c REQUIRED)

function(rk_protoc_c out_var)
    set(srcs)
    foreach(proto ${ARGN})
        get_filename_component(abs ${proto} ABSOLUTE)
        get_filename_component(name ${proto} NAME_WE)
        get_filename_component(dir ${abs} DIRECTORY)
        set(c ${CMAKE_CURRENT_BINARY_DIR}/${name}.pb-c.c)
        set(h ${CMAKE_CURRENT_BINARY_DIR}/${name}.pb-c.h)
        add_custom_command(
            OUTPUT ${c} ${h}
            COMMAND ${PROTOC_C} --c_out=${CMAKE_CURRENT_BINARY_DIR}
                    --proto_path=${dir} ${abs}
            DEPENDS ${abs}
            COMMENT "protoc-c ${name}.proto")
        list(APPEND srcs ${c})
    endforeach()
    set(${out_var} ${srcs} PARENT_SCOPE)
endfunction()
