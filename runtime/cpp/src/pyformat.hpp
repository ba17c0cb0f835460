// Text as the Python runtime writes it into its messages (repr, json.dumps, str(Path)), so that both
// runtimes refuse the same input with the same line.
#pragma once
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

namespace creps::detail {

using ojson = nlohmann::ordered_json;  // keeps the manifest's key order, as Python's dict does

std::string py_repr(const ojson& value);                     // repr() of the value json.loads gives
std::string py_dumps(const ojson& value);                    // json.dumps(value)
std::string py_float(double value);                          // repr(float)
std::string py_str_repr(const std::string& utf8);            // repr(str)
std::string py_list(const std::vector<std::string>& items);  // repr(list of str)
std::string head(const std::string& utf8, size_t chars);     // text[:chars], counted in code points
std::string py_path(const std::string& path);                // str(pathlib.Path(path))

}  // namespace creps::detail
