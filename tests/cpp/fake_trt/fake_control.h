// What the simulator (fake_trt.cpp) tells a test: live resources, how many were made, the deserialize trace.
#pragma once
#include <string>

std::string fake_report();
