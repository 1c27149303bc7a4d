// The HTTP client that hands finished uploads to the server application (BITS-UPLOAD.md §5.2, §5.3),
// on the server's libuv loop: name lookup (uv_getaddrinfo), connect, the POST head, the file as the
// body when notifying by value (read in 64 KiB chunks with uv_fs_read and written as they come,
// never the whole file in memory), and the response parsed by core's ResponseParser (the wire layer,
// core/response_parser.h). By value, the response body is the reply: it is written to the reply file
// as it arrives and synced before the POST completes. By reference, the application writes the reply
// file itself; it is synced when the answer comes.
//
// Clients come from a fixed pool (max-notifications). Each POST has one timer for the whole exchange
// (notify-timeout). Nothing here blocks the loop except close(2) of regular files.
#pragma once

#include <uv.h>

#include <cstdint>
#include <vector>

#include "core/notify.h"
#include "core/ports.h"

namespace bitsd::platform {

class UvNotifier final : public Notifier {
 public:
  // The reply files are written (by value) and opened (by reference) through `storage`.
  UvNotifier(uv_loop_t* loop, uint32_t maxClients, Storage& storage);
  ~UvNotifier() override;
  UvNotifier(const UvNotifier&) = delete;
  UvNotifier& operator=(const UvNotifier&) = delete;

  void post(NotifyOp& op, const NotifyRequest& req) override;

  // Ends every POST in flight as Unreachable (shutdown). Their callbacks run once their handles
  // and file operations have wound down.
  void abortAll();
  // Closes the notifier's own handle; call when the loop is winding down and no POST is in flight.
  void close();
  uint32_t active() const { return active_; }
  void clientReleased() { --active_; }  // internal: a client finished its POST
  Storage& storage() { return storage_; }  // internal: the clients' reply files

  struct Client;

 private:
  static void onDeferThunk(uv_timer_t* t);

  uv_loop_t* loop_;
  Storage& storage_;
  Client* clients_ = nullptr;
  uint32_t capacity_ = 0;
  uint32_t active_ = 0;
  // POSTs refused because every client is busy complete from this timer, never inside post().
  uv_timer_t defer_;
  std::vector<NotifyOp*> deferred_;
  bool closed_ = false;
};

}  // namespace bitsd::platform
