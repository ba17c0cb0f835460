// creps-run-cpp: images of any size from a bundle, tiled, streamed to PNG: the C++ twin of creps-run
// (runtime/cli.py), with its flags, defaults, output rule (creps.images.image_paths), messages and exit
// codes (creps.cli): one line "error: ..." and exit 1 on bad input; on SIGINT/SIGTERM the image being
// written is removed (it only ever exists under a temporary name), "interrupted", exit 128 + the signal.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <cmath>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "bundle.hpp"
#include "creps/runtime.hpp"
#include "grid.hpp"
#include "pyformat.hpp"

namespace fs = std::filesystem;
using creps::detail::py_path;
using creps::detail::py_str_repr;

namespace {

constexpr int EXIT_ERROR = 1;
const char* const OUT_RULE =
    "PATH ending in / or naming an existing folder: a folder (created if missing) of seedNNNN.png, one per seed. "
    "PATH ending in .png: that file, for one seed only. Any other PATH: a folder for several seeds; refused for one.";
const std::vector<std::string> BACKENDS = {"auto", "ort-cpu", "ort-cuda", "tensorrt"};
const std::vector<std::string> FITS = {"extend", "stretch"};
const std::vector<std::string> PRECISIONS = {"fp32", "fp16", "int8", "auto"};

// ---- signals: the first SIGINT/SIGTERM is noted; the run stops at its next progress step -------------------
volatile std::sig_atomic_t received = 0;
struct Interrupted {};

extern "C" void on_signal(int signum) {
    if (!received) received = signum;
}

void interrupts_raise() {
    for (int signum : {SIGINT, SIGTERM}) {
        struct sigaction old {};
        sigaction(signum, nullptr, &old);
        if (old.sa_handler == SIG_IGN) continue;  // a parent left it ignored (a shell's background job)
        struct sigaction act {};
        act.sa_handler = on_signal;
        sigemptyset(&act.sa_mask);
        sigaction(signum, &act, nullptr);
    }
}

void check_interrupt() {
    if (received) throw Interrupted{};
}

// ---- parameters, as creps.cli's click types parse and word them -------------------------------------------
struct BadParameter {
    std::string text;
};

std::string strip(const std::string& s) {
    size_t a = 0, b = s.size();
    while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
    while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
    return s.substr(a, b - a);
}

// A decimal digit string as Python's int() reads it (a number past int64 stays past every limit).
std::int64_t digits(const std::string& s) {
    std::string d = s.substr(std::min(s.find_first_not_of('0'), s.size()));
    return d.size() > 18 ? INT64_MAX : d.empty() ? 0 : std::stoll(d);
}

creps::Size parse_size(const std::string& text) {  // creps.grid.parse_size
    static const std::regex re(R"(\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*)");
    std::smatch m;
    if (!std::regex_match(text, m, re)) throw BadParameter{"size " + py_str_repr(text) + " is not WxH (e.g. 2048x512)"};
    const std::int64_t width = digits(m[1]), height = m[2].matched ? digits(m[2]) : width;
    try {
        creps::detail::check_size(width, height);
    } catch (const creps::Error& e) {
        throw BadParameter{e.what()};
    }
    return {int(width), int(height)};
}

creps::TileSize parse_tile(const std::string& text) {  // --tile: a size
    const creps::Size size = parse_size(text);
    return {size.width, size.height};
}

std::vector<std::int64_t> parse_seeds(const std::string& text) {  // creps.grid.parse_seeds
    static const std::regex re(R"(\s*(\d+)\s*(?:-\s*(\d+)\s*)?)");
    std::vector<std::int64_t> seeds;
    size_t start = 0;
    while (true) {
        size_t end = text.find(',', start);
        const std::string part = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
        std::smatch m;
        if (!std::regex_match(part, m, re))
            throw BadParameter{"seeds " + py_str_repr(text) + ": " + py_str_repr(part) +
                               " is not a number or a range a-b"};
        const std::int64_t lo = digits(m[1]), hi = m[2].matched ? digits(m[2]) : lo;
        if (hi < lo) throw BadParameter{"seeds " + py_str_repr(text) + ": range " + strip(part) + " runs backwards"};
        if (hi >= (std::int64_t{1} << 32))
            throw BadParameter{"seeds " + py_str_repr(text) + ": a seed must be below 2**32"};
        for (std::int64_t s = lo; s <= hi; ++s) seeds.push_back(s);
        if (end == std::string::npos) return seeds;
        start = end + 1;
    }
}

// Python's float(text): surrounding whitespace allowed, the whole rest a number (or inf/nan).
bool py_float(const std::string& text, double& value) {
    const std::string s = strip(text);
    if (s.empty() || s.find_first_of("xX") != std::string::npos) return false;  // no hex floats
    char* end = nullptr;
    value = std::strtod(s.c_str(), &end);
    return end == s.c_str() + s.size();
}

creps::Window parse_window(const std::string& text) {  // creps.grid.parse_window
    std::vector<double> values;
    size_t start = 0;
    bool ok = true;
    while (ok) {
        size_t end = text.find(',', start);
        double v;
        ok = py_float(text.substr(start, end == std::string::npos ? std::string::npos : end - start), v) &&
             std::isfinite(v);
        values.push_back(v);
        if (end == std::string::npos) break;
        start = end + 1;
    }
    if (!ok || values.size() != 4)
        throw BadParameter{"window " + py_str_repr(text) + " is not four numbers x0,y0,x1,y1"};
    return {values[0], values[1], values[2], values[3]};
}

std::int64_t parse_memory(const std::string& text) {  // creps.runtime.tiling.parse_memory
    static const std::regex re(R"(\s*(\d+\.?\d*|\.\d+)\s*([KMGT]?)(I?B)?\s*)");
    std::string upper = text;
    for (auto& c : upper) c = char(std::toupper(static_cast<unsigned char>(c)));
    std::smatch m;
    double value = 0;
    if (std::regex_match(upper, m, re)) {
        const std::string units = " KMGT";
        const size_t power = m[2].length() ? units.find(m[2].str()) : 0;
        value = std::strtod(m[1].str().c_str(), nullptr) * double(std::int64_t{1} << (10 * power));
    }
    if (value < 1) throw BadParameter{"memory " + py_str_repr(text) + " is not a positive size like 512M or 2G"};
    return value >= 9.2e18 ? INT64_MAX : std::int64_t(value);
}

float parse_float(const std::string& text) {  // click.FLOAT
    double v;
    if (!py_float(text, v)) throw BadParameter{py_str_repr(text) + " is not a valid float."};
    return float(v);
}

int parse_count(const std::string& text) {  // click.IntRange(min=1)
    static const std::regex re(R"(\s*[+-]?\d+\s*)");
    if (!std::regex_match(text, re)) throw BadParameter{py_str_repr(text) + " is not a valid integer range."};
    const std::string s = strip(text);
    const bool negative = s[0] == '-';
    const std::int64_t magnitude = digits(s.substr(s[0] == '-' || s[0] == '+' ? 1 : 0));
    if (negative && magnitude) throw BadParameter{"-" + std::to_string(magnitude) + " is not in the range x>=1."};
    if (magnitude < 1) throw BadParameter{"0 is not in the range x>=1."};
    return int(std::min<std::int64_t>(magnitude, INT32_MAX));
}

std::string choice(const std::string& text, const std::vector<std::string>& choices) {  // click.Choice
    if (std::find(choices.begin(), choices.end(), text) != choices.end()) return text;
    std::string listed;
    for (const auto& c : choices) listed += (listed.empty() ? "" : ", ") + py_str_repr(c);
    throw BadParameter{py_str_repr(text) + " is not one of " + listed + "."};
}

// ---- where the images go: creps.images.image_paths on Python's pure paths -----------------------------------
std::string parent(const std::string& p) {  // PurePath.parent of a py_path()-normal path
    const size_t slash = p.rfind('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : p.substr(0, slash);
}

std::string join(const std::string& dir, const std::string& name) {
    return dir == "." ? name : dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::string suffix(const std::string& p) {  // PurePath.suffix
    const std::string name = p.substr(p.rfind('/') == std::string::npos ? 0 : p.rfind('/') + 1);
    const size_t dot = name.rfind('.');
    return dot == std::string::npos || dot == 0 || dot + 1 == name.size() ? "" : name.substr(dot);
}

std::string lower(std::string s) {
    for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

struct Outputs {
    std::string folder;
    std::vector<std::string> paths;
};

Outputs image_paths(const std::string& out, const std::vector<std::int64_t>& seeds) {
    const std::string path = py_path(out);
    const bool many = seeds.size() > 1;
    std::error_code ec;
    bool folder = (!out.empty() && out.back() == '/') || fs::is_directory(path, ec);
    const auto refuse = [&](const std::string& why) { throw creps::Error("--out " + out + ": " + why); };
    if (!folder) {
        const std::string ext = lower(suffix(path));
        if (ext == ".png" && many)
            refuse(std::to_string(seeds.size()) + " seeds make " + std::to_string(seeds.size()) +
                   " images, and a *.png path is one file; give a folder (" +
                   path.substr(0, path.size() - suffix(path).size()) + "/)");
        if (ext != ".png" && !many) refuse("creps writes PNG; name the file *.png, or end a folder with /");
        folder = many;
    }
    if (folder && fs::exists(path, ec) && !fs::is_directory(path, ec))
        refuse("this is a file, and the images need a folder");
    const std::string directory = folder ? path : parent(path);
    std::string existing = directory;
    while (!fs::exists(existing, ec) && parent(existing) != existing) existing = parent(existing);
    if (!fs::is_directory(existing, ec)) refuse(existing + " is a file, not a folder");
    if (access(existing.c_str(), W_OK) != 0) refuse("cannot write into " + existing);
    Outputs outputs{directory, {}};
    char name[32];
    for (std::int64_t seed : seeds) {
        std::snprintf(name, sizeof name, "seed%04lld.png", static_cast<long long>(seed));
        outputs.paths.push_back(folder ? join(directory, name) : path);
    }
    return outputs;
}

// Creates `folder` and its missing parents; on failure, removes again those it made that are still empty.
class CreatingFolder {
public:
    explicit CreatingFolder(const std::string& folder) {
        std::error_code ec;
        for (std::string p = folder; !fs::exists(p, ec); p = parent(p)) created_.push_back(p);  // deepest first
        fs::create_directories(folder);
    }
    ~CreatingFolder() {
        if (done_) return;
        std::error_code ec;
        for (const auto& p : created_) fs::remove(p, ec);  // fs::remove takes only an empty folder
    }
    void done() { done_ = true; }

private:
    std::vector<std::string> created_;
    bool done_ = false;
};

// ---- the default model's bundle: the export creps-run caches (creps.runtime.default) ------------------------
std::string default_bundle() {
    const std::string checkpoint = CREPS_DEFAULT_CHECKPOINT;
    if (!fs::is_regular_file(checkpoint))
        throw creps::Error("no --bundle given and this install has no default model (" + checkpoint +
                           "); pass --bundle DIR");
    const char* xdg = std::getenv("XDG_CACHE_HOME");
    const char* home = std::getenv("HOME");
    const std::string cache = xdg && *xdg ? std::string(xdg) : std::string(home ? home : "") + "/.cache";
    const std::string bundle =
        py_path(cache + "/creps/bundles/default-" + creps::detail::sha256_file(checkpoint).substr(0, 16));
    if (!fs::is_regular_file(bundle + "/manifest.json"))
        throw creps::Error("no --bundle given and the default model is not exported yet (into " + bundle +
                           "): run creps-run once, which exports it, or pass --bundle DIR");
    return bundle;
}

// ---- progress on stderr: one line redrawn, cleared at the end (tqdm's leave=False) ---------------------------
void progress(std::int64_t done, std::int64_t total) {
    check_interrupt();
    if (!isatty(2)) return;
    std::fprintf(stderr, "\rline chunks + tiles: %3d%% %lld/%lld step", int(total ? 100 * done / total : 100),
                 static_cast<long long>(done), static_cast<long long>(total));
    if (done >= total) std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
}

// difflib.SequenceMatcher(None, a, b).ratio(): matching blocks found as it finds them (the longest match,
// the earliest on ties, then both sides of it), for strings too short for its autojunk.
double similarity(const std::string& a, const std::string& b) {
    std::function<size_t(size_t, size_t, size_t, size_t)> matched = [&](size_t alo, size_t ahi, size_t blo,
                                                                         size_t bhi) -> size_t {
        size_t besti = alo, bestj = blo, bestsize = 0;
        std::map<size_t, size_t> j2len;
        for (size_t i = alo; i < ahi; ++i) {
            std::map<size_t, size_t> next;
            for (size_t j = blo; j < bhi; ++j) {
                if (a[i] != b[j]) continue;
                const size_t k = next[j] = (j > 0 && j2len.count(j - 1) ? j2len[j - 1] : 0) + 1;
                if (k > bestsize) besti = i - k + 1, bestj = j - k + 1, bestsize = k;
            }
            j2len = std::move(next);
        }
        if (!bestsize) return 0;
        return bestsize + matched(alo, besti, blo, bestj) + matched(besti + bestsize, ahi, bestj + bestsize, bhi);
    };
    return a.empty() && b.empty() ? 1.0 : 2.0 * double(matched(0, a.size(), 0, b.size())) / double(a.size() + b.size());
}

// click's NoSuchOption for a long option: difflib.get_close_matches(name, options) (3 at most, ratio >= 0.6).
std::string no_such_option(const std::string& name, const std::vector<std::string>& options) {
    std::vector<std::pair<double, std::string>> close;
    for (const auto& option : options)
        if (double r = similarity(option, name); r >= 0.6) close.emplace_back(r, option);
    std::sort(close.rbegin(), close.rend());  // heapq.nlargest: by score, then name
    close.resize(std::min<size_t>(close.size(), 3));
    std::vector<std::string> names;
    for (const auto& c : close) names.push_back(c.second);
    std::sort(names.begin(), names.end());
    std::string listed;
    for (const auto& n : names) listed += (listed.empty() ? "" : ", ") + py_str_repr(n);
    const std::string text = "No such option " + py_str_repr(name) + ".";
    if (names.empty()) return text;
    return text + (names.size() == 1 ? " Did you mean " + listed + "?" : " (Did you mean one of: " + listed + "?)");
}

[[noreturn]] void fail(const std::string& message) {
    std::string line;
    for (std::istringstream words(message); words;) {  // ' '.join(message.split()): one line
        std::string word;
        if (words >> word) line += (line.empty() ? "" : " ") + word;
    }
    std::fprintf(stderr, "error: %s\n", line.c_str());
    std::exit(EXIT_ERROR);
}

struct Request {
    std::string bundle, out;
    std::optional<creps::Size> size;
    std::vector<std::int64_t> seeds{0};
    creps::Options options;
    creps::GenerateOptions generate;
};

int run(const Request& r) {
    const Outputs outputs = image_paths(r.out, r.seeds);  // before looking for the default model
    const std::string bundle = r.bundle.empty() ? default_bundle() : r.bundle;
    check_interrupt();
    creps::Runtime runtime(bundle, r.options);
    check_interrupt();
    CreatingFolder folder(outputs.folder);
    runtime.save(outputs.paths, r.seeds, r.size.value_or(creps::Size{}), r.generate);
    folder.done();
    // A signal from here on comes after the work: ignored, the outputs are complete (creps.cli.run_command).
    std::signal(SIGINT, SIG_IGN);
    std::signal(SIGTERM, SIG_IGN);
    if (outputs.paths.size() == 1)
        std::printf("wrote %s\n", outputs.paths[0].c_str());
    else
        std::printf("wrote %zu images into %s\n", outputs.paths.size(), outputs.folder.c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Generate images of any size from a creps bundle (ONNX Runtime or TensorRT, no PyTorch).\n"
                 "The PNG is streamed band by band, so memory stays flat however large the image.",
                 "creps-run-cpp"};
    app.set_version_flag("--version", std::string("creps-run-cpp ") + CREPS_VERSION);
    struct Declared {
        std::string name, metavar, help;
    };
    const std::vector<Declared> declared = {
        {"--bundle", "PATH",
         "Bundle folder from creps-export (default: the bundled default model, as creps-run exported it into the "
         "user cache)."},
        {"--size", "WxH", "Output WIDTHxHEIGHT (default: the training resolution)."},
        {"--seeds", "SEEDS", "Seeds, e.g. 0,3,5-8.  [default: 0]"},
        {"--trunc", "FLOAT", "Truncation psi.  [default: 1.0]"},
        {"--window", "x0,y0,x1,y1", "The plane's part to show, x0,y0,x1,y1 (zoom/pan)."},
        {"--fit", "[extend|stretch]",
         "Non-square sizes without --window: extend the view or stretch it.  [default: extend]"},
        {"--tile", "WxH", "Pixel tile WxH (default: 128x64 on the CPU, the engine profile's largest on TensorRT)."},
        {"--max-memory", "BYTES", "Budget for line features and activations, e.g. 512M, 2G; shrinks the tiles."},
        {"--backend", "[auto|ort-cpu|ort-cuda|tensorrt]",
         "auto: TensorRT engines if usable, else ONNX Runtime CUDA, else CPU.  [default: auto]"},
        {"--precision", "[fp32|fp16|int8|auto]",
         "fp32: the exact model; int8: TensorRT's fast precision, and ONNX Runtime's integer kernels on the CPU "
         "(faster than fp32 there only for wide models on CPUs with VNNI); fp16: a GPU precision (ONNX Runtime on "
         "x86 has no fp16 kernels); auto: the fastest on the backend whose error recorded by creps-calib meets the "
         "bundle's bar (int8 on the CPU: where creps-calib measured it faster, on a CPU like this one). Default: "
         "fp32 on ONNX Runtime, the engines' own precision on TensorRT."},
        {"--batch", "INTEGER RANGE", "Seeds per run of the graphs.  [default: 1]"},
        {"--threads", "INTEGER RANGE", "CPU threads (default: all cores)."},
        {"--out", "PATH", OUT_RULE},
    };
    std::vector<std::pair<CLI::Option*, std::string>> options;
    for (const auto& [name, metavar, help] : declared) {
        // Taken as text and validated below, as click's types would; the last of repeated ones counts.
        auto* option = app.add_option(name, CLI::callback_t{}, help, false)->take_last()->type_name(metavar);
        options.emplace_back(option, name);
    }
    bool host_code = false;
    app.add_flag("--allow-engine-host-code", host_code,
                 "Run version-compatible TensorRT engines (creps-export --version-compatible): they carry executable "
                 "host code, so pass this only for a bundle you trust.");
    app.footer("Examples:\n"
               "  creps-run-cpp --size 2048x512 --out pano.png                 # the bundled default model\n"
               "  creps-run-cpp --bundle ffhq/ --seeds 0-7 --trunc 0.7 --out faces/\n"
               "  creps-run-cpp --bundle ffhq/ --size 8192x2048 --max-memory 512M --out big.png");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ExtrasError&) {
        const auto extras = app.remaining();
        const std::string first = extras.empty() ? "" : extras[0];
        if (first.rfind('-', 0) != 0) fail("Got unexpected extra argument (" + first + ")");
        std::vector<std::string> long_options = {"--help", "--version", "--allow-engine-host-code"};
        for (const auto& d : declared) long_options.push_back(d.name);
        fail(no_such_option(first.substr(0, first.find('=')), long_options));
    } catch (const CLI::ArgumentMismatch& e) {  // "--size: 1 required WxH missing"
        const std::string what = e.what();
        fail("Option '" + what.substr(0, what.find(':')) + "' requires an argument.");
    } catch (const CLI::ParseError& e) {
        fail(e.what());
    }
    // Values in the order given, then the rest in declaration order, as click processes them.
    std::vector<std::string> order;
    for (const CLI::Option* option : app.parse_order())
        for (const auto& [o, name] : options)
            if (o == option && std::find(order.begin(), order.end(), name) == order.end()) order.push_back(name);
    for (const auto& [o, name] : options)
        if (std::find(order.begin(), order.end(), name) == order.end()) order.push_back(name);
    Request r;
    r.options.allow_engine_host_code = host_code;
    try {
        for (const auto& name : order) {
            auto* o = app.get_option(name);
            if (!o->count()) {
                if (name == "--out") fail("Missing option '--out'.");
                continue;
            }
            const std::string v = o->as<std::string>();
            try {
                if (name == "--bundle") r.bundle = v;
                else if (name == "--size") r.size = parse_size(v);
                else if (name == "--seeds") r.seeds = parse_seeds(v);
                else if (name == "--trunc") r.generate.psi = parse_float(v);
                else if (name == "--window") r.generate.window = parse_window(v);
                else if (name == "--fit") r.generate.fit = choice(v, FITS);
                else if (name == "--tile") r.options.tile = parse_tile(v);
                else if (name == "--max-memory") r.options.max_memory = parse_memory(v);
                else if (name == "--backend") r.options.backend = choice(v, BACKENDS);
                else if (name == "--precision") r.options.precision = choice(v, PRECISIONS);
                else if (name == "--batch") r.generate.batch = parse_count(v);
                else if (name == "--threads") r.options.threads = parse_count(v);
                else if (name == "--out") r.out = v;
            } catch (const BadParameter& bad) {
                fail("Invalid value for '" + name + "': " + bad.text);
            }
        }
        r.generate.progress = progress;
        interrupts_raise();
        return run(r);
    } catch (const Interrupted&) {
    } catch (const creps::Error& e) {
        if (!received) fail(e.what());
    } catch (const fs::filesystem_error& e) {
        if (!received) fail(e.path1().string() + ": " + e.code().message());
    } catch (const std::bad_alloc&) {
        if (!received) fail("out of memory: use a smaller size, --tile or --max-memory");
    }
    if (isatty(2)) std::fprintf(stderr, "\r\033[K");
    std::fprintf(stderr, "interrupted\n");
    return 128 + received;
}
