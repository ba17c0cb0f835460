#include "pyformat.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace creps::detail {
namespace {

// Decode one UTF-8 code point at s[i] (advancing i); a malformed byte decodes as itself.
char32_t next_code_point(const std::string& s, size_t& i) {
    auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    unsigned char c = byte(i);
    int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    if (extra == 0 || i + extra >= s.size()) {  // ASCII, or a sequence cut short
        ++i;
        return c;
    }
    char32_t cp = c & (0x3F >> extra);
    for (int k = 1; k <= extra; ++k) cp = (cp << 6) | (byte(i + k) & 0x3F);
    i += extra + 1;
    return cp;
}

void append_utf8(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

std::string hex(unsigned value, int digits) {
    char buffer[16];
    std::snprintf(buffer, sizeof buffer, "%0*x", digits, value);
    return buffer;
}

std::string format_float(double value, bool json) {
    if (std::isnan(value)) return json ? "NaN" : "nan";
    if (std::isinf(value)) return value > 0 ? (json ? "Infinity" : "inf") : (json ? "-Infinity" : "-inf");
    // The shortest round-trip digits, laid out as Python's float repr: positional for a decimal exponent
    // from -4 to 15, else d.ddde+XX.
    char buffer[64];
    auto result = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::scientific);
    std::string sci(buffer, result.ptr);
    size_t e = sci.find('e');
    int exponent = std::atoi(sci.c_str() + e + 1);
    std::string mantissa = sci.substr(0, e);
    std::string sign;
    if (mantissa[0] == '-') {
        sign = "-";
        mantissa.erase(0, 1);
    }
    std::string digits;
    for (char c : mantissa)
        if (c != '.') digits += c;
    if (exponent < -4 || exponent >= 16) {
        std::string out = sign + digits.substr(0, 1);
        if (digits.size() > 1) out += "." + digits.substr(1);
        char exp[16];
        std::snprintf(exp, sizeof exp, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
        return out + exp;
    }
    if (exponent < 0) return sign + "0." + std::string(-exponent - 1, '0') + digits;
    size_t point = static_cast<size_t>(exponent) + 1;
    if (digits.size() <= point) return sign + digits + std::string(point - digits.size(), '0') + ".0";
    return sign + digits.substr(0, point) + "." + digits.substr(point);
}

bool printable(char32_t cp) {
    // Python's str.isprintable for the characters a manifest plausibly holds: ASCII controls, DEL and
    // the C1 controls are not; everything else is shown as itself.
    return !(cp < 0x20 || (cp >= 0x7F && cp < 0xA0) || cp == 0xAD || cp == 0x2028 || cp == 0x2029);
}

}  // namespace

std::string py_float(double value) { return format_float(value, false); }

std::string py_str_repr(const std::string& s) {
    bool single = s.find('\'') == std::string::npos || s.find('"') != std::string::npos;
    char quote = single ? '\'' : '"';
    std::string out(1, quote);
    for (size_t i = 0; i < s.size();) {
        char32_t cp = next_code_point(s, i);
        if (cp == static_cast<char32_t>(quote) || cp == '\\') {
            out += '\\';
            out += static_cast<char>(cp);
        } else if (cp == '\n') {
            out += "\\n";
        } else if (cp == '\r') {
            out += "\\r";
        } else if (cp == '\t') {
            out += "\\t";
        } else if (!printable(cp)) {
            out += cp < 0x100 ? "\\x" + hex(cp, 2) : cp < 0x10000 ? "\\u" + hex(cp, 4) : "\\U" + hex(cp, 8);
        } else {
            append_utf8(out, cp);
        }
    }
    return out + quote;
}

std::string py_repr(const ojson& v) {
    switch (v.type()) {
    case ojson::value_t::null: return "None";
    case ojson::value_t::boolean: return v.get<bool>() ? "True" : "False";
    case ojson::value_t::number_integer: return std::to_string(v.get<int64_t>());
    case ojson::value_t::number_unsigned: return std::to_string(v.get<uint64_t>());
    case ojson::value_t::number_float: return py_float(v.get<double>());
    case ojson::value_t::string: return py_str_repr(v.get<std::string>());
    case ojson::value_t::array: {
        std::string out = "[";
        for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + py_repr(v[i]);
        return out + "]";
    }
    case ojson::value_t::object: {
        std::string out = "{";
        bool first = true;
        for (auto& [key, item] : v.items()) {
            out += (first ? "" : ", ") + py_str_repr(key) + ": " + py_repr(item);
            first = false;
        }
        return out + "}";
    }
    default: return "None";
    }
}

namespace {
std::string json_string(const std::string& s) {
    std::string out = "\"";
    for (size_t i = 0; i < s.size();) {
        char32_t cp = next_code_point(s, i);
        switch (cp) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
            if (cp >= 0x20 && cp < 0x7F) {
                out += static_cast<char>(cp);
            } else if (cp < 0x10000) {
                out += "\\u" + hex(cp, 4);
            } else {  // ensure_ascii: a surrogate pair
                char32_t u = cp - 0x10000;
                out += "\\u" + hex(0xD800 + (u >> 10), 4) + "\\u" + hex(0xDC00 + (u & 0x3FF), 4);
            }
        }
    }
    return out + "\"";
}
}  // namespace

std::string py_dumps(const ojson& v) {
    switch (v.type()) {
    case ojson::value_t::null: return "null";
    case ojson::value_t::boolean: return v.get<bool>() ? "true" : "false";
    case ojson::value_t::number_float: return format_float(v.get<double>(), true);
    case ojson::value_t::string: return json_string(v.get<std::string>());
    case ojson::value_t::array: {
        std::string out = "[";
        for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + py_dumps(v[i]);
        return out + "]";
    }
    case ojson::value_t::object: {
        std::string out = "{";
        bool first = true;
        for (auto& [key, item] : v.items()) {
            out += (first ? "" : ", ") + json_string(key) + ": " + py_dumps(item);
            first = false;
        }
        return out + "}";
    }
    default: return py_repr(v);  // integers
    }
}

std::string py_list(const std::vector<std::string>& items) {
    std::string out = "[";
    for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + py_str_repr(items[i]);
    return out + "]";
}

std::string head(const std::string& s, size_t chars) {
    size_t i = 0;
    for (size_t n = 0; n < chars && i < s.size(); ++n) next_code_point(s, i);
    return s.substr(0, i);
}

std::string py_path(const std::string& path) {
    if (path.empty()) return ".";
    std::string root = path.rfind("//", 0) == 0 && path.rfind("///", 0) != 0 ? "//" : path[0] == '/' ? "/" : "";
    std::vector<std::string> parts;
    size_t start = 0;
    while (start <= path.size()) {
        size_t end = path.find('/', start);
        if (end == std::string::npos) end = path.size();
        std::string part = path.substr(start, end - start);
        if (!part.empty() && part != ".") parts.push_back(part);
        start = end + 1;
    }
    std::string out = root;
    for (size_t i = 0; i < parts.size(); ++i) out += (i ? "/" : "") + parts[i];
    return out.empty() ? "." : out;
}

}  // namespace creps::detail
