include(CMakePackageConfigHelpers)

if(BUILD_SHARED_LIBS)
  set(SKIM_STATIC_LIBRARY OFF)
else()
  set(SKIM_STATIC_LIBRARY ON)
endif()

install(TARGETS skim EXPORT skimTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/skim DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT skimTargets NAMESPACE skim:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/skim)

configure_package_config_file(cmake/skimConfig.cmake.in
  ${PROJECT_BINARY_DIR}/skimConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/skim)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/skimConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/skimConfig.cmake ${PROJECT_BINARY_DIR}/skimConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/skim)
