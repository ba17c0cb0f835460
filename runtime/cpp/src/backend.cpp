#include "backend.hpp"

namespace creps::detail {

void Backend::run_stream(const std::string& stage, const std::function<std::optional<Call>()>& produce,
                         const std::function<void(const Call&)>& consume) {
    while (std::optional<Call> call = produce()) {
        run(stage, *call);
        consume(*call);
    }
}

}  // namespace creps::detail
