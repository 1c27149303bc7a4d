# Enforces the layer rule of STYLE.md §1 on core/: portable C++ only. Run by the build before
# bitsd_core compiles (and by a ctest that feeds it a violation):
#   cmake -DDIR=core -DSTAMP=out.stamp -P tools/check-layers.cmake
# An include path alone cannot do this, since <uv.h>, <mbedtls/...> and <unistd.h> all live in
# /usr/include. So every include in core/ must be a C++ standard header from the list below,
# another core/ header, or llhttp.h (the parser core wraps); anything else fails the build with
# the file, the line and the header.
set(_allowed
  algorithm array atomic bit bitset cassert cctype cerrno chrono cinttypes climits cmath compare
  concepts cstdarg cstddef cstdint cstdio cstdlib cstring ctime functional initializer_list
  iterator limits memory new numeric optional span string string_view tuple type_traits
  unordered_map unordered_set utility variant vector)
if(NOT DIR)
  message(FATAL_ERROR "check-layers: DIR is not set")
endif()
file(GLOB_RECURSE _files "${DIR}/*.h" "${DIR}/*.cc")
set(_bad "")
foreach(_f IN LISTS _files)
  file(STRINGS "${_f}" _lines REGEX "^[ \t]*#[ \t]*include")
  foreach(_l IN LISTS _lines)
    if(_l MATCHES "#[ \t]*include[ \t]*<([^>]+)>")
      set(_h "${CMAKE_MATCH_1}")
      list(FIND _allowed "${_h}" _i)
      if(_i LESS 0)
        string(APPEND _bad "\n  ${_f}: <${_h}> is not portable C++ (core/ may not use it)")
      endif()
    elseif(_l MATCHES "#[ \t]*include[ \t]*\"([^\"]+)\"")
      set(_h "${CMAKE_MATCH_1}")  # the MATCHES below would reset CMAKE_MATCH_1
      if(NOT _h MATCHES "^core/" AND NOT _h STREQUAL "llhttp.h")
        string(APPEND _bad "\n  ${_f}: \"${_h}\" is outside core/")
      endif()
    else()
      string(APPEND _bad "\n  ${_f}: unrecognised include: ${_l}")
    endif()
  endforeach()
endforeach()
if(_bad)
  message(FATAL_ERROR "check-layers: core/ must stay portable (STYLE.md §1):${_bad}")
endif()
if(STAMP)
  file(TOUCH "${STAMP}")
endif()
