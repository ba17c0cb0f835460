#include "png_stream.hpp"

#include <cerrno>
#include <csetjmp>
#include <vector>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <unistd.h>
#include <sys/stat.h>

#include <png.h>

#include "creps/runtime.hpp"
#include "pyformat.hpp"

namespace creps::detail {
namespace {

constexpr int COMPRESS_LEVEL = 6;  // zlib's default, as the Python writer

// libpng reports errors by a callback that must not return: keep the text and jump back to guarded().
[[noreturn]] void png_failed(png_structp png, png_const_charp message) {
    *static_cast<std::string*>(png_get_error_ptr(png)) = message;
    png_longjmp(png, 1);
}

// Runs libpng calls (no C++ objects with destructors live across the jump); false if libpng failed.
template <class Calls>
bool guarded(png_structp png, Calls&& calls) {
    if (setjmp(png_jmpbuf(png))) return false;
    calls();
    return true;
}

std::string os_error(int error, const std::string& path) {
    return "[Errno " + std::to_string(error) + "] " + std::strerror(error) + ": " + py_str_repr(path);
}

}  // namespace

PngStream::PngStream(const std::string& path, int width, int height) : path_(path), width_(width), height_(height) {
    std::filesystem::path target(path);
    std::filesystem::path folder = target.parent_path().empty() ? "." : target.parent_path();
    std::string pattern = (folder / ("." + target.filename().string() + ".XXXXXX.partial")).string();
    std::vector<char> name(pattern.begin(), pattern.end());
    name.push_back('\0');
    int fd = mkstemps(name.data(), static_cast<int>(std::strlen(".partial")));
    if (fd < 0) throw Error(os_error(errno, path));  // about the path the user gave, never our temporary
    tmp_ = name.data();
    file_ = fdopen(fd, "wb");
    if (!file_) {
        int error = errno;
        ::close(fd);
        discard();
        throw Error(os_error(error, path));
    }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &error_, png_failed, nullptr);
    png_infop info = png ? png_create_info_struct(png) : nullptr;
    png_ = png;
    info_ = info;
    if (!png || !info) {
        discard();
        throw Error("cannot write the PNG: out of memory");
    }
    std::FILE* file = file_;
    bool ok = guarded(png, [png, info, file, width, height] {
        png_init_io(png, file);
        png_set_compression_level(png, COMPRESS_LEVEL);
        png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_UP);  // smooth generated images: "Up", as Python's
        png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8,
                     PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_BASE, PNG_FILTER_TYPE_BASE);
        png_write_info(png, info);
    });
    if (!ok) failed();
}

void PngStream::failed() {
    std::string message = "cannot write the PNG " + path_ + ": " + error_;
    discard();
    throw Error(message);
}

PngStream::~PngStream() { discard(); }

void PngStream::write(const std::uint8_t* rows, int count) {
    if (written_ + count > height_) throw Error("more than " + std::to_string(height_) + " rows written");
    auto png = static_cast<png_structp>(png_);
    size_t stride = static_cast<size_t>(width_) * 3;
    bool ok = guarded(png, [png, rows, count, stride] {
        for (int r = 0; r < count; ++r) png_write_row(png, const_cast<png_bytep>(rows + r * stride));
    });
    if (!ok) failed();
    written_ += count;
}

void PngStream::commit() {
    if (written_ != height_)
        throw Error(std::to_string(written_) + " of " + std::to_string(height_) + " rows written");
    png_structp png = static_cast<png_structp>(png_);
    png_infop info = static_cast<png_infop>(info_);
    if (!guarded(png, [png, info] { png_write_end(png, info); })) failed();
    png_destroy_write_struct(&png, &info);
    png_ = info_ = nullptr;
    bool flushed = std::fflush(file_) == 0;
    int error = errno;
    bool closed = std::fclose(file_) == 0;
    file_ = nullptr;
    if (!flushed || !closed) {
        discard();
        throw Error(os_error(flushed ? errno : error, path_));
    }
    ::chmod(tmp_.c_str(), 0644);  // mkstemp's 0600, as atomic_path does
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
        int failure = errno;
        discard();
        throw Error(os_error(failure, path_));
    }
    tmp_.clear();
}

void PngStream::discard() noexcept {
    if (png_) {
        png_structp png = static_cast<png_structp>(png_);
        png_infop info = static_cast<png_infop>(info_);
        png_destroy_write_struct(&png, info ? &info : nullptr);
        png_ = info_ = nullptr;
    }
    if (file_) {
        std::fclose(file_);
        file_ = nullptr;
    }
    if (!tmp_.empty()) {
        std::remove(tmp_.c_str());
        tmp_.clear();
    }
}

}  // namespace creps::detail
