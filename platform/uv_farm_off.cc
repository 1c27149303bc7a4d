// Farm mode left out of this build (cmake -DBITSD_FARM=OFF, or BITSD_LINK=full: Debian's cJSON is a
// shared library only): UvFarm::create fails with a line saying so (platform/uv_farm.h).
#include "platform/uv_farm.h"

namespace bitsd::platform {

extern const bool kFarmBuilt = false;

EtcdClient::~EtcdClient() = default;

std::unique_ptr<UvFarm> UvFarm::create(uv_loop_t*, const UvFarmConfig&, std::string* error) {
  *error = "farm-etcd: this bitsd was built without farm mode (cmake -DBITSD_FARM=OFF, or BITSD_LINK=full, for which "
           "Debian has no static cJSON)";
  return nullptr;
}

UvFarm::~UvFarm() = default;
void UvFarm::start() {}
void UvFarm::stop(void (*done)(void*), void* arg, bool) {
  if (done != nullptr) done(arg);
}
bool UvFarm::live() const { return false; }
void UvFarm::recordSession(FarmOp&, const SessionId&) {}
void UvFarm::claim(FarmOp&, std::string_view, std::string_view, const SessionId&) {}
void UvFarm::takeOver(FarmOp&, std::string_view, std::string_view, const SessionId&, int64_t) {}
void UvFarm::end(FarmOp&, std::string_view, int64_t, const FarmEnded&) {}
void UvFarm::lookupSession(FarmOp&, const SessionId&) {}

}  // namespace bitsd::platform
