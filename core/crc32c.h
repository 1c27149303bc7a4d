// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of journal records. Neither
// mbedTLS nor the C++ library provides it; this is the standard 256-entry table version.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bitsd {

// Continues a CRC: pass 0 to start. crc32c("123456789") == 0xE3069283.
uint32_t crc32c(uint32_t crc, const void* data, size_t len);

}  // namespace bitsd
