# Installs headers, libraries and normlabConfig.cmake so that consumers can
#   find_package(normlab CONFIG REQUIRED)  and link normlab::nn (which brings normlab::core).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS normlab_core normlab_nn normlab_data normlab_dist EXPORT normlabTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY core/include/normlab nn/include/normlab dist/include/normlab DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT normlabTargets NAMESPACE normlab:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/normlab)

configure_package_config_file(cmake/normlabConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/normlabConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/normlab)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/normlabConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/normlabConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/normlabConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/normlab)
