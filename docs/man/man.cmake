# Man pages: docs/man/NAME.SECTION.scd is scdoc source; the build turns each into roff
# (build/man/NAME.SECTION) and a gzipped copy for the package (build/man/NAME.SECTION.gz).
# Target `man`, part of the default build when scdoc is found; the .deb requires it.
#   BITSD_MAN_PAGES  the pages built (e.g. bitsd.8), empty without scdoc
#   BITSD_MAN_DIR    where they are
find_program(SCDOC_PROGRAM scdoc)
find_program(GZIP_PROGRAM gzip)
set(BITSD_MAN_DIR "${CMAKE_BINARY_DIR}/man")
set(BITSD_MAN_PAGES "")
if(SCDOC_PROGRAM AND GZIP_PROGRAM)
  file(GLOB _scd CONFIGURE_DEPENDS "${CMAKE_SOURCE_DIR}/docs/man/*.scd")
  set(_outs "")
  foreach(_src ${_scd})
    get_filename_component(_page "${_src}" NAME_WLE)  # bitsd.8
    add_custom_command(
      OUTPUT "${BITSD_MAN_DIR}/${_page}" "${BITSD_MAN_DIR}/${_page}.gz"
      COMMAND ${CMAKE_COMMAND} -E make_directory "${BITSD_MAN_DIR}"
      COMMAND sh -c "\"$0\" < \"$1\" > \"$2\"" "${SCDOC_PROGRAM}" "${_src}" "${BITSD_MAN_DIR}/${_page}"
      # -n: no name or time stamp in the gzip header, so the package is reproducible.
      COMMAND sh -c "\"$0\" -9 -n -c \"$1\" > \"$1.gz\"" "${GZIP_PROGRAM}" "${BITSD_MAN_DIR}/${_page}"
      DEPENDS "${_src}"
      COMMENT "scdoc: ${_page}"
      VERBATIM)
    list(APPEND _outs "${BITSD_MAN_DIR}/${_page}" "${BITSD_MAN_DIR}/${_page}.gz")
    list(APPEND BITSD_MAN_PAGES "${_page}")
  endforeach()
  add_custom_target(man ALL DEPENDS ${_outs})
else()
  message(STATUS "scdoc not found: no man pages (tools/install-deps installs it)")
endif()
