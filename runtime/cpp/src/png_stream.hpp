// A streaming PNG writer (libpng): 8-bit RGB rows in, band by band, memory flat as the image grows. Writes
// a temporary sibling (".<name>.<random>.partial", as creps.files.atomic_path) renamed onto the path by
// commit(); destroyed uncommitted, it removes the temporary.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>

namespace creps::detail {

class PngStream {
public:
    PngStream(const std::string& path, int width, int height);
    ~PngStream();
    PngStream(const PngStream&) = delete;
    PngStream& operator=(const PngStream&) = delete;

    void write(const std::uint8_t* rows, int count);  // count rows of width*3 bytes
    void commit();                                    // finish the image, rename onto the path
    const std::string& temporary() const { return tmp_; }

private:
    void discard() noexcept;
    [[noreturn]] void failed();  // after a libpng error: discard, then throw its text
    std::string error_;
    std::string path_, tmp_;
    int width_, height_, written_ = 0;
    std::FILE* file_ = nullptr;
    void* png_ = nullptr;   // png_structp
    void* info_ = nullptr;  // png_infop
};

}  // namespace creps::detail
